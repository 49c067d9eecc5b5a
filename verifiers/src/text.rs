//! Text measures with Python's semantics where the reference verifiers were Python: line
//! splitting, words and whitespace-separated words, case tests, case-insensitive search,
//! banker's rounding, and sentence counting (the release's and a correct one). ASCII text —
//! nearly every answer — is scanned as bytes, with vectorised searches (`memchr`) where a
//! measure only needs a few positions; other text is read character by character. Property
//! tests hold each byte path equal to its character definition.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `\w` over ASCII bytes: letters, digits and `_`.
static ASCII_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

/// The matches of the regex `\b\w+\b`: maximal runs of word characters. ASCII text is
/// scanned byte by byte.
pub(crate) fn words(text: &str) -> Words<'_> {
    Words {
        text,
        at: 0,
        ascii: text.is_ascii(),
    }
}

/// The iterator of [`words`].
pub(crate) struct Words<'a> {
    text: &'a str,
    at: usize,
    ascii: bool,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.ascii {
            let b = self.text.as_bytes();
            let mut i = self.at;
            while i < b.len() && !ASCII_WORD[usize::from(b[i])] {
                i += 1;
            }
            let start = i;
            while i < b.len() && ASCII_WORD[usize::from(b[i])] {
                i += 1;
            }
            self.at = i;
            return (i > start).then(|| &self.text[start..i]);
        }
        let rest = &self.text[self.at..];
        let (start, _) = rest.char_indices().find(|&(_, c)| is_word(c))?;
        let end = rest[start..]
            .char_indices()
            .find(|&(_, c)| !is_word(c))
            .map_or(rest.len(), |(i, _)| start + i);
        self.at += end;
        Some(&rest[start..end])
    }
}

/// Whether `text` holds a whitespace character outside ASCII (all of them start with one of
/// the bytes C2, E1, E2, E3 in UTF-8).
fn has_non_ascii_space(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr3_iter(0xc2, 0xe1, 0xe2, b)
        .chain(memchr::memchr_iter(0xe3, b))
        .any(|i| text[i..].chars().next().is_some_and(char::is_whitespace))
}

/// Words of `\b[A-Z]+\b` in ASCII text: maximal runs of word bytes that are all capitals,
/// counted with a three-state machine (outside a word, in an all-capitals word, in another).
pub(crate) fn ascii_capital_words(text: &[u8]) -> usize {
    let mut count = 0;
    let mut state = 0u8;
    for &b in text {
        let class = if b.is_ascii_uppercase() {
            1
        } else {
            2 * u8::from(ASCII_WORD[usize::from(b)])
        };
        count += usize::from(state == 1 && class == 0);
        state = match (state, class) {
            (_, 0) => 0,
            (0 | 1, 1) => 1,
            _ => 2,
        };
    }
    count + usize::from(state == 1)
}

/// How often `word` (lower-case ASCII word bytes) occurs as a whole word of `\b\w+\b` in
/// ASCII `text`, ignoring case: a vectorised search of the lower-cased text, each hit checked
/// for word boundaries.
pub(crate) fn ascii_word_count(text: &str, word: &str) -> usize {
    let b = text.as_bytes();
    let boundary = |i: Option<usize>| {
        i.and_then(|i| b.get(i))
            .is_none_or(|&x| !ASCII_WORD[usize::from(x)])
    };
    let (mut count, mut from) = (0, 0);
    while let Some(at) = find_ascii_ignoring_case(b, word.as_bytes(), from) {
        if boundary(at.checked_sub(1)) && boundary(Some(at + word.len())) {
            count += 1;
            from = at + word.len();
        } else {
            from = at + 1;
        }
    }
    count
}

/// The first occurrence at or after `from` of `needle` (lower-case ASCII) in `hay`, ignoring
/// ASCII case: candidates found by a vectorised search for the needle's first byte in either
/// case. No lower-cased copy of the text is made.
pub(crate) fn find_ascii_ignoring_case(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    if from > last_start {
        return None;
    }
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), &hay[from..=last_start])
        .map(|i| from + i)
        .find(|&at| hay[at + 1..at + needle.len()].eq_ignore_ascii_case(rest))
}

/// Whether `word` is non-empty and made only of ASCII word bytes.
pub(crate) fn is_ascii_word(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| ASCII_WORD[usize::from(b)])
}

