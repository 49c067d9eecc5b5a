//! The verifiers on real data in the repository (`data/eval`, `data/testdata`): each reference
//! solution must verify against its own label, and the RLVR sample's rows must route to their
//! verifiers.

use std::path::PathBuf;

use rlvr_verifiers::{Mode, Registry};
use serde_json::Value;

fn rows(rel: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_gsm8k_test_solution_verifies_against_its_label() {
    let data = rows("eval/gsm8k-test.jsonl");
    assert_eq!(data.len(), 1319);
    let default = Registry::new(Mode::Default);
    let tulu3 = Registry::new(Mode::Tulu3);
    let mut tulu3_misses = Vec::new();
    for row in &data {
        let solution = row["answer"].as_str().unwrap();
        let label = solution.rsplit("####").next().unwrap().trim();
        let v = default.verify("gsm8k", solution, label).unwrap();
        assert!(v.verified, "{label}: {}", v.reason);
        if !tulu3.verify("gsm8k", solution, label).unwrap().verified {
            tulu3_misses.push(label.to_string());
        }
    }
    // Tülu 3's rule cannot match labels written with a thousands comma (16 in the test set)
    // nor negative integers; nothing else.
    assert!(
        !tulu3_misses.is_empty() && tulu3_misses.len() <= 20,
        "{tulu3_misses:?}"
    );
    assert!(
        tulu3_misses.iter().all(|l| l.contains(',') || l.starts_with('-')),
        "{tulu3_misses:?}"
    );
}

#[test]
fn every_math500_solution_verifies_against_its_answer() {
    let data = rows("eval/math500.jsonl");
    assert_eq!(data.len(), 500);
    let default = Registry::new(Mode::Default);
    let mut misses = Vec::new();
    for row in &data {
        let (solution, answer) = (row["solution"].as_str().unwrap(), row["answer"].as_str().unwrap());
        let v = default.verify("math", solution, answer).unwrap();
        if !v.verified {
            misses.push(format!("{answer}: {}", v.reason));
        }
    }
    assert!(
        misses.is_empty(),
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
}

#[test]
fn the_rlvr_sample_routes_every_row_and_its_labels_parse() {
    let data = rows("testdata/rlvr-sample-300.jsonl");
    assert_eq!(data.len(), 300);
    for mode in [Mode::Default, Mode::Tulu3] {
        let reg = Registry::new(mode);
        let mut routed = std::collections::BTreeMap::new();
        for row in &data {
            let dataset = row["dataset"].as_str().unwrap();
            let truth = row["ground_truth"].as_str().unwrap();
            let verifier = reg.get(dataset).unwrap_or_else(|e| panic!("{dataset}: {e}"));
            verifier
                .parse_truth(truth)
                .unwrap_or_else(|e| panic!("{dataset}: {e}"));
            *routed.entry(verifier.name().to_string()).or_insert(0) += 1;
        }
        let want: std::collections::BTreeMap<String, i32> = [("gsm8k", 100), ("ifeval", 100), ("math", 100)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        assert_eq!(routed, want);
    }
}

#[test]
fn every_ifeval_benchmark_prompt_parses_with_all_25_instruction_ids() {
    let data = rows("eval/ifeval.jsonl");
    assert_eq!(data.len(), 541);
    let reg = Registry::new(Mode::Default);
    let mut ids = std::collections::BTreeSet::new();
    for row in &data {
        let key = &row["key"];
        let prompt = rlvr_verifiers::IfEvalPrompt::from_row(row).unwrap_or_else(|e| panic!("key {key}: {e}"));
        ids.extend(prompt.instruction_ids().iter().cloned());
        // The row itself is the label of the `google_ifeval` verifier.
        reg.parse_truth("google_ifeval", &row.to_string())
            .unwrap_or_else(|e| panic!("key {key}: {e}"));
    }
    let all: std::collections::BTreeSet<String> = rlvr_verifiers::INSTRUCTION_IDS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(ids, all);
}

/// The reward path (`verify_score`, no reason written) gives the verdicts `verify` gives, on
/// the RLVR sample's IF rows against GSM8K solutions edited the ways those rows ask for.
#[test]
fn reward_only_verdicts_equal_explained_ones_on_the_if_rows() {
    let answers: Vec<String> = rows("eval/gsm8k-test.jsonl")
        .iter()
        .map(|r| r["answer"].as_str().unwrap().to_string())
        .collect();
    let edits: [fn(&str) -> String; 8] = [
        str::to_string,
        str::to_uppercase,
        str::to_lowercase,
        |t| format!("\"{t}\""),
        |t| format!("<<A title>>\n{t}\nP.S. done"),
        |t| t.replace('\n', "\n\n"),
        |t| t.replace('\n', "\n* * *\n"),
        |t| format!("<|assistant|>\n{t}\n******\n{}", t.to_uppercase()),
    ];
    let if_rows: Vec<Value> = rows("testdata/rlvr-sample-300.jsonl")
        .into_iter()
        .filter(|r| r["dataset"] == "ifeval")
        .collect();
    for mode in [Mode::Default, Mode::Tulu3] {
        let reg = Registry::new(mode);
        let verifier = reg.get("ifeval").unwrap();
        let mut verified = 0;
        for (i, row) in if_rows.iter().enumerate() {
            let truth = verifier
                .parse_truth(row["ground_truth"].as_str().unwrap())
                .unwrap();
            for edit in edits {
                let response = edit(&answers[i]);
                let (full, quick) = (
                    verifier.verify(&response, &truth),
                    verifier.verify_score(&response, &truth),
                );
                assert_eq!(
                    (full.score, full.verified),
                    (quick.score, quick.verified),
                    "{response}"
                );
                assert!(!full.reason.is_empty() && quick.reason.is_empty());
                verified += usize::from(full.verified);
            }
        }
        let total = if_rows.len() * edits.len();
        assert!(
            verified > 0 && verified < total,
            "{mode:?}: {verified} of {total}"
        );
    }
}
