//! The constraints `builtin:if-word-problems` draws (`rlvr_data::constraints`), as the `ifeval`
//! verifier reads their labels: each label loads, an answer written to follow it passes, and the
//! plain answer fails every constraint a plain answer does not meet by chance.

use rlvr_data::arith::Split;
use rlvr_data::constraints::constrain;
use rlvr_verifiers::{IfEval, Mode, Verifier};
use serde_json::Value;

const PLAIN: &str = "Tom has 8 apples.";

/// An answer that follows `label` (written from its arguments).
fn following(label: &Value) -> String {
    let n = label["N"].as_u64().unwrap_or(0) as usize;
    let text = |key: &str| label[key].as_str().unwrap_or_default().to_string();
    let words = |key: &str| -> Vec<String> {
        label[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };
    match label["func_name"].as_str().unwrap() {
        "validate_lowercase" => "tom has eight apples.".into(),
        "validate_uppercase" | "validate_frequency_capital_words" => "TOM HAS EIGHT APPLES.".into(),
        "validate_title" => format!("<<Apples>>\n{PLAIN}"),
        "validate_no_commas" | "validate_forbidden_words" => PLAIN.into(),
        "validate_quotation" => format!("\"{PLAIN}\""),
        "validate_json_format" => r#"{"answer": 8}"#.into(),
        "validate_two_responses" => format!("{PLAIN}\n******\nThe answer is 8."),
        "verify_postscript" => format!("{PLAIN}\n{} Count again.", text("postscript_marker")),
        "validate_end" => format!("{PLAIN} {}", text("end_phrase")),
        "validate_placeholders" => format!("{} {PLAIN}", "[place] ".repeat(n)),
        "validate_highlighted_sections" => format!("{} {PLAIN}", "*note* ".repeat(n)),
        "verify_keywords" => format!("{PLAIN} {}.", words("keyword_list").join(" and ")),
        "verify_bullet_points" => vec!["* a point"; n].join("\n"),
        "verify_paragraph_count" => vec![PLAIN; n].join("\n* * *\n"),
        "validate_sections" => (1..=n)
            .map(|i| format!("{} {i}\n{PLAIN}", text("section_splitter")))
            .collect::<Vec<_>>()
            .join("\n"),
        "validate_paragraphs" => {
            let i = label["i"].as_u64().unwrap() as usize;
            (1..=n)
                .map(|p| match p == i {
                    true => format!("{} {PLAIN}", text("first_word")),
                    false => PLAIN.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n\n")
        }
        "validate_repeat_prompt" => format!("{} {PLAIN}", text("original_prompt")),
        other => panic!("a constraint this test does not know: {other}"),
    }
}

#[test]
fn every_generated_constraint_loads_can_be_met_and_is_not_met_by_a_plain_answer() {
    let verifier = IfEval::new(Mode::Default);
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..400 {
        let c = constrain(
            "Tom has 3 apples. Tom gets 5 more. How many apples does Tom have now?",
            1,
            i,
            Split::Train,
        );
        let name = c.label["func_name"].as_str().unwrap().to_string();
        let truth = verifier.parse_truth(&c.label.to_string()).unwrap();
        let answer = following(&c.label);
        let verdict = verifier.verify(&answer, &truth);
        assert!(verdict.verified, "{name}: {answer:?} fails: {}", verdict.reason);
        let met_by_chance = ["validate_no_commas", "validate_forbidden_words"].contains(&name.as_str());
        assert_eq!(verifier.verify(PLAIN, &truth).verified, met_by_chance, "{name}");
        kinds.insert(name);
    }
    assert_eq!(kinds.len(), 19);
}