/// Python's `len(text.split())` (whitespace as Rust's `char::is_whitespace`); ASCII text is
/// counted byte by byte.
pub(crate) fn whitespace_words(text: &str) -> i64 {
    if has_non_ascii_space(text) {
        return text.split_whitespace().count() as i64;
    }
    // A word starts at a non-space byte that is first or follows a space: counted without
    // branches, so the loop vectorises.
    // Space, or one of `\t \n \x0b \x0c \r` (9..=13), as arithmetic rather than a match.
    let space = |b: u8| (b == b' ') | (b.wrapping_sub(9) < 5);
    let b = text.as_bytes();
    let first = b.first().is_some_and(|&x| !space(x));
    let starts: usize = b
        .iter()
        .zip(&b[1.min(b.len())..])
        .filter(|&(&x, &y)| space(x) & !space(y))
        .count();
    (starts + usize::from(first)) as i64
}

/// Sentences as the release counted them: its split regex
/// `(?<![\w.][\w.])(?<![A-Z][a-z]\.)(?<=\.|\?)\s` breaks at one whitespace character after `.`
/// or `?` — but not when the two characters before it are word characters or dots, which is
/// nearly every sentence ending in a period ("late. The" does not split). Written as a scan:
/// the lookbehinds made the regex quadratic on megabyte inputs.
pub(crate) fn tulu3_sentences(text: &str) -> i64 {
    // ASCII text: only the bytes after a `.` or `?` can split; find those.
    if text.is_ascii() {
        let b = text.as_bytes();
        let at = |i: usize| char::from(b[i]);
        let splits = memchr::memchr2_iter(b'.', b'?', b)
            .filter(|&q| q + 1 < b.len() && tulu3_splits_at(q + 1, at))
            .count();
        splits as i64 + 1
    } else {
        let c: Vec<char> = text.chars().collect();
        tulu3_sentence_count(c.len(), |i| c[i])
    }
}

/// [`tulu3_sentences`] over `len` characters read through `c`.
fn tulu3_sentence_count(len: usize, c: impl Fn(usize) -> char) -> i64 {
    let splits = (1..len).filter(|&p| tulu3_splits_at(p, &c)).count();
    splits as i64 + 1
}

/// Whether the release's sentence regex, `(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s`, splits at
/// position `p` (`p ≥ 1`): whitespace after `.` or `?`, except after a word character, a dot
/// and a word character (`p.m.`, `e.g.`, `3.5.`) or a capital and a small letter (`Dr.`,
/// `Mr.`). `Jan.` and `etc.` split.
fn tulu3_splits_at(p: usize, c: impl Fn(usize) -> char) -> bool {
    let before = |k: usize| p.checked_sub(k).map(&c);
    c(p).is_whitespace()
        && matches!(before(1), Some('.' | '?'))
        && !(before(4).is_some_and(is_word) && before(3) == Some('.') && before(2).is_some_and(is_word))
        && !(before(3).is_some_and(|x| x.is_ascii_uppercase())
            && before(2).is_some_and(|x| x.is_ascii_lowercase())
            && before(1) == Some('.'))
}

/// Sentences, correctly: a break is whitespace after `.`, `?` or `!`, except after a title like
/// "Mr." or an initial like "J."; empty pieces do not count.
pub(crate) fn sentences(text: &str) -> i64 {
    // ASCII text: a boundary is whitespace right after `.`, `?` or `!`, and the piece before
    // it always holds that mark, so each boundary ends one sentence; the tail counts when it
    // has text.
    if text.is_ascii() {
        let b = text.as_bytes();
        let at = |i: usize| char::from(b[i]);
        let boundaries = memchr::memchr3_iter(b'.', b'?', b'!', b)
            .filter(|&q| q + 1 < b.len() && sentence_boundary_at(q + 1, at))
            .collect::<Vec<_>>();
        let tail = boundaries.last().map_or(0, |&q| q + 2);
        let tail_text = b[tail.min(b.len())..]
            .iter()
            .any(|x| !x.is_ascii_whitespace() && *x != b'\x0b');
        boundaries.len() as i64 + i64::from(tail_text)
    } else {
        let c: Vec<char> = text.chars().collect();
        sentence_count(c.len(), |i| c[i])
    }
}

/// [`sentences`] over `len` characters read through `c`.
fn sentence_count(len: usize, c: impl Fn(usize) -> char) -> i64 {
    let mut count = 0;
    let mut has_text = false;
    for p in 0..len {
        if sentence_boundary_at(p, &c) {
            count += i64::from(has_text);
            has_text = false;
        } else if !c(p).is_whitespace() {
            has_text = true;
        }
    }
    count + i64::from(has_text)
}

