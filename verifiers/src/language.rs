//! Which language a response is written in, for IFEval's `language:response_language` and its
//! English-only case checks. The reference used Python's `langdetect`; we use `whatlang` (pure
//! Rust, trigram profiles), so the two can disagree on short or mixed-language text.

use std::sync::LazyLock;

use whatlang::{Detector, Lang, Script};

/// The ISO 639-1 codes IFEval asks for, with the detector's language for each; `None` where the
/// detector has no profile (Swahili): such a language is judged by what the text is not.
const CODES: [(&str, Option<Lang>); 30] = [
    ("en", Some(Lang::Eng)),
    ("es", Some(Lang::Spa)),
    ("pt", Some(Lang::Por)),
    ("ar", Some(Lang::Ara)),
    ("hi", Some(Lang::Hin)),
    ("fr", Some(Lang::Fra)),
    ("ru", Some(Lang::Rus)),
    ("de", Some(Lang::Deu)),
    ("ja", Some(Lang::Jpn)),
    ("it", Some(Lang::Ita)),
    ("bn", Some(Lang::Ben)),
    ("uk", Some(Lang::Ukr)),
    ("th", Some(Lang::Tha)),
    ("ur", Some(Lang::Urd)),
    ("ta", Some(Lang::Tam)),
    ("te", Some(Lang::Tel)),
    ("bg", Some(Lang::Bul)),
    ("ko", Some(Lang::Kor)),
    ("pl", Some(Lang::Pol)),
    ("he", Some(Lang::Heb)),
    ("fa", Some(Lang::Pes)),
    ("vi", Some(Lang::Vie)),
    ("ne", Some(Lang::Nep)),
    ("sw", None),
    ("kn", Some(Lang::Kan)),
    ("mr", Some(Lang::Mar)),
    ("gu", Some(Lang::Guj)),
    ("pa", Some(Lang::Pan)),
    ("ml", Some(Lang::Mal)),
    ("fi", Some(Lang::Fin)),
];

/// The codes `langdetect` (the Tülu 3 release's detector) gives whatlang's languages; the ones
/// `langdetect` has no profile for keep their ISO 639-3 code (no label names them).
const LANGDETECT: [(Lang, &str); 51] = [
    (Lang::Eng, "en"),
    (Lang::Rus, "ru"),
    (Lang::Cmn, "zh-cn"),
    (Lang::Spa, "es"),
    (Lang::Por, "pt"),
    (Lang::Ita, "it"),
    (Lang::Ben, "bn"),
    (Lang::Fra, "fr"),
    (Lang::Deu, "de"),
    (Lang::Ukr, "uk"),
    (Lang::Ara, "ar"),
    (Lang::Hin, "hi"),
    (Lang::Jpn, "ja"),
    (Lang::Heb, "he"),
    (Lang::Pol, "pl"),
    (Lang::Kor, "ko"),
    (Lang::Nob, "no"),
    (Lang::Dan, "da"),
    (Lang::Swe, "sv"),
    (Lang::Fin, "fi"),
    (Lang::Tur, "tr"),
    (Lang::Nld, "nl"),
    (Lang::Hun, "hu"),
    (Lang::Ces, "cs"),
    (Lang::Ell, "el"),
    (Lang::Bul, "bg"),
    (Lang::Mar, "mr"),
    (Lang::Kan, "kn"),
    (Lang::Ron, "ro"),
    (Lang::Slv, "sl"),
    (Lang::Hrv, "hr"),
    (Lang::Mkd, "mk"),
    (Lang::Lit, "lt"),
    (Lang::Lav, "lv"),
    (Lang::Est, "et"),
    (Lang::Tam, "ta"),
    (Lang::Vie, "vi"),
    (Lang::Urd, "ur"),
    (Lang::Tha, "th"),
    (Lang::Guj, "gu"),
    (Lang::Pan, "pa"),
    (Lang::Ind, "id"),
    (Lang::Tel, "te"),
    (Lang::Pes, "fa"),
    (Lang::Mal, "ml"),
    (Lang::Nep, "ne"),
    (Lang::Afr, "af"),
    (Lang::Slk, "sk"),
    (Lang::Cat, "ca"),
    (Lang::Tgl, "tl"),
    (Lang::Cym, "cy"),
];

