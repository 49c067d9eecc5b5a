//! Random and adversarial responses: no verifier may panic, and every verdict comes back within
//! a generous bound even for megabyte inputs (a hang or a quadratic blow-up fails here; speed
//! itself is measured by `rlvr bench verify`, not here).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rlvr_verifiers::{Mode, Registry};

const LABELS: [(&str, &str); 6] = [
    ("gsm8k", "18"),
    ("math", "\\frac{1}{2}"),
    ("math", "(1,2)"),
    ("MATH", "\\{1,2,3\\}"),
    (
        "ifeval",
        r#"{"func_name": "verify_sentence_constraint", "N": 3, "quantifier": "at least"}"#,
    ),
    ("ifeval", r#"{"func_name": "verify_paragraph_count", "N": 2}"#),
];

/// An IFEval benchmark row asking for all 25 instructions at once.
const GOOGLE_IFEVAL: &str = r#"{"prompt": "p", "instruction_id_list": [
  "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
  "language:response_language", "length_constraints:number_sentences",
  "length_constraints:number_paragraphs", "length_constraints:number_words",
  "length_constraints:nth_paragraph_first_word", "detectable_content:number_placeholders",
  "detectable_content:postscript", "detectable_format:number_bullet_lists",
  "detectable_format:constrained_response", "detectable_format:number_highlighted_sections",
  "detectable_format:multiple_sections", "detectable_format:json_format", "detectable_format:title",
  "combination:two_responses", "combination:repeat_prompt", "startend:end_checker",
  "change_case:capital_word_frequency", "change_case:english_capital",
  "change_case:english_lowercase", "punctuation:no_comma", "startend:quotation"],
 "kwargs": [{"keywords": ["a", "(b"]}, {"keyword": "x", "frequency": 2, "relation": "at least"},
  {"forbidden_words": ["no"]}, {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
  {"language": "de"}, {"num_sentences": 3, "relation": "at least"}, {"num_paragraphs": 2},
  {"num_words": 5, "relation": "less than"},
  {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "so"}, {"num_placeholders": 1},
  {"postscript_marker": "P.S."}, {"num_bullets": 2}, {}, {"num_highlights": 2},
  {"section_spliter": "SECTION", "num_sections": 2}, {}, {}, {}, {"prompt_to_repeat": "p"},
  {"end_phrase": "bye"}, {"capital_frequency": 2, "capital_relation": "less than"}, {}, {}, {}, {}]}"#;

fn all_verdicts(response: &str) {
    for mode in [Mode::Default, Mode::Tulu3] {
        let reg = Registry::new(mode);
        for (name, label) in LABELS.into_iter().chain([("google_ifeval", GOOGLE_IFEVAL)]) {
            let v = reg.verify(name, response, label).unwrap();
            assert!(v.score == 0.0 || v.score == 1.0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        all_verdicts(&s);
    }

    #[test]
    fn latex_soup_never_panics(s in "[\\\\{}()\\[\\]$0-9a-z^_.,=+*/ #-]{0,400}") {
        all_verdicts(&s);
    }

    #[test]
    fn latex_commands_never_panic(parts in proptest::collection::vec(
        prop_oneof![
            Just("\\frac"), Just("\\sqrt"), Just("\\boxed{"), Just("\\fbox{"), Just("{"), Just("}"),
            Just("\\left("), Just("\\right)"), Just("\\text{"), Just("\\pi"), Just("^"), Just("$"),
            Just("1"), Just("-"), Just(","), Just("\\\\"), Just("\\begin{pmatrix}"), Just("\\end{pmatrix}"),
            Just("####"), Just("The answer is"), Just("="), Just("\\cup"), Just("."), Just("%"),
        ],
        0..200,
    )) {
        all_verdicts(&parts.concat());
    }
}

#[test]
fn megabyte_and_deeply_nested_inputs_finish() {
    let mb = 1 << 20;
    let inputs = [
        "{".repeat(mb),
        "}".repeat(mb),
        "\\boxed{".repeat(mb / 7),
        "\\frac{".repeat(mb / 6),
        "\\sqrt".repeat(mb / 5),
        "$".repeat(mb),
        "1,".repeat(mb / 2),
        "9".repeat(mb),
        format!("\\boxed{{{}}}", "1,".repeat(mb / 2)),
        format!("{}1{}", "(".repeat(mb / 2), ")".repeat(mb / 2)),
        "The answer is ".repeat(mb / 14),
        "é∑😀".repeat(mb / 9),
    ];
    for input in &inputs {
        let t = Instant::now();
        all_verdicts(input);
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{:?}... took {:?}",
            &input[..20],
            t.elapsed()
        );
    }
}