/// Whether whitespace at `p` ends a sentence: it follows `.`, `?` or `!`, and not a title like
/// "Mr." or an initial like "J.".
fn sentence_boundary_at(p: usize, c: impl Fn(usize) -> char) -> bool {
    let before = |k: usize| p.checked_sub(k).map(&c);
    c(p).is_whitespace()
        && matches!(before(1), Some('.' | '?' | '!'))
        && !(before(1) == Some('.')
            && before(2).is_some_and(|x| x.is_ascii_uppercase())
            && !before(3).is_some_and(is_word))
        && !(before(1) == Some('.')
            && before(2).is_some_and(|x| x.is_ascii_lowercase())
            && before(3).is_some_and(|x| x.is_ascii_uppercase()))
}

/// Python's `text.lower()`; ASCII text is lowered byte by byte, and borrowed when it has no
/// capitals.
pub(crate) fn lowercase(text: &str) -> Cow<'_, str> {
    if !text.is_ascii() {
        Cow::Owned(text.to_lowercase())
    } else if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Python's `text == text.upper()`, without building the upper-cased copy for ASCII text.
pub(crate) fn is_uppercase(text: &str) -> bool {
    if text.is_ascii() {
        !text.bytes().any(|b| b.is_ascii_lowercase())
    } else {
        text == text.to_uppercase()
    }
}

/// Python's `text == text.lower()`, without building the lower-cased copy for ASCII text.
pub(crate) fn is_lowercase(text: &str) -> bool {
    if text.is_ascii() {
        !text.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        text == text.to_lowercase()
    }
}

/// The paragraph separator of `verify_paragraph_count`, searched with one prepared finder.
static RULE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("* * *"));

/// The paragraph break of `validate_paragraphs`.
static PARAGRAPH_BREAK: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("\n\n"));

/// The pieces of `text.split("\n\n")`, found with one prepared finder.
pub(crate) fn paragraphs(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for at in PARAGRAPH_BREAK.find_iter(text.as_bytes()) {
        pieces.push(&text[start..at]);
        start = at + 2;
    }
    pieces.push(&text[start..]);
    pieces
}

/// The release's paragraph count: lines stripped and re-joined, the whole stripped, split at
/// `* * *`; returns the pieces and whether any is blank. Counted line by line without building
/// the joined text (the separator cannot span lines).
pub(crate) fn paragraph_count(text: &str) -> (i64, bool) {
    if RULE.find(text.as_bytes()).is_none() {
        // One piece: blank unless a character is neither whitespace nor a line boundary (the
        // boundaries other than U+001C..U+001E are whitespace).
        let blank = text
            .chars()
            .all(|c| c.is_whitespace() || matches!(c, '\x1c'..='\x1e'));
        return (1, blank);
    }
    let (mut count, mut blank, mut has_text) = (1, false, false);
    for line in python_lines(text) {
        let mut rest = line.trim();
        while let Some(at) = RULE.find(rest.as_bytes()) {
            has_text |= !rest[..at].trim().is_empty();
            blank |= !has_text;
            count += 1;
            has_text = false;
            rest = &rest[at + "* * *".len()..];
        }
        has_text |= !rest.trim().is_empty();
    }
    (count, blank || !has_text)
}

