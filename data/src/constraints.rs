//! Instruction-following constraints added to generated prompts, for `builtin:if-word-problems`:
//! one of the Tülu 3 RLVR data's IF functions with arguments drawn for the prompt, phrased as
//! the Tülu 3 IF rows phrase it (`../testdata/rlvr-sample-300.jsonl`'s `constraint` column),
//! and labelled as those rows are (`{"func_name": ..., <arguments>}`, checked by the `ifeval`
//! verifier). Only functions a short answer can satisfy are drawn — no "at least 300 words",
//! no letter counts — so that a 135M model meets them sometimes and the reward has signal; word
//! and sentence limits are left out too, since they would reward brevity alone.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::arith::Split;

/// A request with a constraint: the user turn and the label the `ifeval` verifier checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Constrained {
    /// The request and the constraint's instruction, in the order drawn.
    pub prompt: String,
    /// `{"func_name": ..., <arguments>}`, as the Tülu 3 IF rows' `ground_truth` holds it.
    pub label: Value,
}

const KEYWORDS: [&str; 10] = [
    "garden", "river", "lantern", "music", "window", "friend", "summer", "story", "market", "cloud",
];
const FORBIDDEN: [&str; 6] = ["simply", "really", "basically", "very", "actually", "just"];
const END_PHRASES: [&str; 4] = [
    "Any other questions?",
    "Is there anything else I can help with?",
    "That's all I have to say.",
    "Let me know if you have additional questions.",
];
const POSTSCRIPTS: [&str; 2] = ["P.S.", "P.P.S"];
const FIRST_WORDS: [&str; 3] = ["First", "However", "Finally"];
const SPLITTERS: [&str; 3] = ["SECTION", "Section", "PART"];

/// Kinds of constraint drawn, equally often.
const KINDS: usize = 19;