/// The language of `text` as `langdetect` codes it (`en`, `zh-cn`, ...), by whatlang over all
/// its languages; `None` when the text gives it nothing to go on (where `langdetect` raises).
pub(crate) fn detect_code(text: &str) -> Option<&'static str> {
    let lang = whatlang::detect(text)?.lang();
    Some(
        LANGDETECT
            .iter()
            .find(|(l, _)| *l == lang)
            .map_or(lang.code(), |(_, code)| code),
    )
}

/// The detector, choosing among the languages IFEval asks for.
static DETECTOR: LazyLock<Detector> =
    LazyLock::new(|| Detector::with_allowlist(CODES.iter().filter_map(|c| c.1).collect()));

/// A language IFEval can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Language {
    code: &'static str,
    lang: Option<Lang>,
}

/// What the detector says about a text.
pub(crate) enum Detected {
    /// Written in the language asked for.
    Yes,
    /// Written in another language or script (named).
    No(String),
    /// No answer: nothing to detect from, or no profile for the language asked for. The
    /// reference counts an undetectable text as following the instruction; so do we.
    Unknown,
}

impl Language {
    /// English, for the case checks.
    pub(crate) const ENGLISH: Language = Language {
        code: "en",
        lang: Some(Lang::Eng),
    };

    /// The language of an ISO 639-1 code, or the list of known codes.
    pub(crate) fn from_code(code: &str) -> Result<Self, String> {
        CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, lang)| Language { code, lang })
            .ok_or_else(|| {
                let known: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
                format!("unknown language `{code}`; known: {}", known.join(", "))
            })
    }

    /// The ISO 639-1 code.
    pub(crate) fn code(self) -> &'static str {
        self.code
    }

    /// Whether `text` is written in this language.
    pub(crate) fn detect(self, text: &str) -> Detected {
        let Some(want) = self.lang else {
            // No profile: text reliably placed in another IFEval language is not this one.
            return match whatlang::detect(text) {
                Some(info) if info.is_reliable() && CODES.iter().any(|c| c.1 == Some(info.lang())) => {
                    Detected::No(info.lang().eng_name().to_string())
                }
                _ => Detected::Unknown,
            };
        };
        // The detector settles the script first and the language within it, so text in a
        // script the language is not written in needs no trigram scoring (the costly part).
        if let Some(script) = whatlang::detect_script(text) {
            if !(script.langs().contains(&want) || script == Script::Mandarin && want == Lang::Jpn) {
                return Detected::No(format!("{} script", script.name()));
            }
        }
        match DETECTOR.detect_lang(text) {
            Some(got) if got == want => Detected::Yes,
            Some(got) => Detected::No(got.eng_name().to_string()),
            None => Detected::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_scripts_and_latin_languages() {
        let de = Language::from_code("de").unwrap();
        assert!(matches!(
            de.detect("Ich habe heute keine Zeit, weil ich arbeiten muss und müde bin."),
            Detected::Yes
        ));
        assert!(matches!(
            de.detect("I have no time today because I must work and I am tired."),
            Detected::No(l) if l == "English"
        ));
        assert!(matches!(
            Language::from_code("ko").unwrap().detect("I have no time today because I must work."),
            Detected::No(s) if s == "Latin script"
        ));
        let ja = Language::from_code("ja").unwrap();
        assert!(matches!(ja.detect("私は今日とても忙しいです。"), Detected::Yes));
        let hi = Language::from_code("hi").unwrap();
        assert!(matches!(
            hi.detect("मुझे आज बाजार जाना है और कुछ सब्जियां खरीदनी हैं।"),
            Detected::Yes
        ));
        let sw = Language::from_code("sw").unwrap();
        assert!(matches!(
            sw.detect("Habari za asubuhi, rafiki yangu"),
            Detected::Unknown
        ));
        assert!(matches!(
            sw.detect("Good morning my friend. I hope that you are doing well today and that the weather where you live is as pleasant as it is here."),
            Detected::No(l) if l == "English"
        ));
        assert!(Language::from_code("xx").unwrap_err().contains("known: en, es"));
    }
}