/// Python's `str.splitlines()` line boundaries.
pub(crate) fn python_lines(text: &str) -> Vec<&str> {
    // A byte scan: UTF-8 is self-synchronising, so the multi-byte boundaries (U+0085 C2 85,
    // U+2028 E2 80 A8, U+2029 E2 80 A9) can only match at character starts.
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let len = match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => 2,
            b'\n' | b'\r' | 0x0b | 0x0c | 0x1c | 0x1d | 0x1e => 1,
            0xc2 if b.get(i + 1) == Some(&0x85) => 2,
            0xe2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)) => 3,
            _ => 0,
        };
        if len > 0 {
            out.push(&text[start..i]);
            start = i + len;
            i += len;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Python's `round` (half to even) for non-negative values.
pub(crate) fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc() - 0.5).abs() < 1e-12 && r as i64 % 2 != 0 {
        r as i64 - 1
    } else {
        r as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release's paragraph count, as written there: join, strip, split.
    fn joined_paragraph_count(text: &str) -> (i64, bool) {
        let cleaned = python_lines(text)
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n");
        let pieces: Vec<&str> = cleaned.trim().split("* * *").collect();
        (pieces.len() as i64, pieces.iter().any(|p| p.trim().is_empty()))
    }

    proptest::proptest! {
        #[test]
        fn paragraph_count_equals_the_joined_split(text in "[* a\n\t\x1c\x1f\u{85}\u{a0}]{0,40}") {
            proptest::prop_assert_eq!(paragraph_count(&text), joined_paragraph_count(&text));
        }

        #[test]
        fn paragraphs_are_the_split_at_blank_lines(text in "[a\n ]{0,40}") {
            proptest::prop_assert_eq!(paragraphs(&text), text.split("\n\n").collect::<Vec<_>>());
        }

        #[test]
        fn lines_and_spaces_agree_with_the_char_definitions(text in "[a\n\r\x0b\x1c\u{85}\u{2028}\u{2029}\u{a0}\u{3000}’ –]{0,30}") {
            proptest::prop_assert_eq!(whitespace_words(&text), text.split_whitespace().count() as i64);
            let mut by_chars = Vec::new();
            let mut start = 0;
            let mut chars = text.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if matches!(c, '\n' | '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}') {
                    by_chars.push(&text[start..i]);
                    let mut end = i + c.len_utf8();
                    if c == '\r' && chars.peek().map(|p| p.1) == Some('\n') {
                        chars.next();
                        end += 1;
                    }
                    start = end;
                }
            }
            if start < text.len() {
                by_chars.push(&text[start..]);
            }
            proptest::prop_assert_eq!(python_lines(&text), by_chars);
        }

        #[test]
        fn word_scans_agree_with_the_char_definitions(text in "[a-zA-Z_0-9 ,.\t\n\x0b\x0c\r-]{0,40}") {
            let by_chars: Vec<&str> = text.split(|c: char| !is_word(c)).filter(|w| !w.is_empty()).collect();
            proptest::prop_assert_eq!(words(&text).collect::<Vec<_>>(), by_chars);
            proptest::prop_assert_eq!(whitespace_words(&text), text.split_whitespace().count() as i64);
            let capitals = words(&text).filter(|w| w.bytes().all(|b| b.is_ascii_uppercase())).count();
            proptest::prop_assert_eq!(ascii_capital_words(text.as_bytes()), capitals);
            for needle in ["a", "ab", "a b", "zz"] {
                let want = text.to_ascii_lowercase().find(needle);
                proptest::prop_assert_eq!(find_ascii_ignoring_case(text.as_bytes(), needle.as_bytes(), 0), want);
            }
            for word in ["a", "ab", "a_1"] {
                let lower = text.to_ascii_lowercase();
                let want = words(&lower).filter(|w| *w == word).count();
                proptest::prop_assert_eq!(ascii_word_count(&text, word), want);
            }
            let wide = format!("{text}é");
            let by_chars: Vec<&str> = wide.split(|c: char| !is_word(c)).filter(|w| !w.is_empty()).collect();
            proptest::prop_assert_eq!(words(&wide).collect::<Vec<_>>(), by_chars);
        }

        #[test]
        fn sentence_counts_agree_on_bytes_and_chars(text in "[a-zA-Z. ?!\n]{0,30}") {
            // ASCII text is read as bytes; the decoded path must count the same.
            let chars: Vec<char> = text.chars().collect();
            let decoded = |i: usize| chars[i];
            proptest::prop_assert_eq!(sentences(&text), sentence_count(chars.len(), decoded));
            proptest::prop_assert_eq!(tulu3_sentences(&text), tulu3_sentence_count(chars.len(), decoded));
        }
    }

    #[test]
    fn python_semantics() {
        // The release's regex: split after `.`/`?`, not after `w.w.` nor `Xy.`.
        assert_eq!(tulu3_sentences("One. Two? Three."), 3);
        assert_eq!(tulu3_sentences("I went home. It was late. The end."), 3);
        assert_eq!(tulu3_sentences("At 3 p.m. Dr. Lee left in Jan. Then rain."), 2);
        assert_eq!(tulu3_sentences("It cost 3.5. Fine"), 1, "`3.5.` is `w.w.`");
        assert_eq!(sentences("I went home. It was late. The end."), 3);
        assert_eq!(sentences("Mr. Smith met J. Doe. Fine!  "), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(python_lines("a\r\nb\rc\u{2028}d"), vec!["a", "b", "c", "d"]);
        assert_eq!(lowercase("AbC"), "abc");
        assert_eq!(lowercase("ÀB"), "àb");
        assert!(matches!(lowercase("abc"), Cow::Borrowed(_)));
        assert!(is_uppercase("AB 1") && !is_uppercase("Ab") && is_uppercase("ÀB") && !is_uppercase("àB"));
        assert!(is_lowercase("ab 1") && !is_lowercase("aB") && is_lowercase("àb") && !is_lowercase("Àb"));
        assert_eq!(
            words("it's a_b, (x)y1 ").collect::<Vec<_>>(),
            ["it", "s", "a_b", "x", "y1"]
        );
    }
}