/// `request` with constraint number `index` of `split` for `seed` (the same arguments give the
/// same constraint; the splits draw from separate streams).
pub fn constrain(request: &str, seed: u64, index: u64, split: Split) -> Constrained {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5851_f42d_4c95_7f2d);
    rng.set_stream(match split {
        Split::Train => 0,
        Split::Test => 1,
    });
    rng.set_word_pos(u128::from(index) * 16);
    let pick = |rng: &mut ChaCha8Rng, from: &[&'static str]| *from.choose(rng).unwrap_or(&"");
    let two = |rng: &mut ChaCha8Rng, from: &[&'static str]| {
        let words: Vec<&str> = from.choose_multiple(rng, 2).copied().collect();
        words
    };
    let (instruction, label) = match rng.gen_range(0..KINDS) {
        0 => (
            "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.".to_string(),
            json!({"func_name": "validate_lowercase"}),
        ),
        1 => (
            "Your entire response should be in English, capital letters only.".to_string(),
            json!({"func_name": "validate_uppercase"}),
        ),
        2 => (
            "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.".to_string(),
            json!({"func_name": "validate_title"}),
        ),
        3 => (
            "In your entire response, refrain from the use of any commas.".to_string(),
            json!({"func_name": "validate_no_commas"}),
        ),
        4 => (
            "Wrap your entire response with double quotation marks.".to_string(),
            json!({"func_name": "validate_quotation"}),
        ),
        5 => (
            "Entire output should be wrapped in JSON format.".to_string(),
            json!({"func_name": "validate_json_format"}),
        ),
        6 => (
            "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******.".to_string(),
            json!({"func_name": "validate_two_responses"}),
        ),
        7 => {
            let marker = pick(&mut rng, &POSTSCRIPTS);
            (
                format!("At the end of your response, please explicitly add a postscript starting with {marker}"),
                json!({"func_name": "verify_postscript", "postscript_marker": marker}),
            )
        }
        8 => {
            let phrase = pick(&mut rng, &END_PHRASES);
            (
                format!("Finish your response with this exact phrase {phrase}. No other words should follow this phrase."),
                json!({"func_name": "validate_end", "end_phrase": phrase}),
            )
        }
        9 => {
            let n = rng.gen_range(1..=3);
            (
                format!("The response must contain at least {n} placeholders represented by square brackets, such as [address]."),
                json!({"func_name": "validate_placeholders", "N": n}),
            )
        }
        10 => {
            let n = rng.gen_range(1..=3);
            (
                format!("Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*"),
                json!({"func_name": "validate_highlighted_sections", "N": n}),
            )
        }
        11 => {
            let words = two(&mut rng, &KEYWORDS);
            (
                format!("Include keywords {} in your response", words.join(", ")),
                json!({"func_name": "verify_keywords", "keyword_list": words}),
            )
        }
        12 => {
            let words = two(&mut rng, &FORBIDDEN);
            (
                format!("Do not include keywords {} in the response.", words.join(", ")),
                json!({"func_name": "validate_forbidden_words", "forbidden_words": words}),
            )
        }
        13 => {
            let n = rng.gen_range(2..=4);
            (
                format!("Your answer must contain exactly {n} bullet points. Use the markdown bullet points such as: * This is a point."),
                json!({"func_name": "verify_bullet_points", "N": n}),
            )
        }
        14 => {
            let n = rng.gen_range(2..=3);
            (
                format!("Your response should contain {n} paragraphs. You separate paragraphs using the markdown divider: * * *"),
                json!({"func_name": "verify_paragraph_count", "N": n}),
            )
        }
        15 => {
            let (n, splitter) = (2, pick(&mut rng, &SPLITTERS));
            (
                format!("Your response must have {n} sections. Mark the beginning of each section with {splitter} X."),
                json!({"func_name": "validate_sections", "N": n, "section_splitter": splitter}),
            )
        }
        16 => {
            let n = rng.gen_range(2..=4);
            (
                format!("In your response, words with all capital letters should appear at least {n} times."),
                json!({"func_name": "validate_frequency_capital_words", "N": n, "quantifier": "at least"}),
            )
        }
        17 => {
            let (n, i, word) = (2, rng.gen_range(1..=2), pick(&mut rng, &FIRST_WORDS));
            (
                format!("There should be {n} paragraphs. Paragraphs and only paragraphs are separated with each other by two line breaks. The {i}-th paragraph must start with word {word}."),
                json!({"func_name": "validate_paragraphs", "N": n, "i": i, "first_word": word}),
            )
        }
        _ => (
            "First, repeat the request without change, then give your answer (do not say anything before repeating the request; the request you need to repeat does not include this sentence)".to_string(),
            json!({"func_name": "validate_repeat_prompt", "original_prompt": request}),
        ),
    };
    // The Tülu 3 rows put the instruction before the request or after it, a blank line apart.
    let prompt = if rng.gen_bool(0.5) {
        format!("{instruction} {request}")
    } else {
        format!("{request}\n\n{instruction}")
    };
    Constrained { prompt, label }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_drawn_and_the_splits_and_seeds_differ() {
        let drawn: Vec<Constrained> = (0..400)
            .map(|i| constrain("Tom has 3 apples. How many?", 1, i, Split::Train))
            .collect();
        let kinds: std::collections::BTreeSet<&str> = drawn
            .iter()
            .map(|c| c.label["func_name"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.len(), KINDS);
        assert!(drawn
            .iter()
            .all(|c| c.prompt.contains("Tom has 3 apples. How many?")));
        assert_eq!(
            drawn[7],
            constrain("Tom has 3 apples. How many?", 1, 7, Split::Train)
        );
        let other = |seed, split| {
            (0..20)
                .map(|i| constrain("q", seed, i, split))
                .collect::<Vec<_>>()
        };
        assert_ne!(other(1, Split::Train), other(1, Split::Test));
        assert_ne!(other(1, Split::Train), other(2, Split::Train));
    }
}
