//! RL prompts made from GSM8K and MATH rows, preference pairs, and packing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rlvr_core::IGNORE;
use rlvr_data::pack::{pack, Waste};
use rlvr_data::{preference_row, rlvr_row, At, ChatTemplate, PromptFormat, Tokenizer};
use serde_json::{json, Value};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel)
}

fn rows(path: &Path) -> Vec<Value> {
    common::read_all(path, |v, _| Ok(v.clone())).unwrap()
}

const AT: At<'static> = At { path: "test", row: 1 };
const FEW: PromptFormat = PromptFormat::FewShot;

#[test]
fn gsm8k_and_math_rows_become_the_tulu_rlvr_prompts() {
    // The sample's GSM8K and MATH rows were made from these files by open-instruct's recipe:
    // converting the source rows must give the same prompts and labels.
    let tulu = ChatTemplate::resolve("tulu", &rlvr_data::Tokenizer::builtin_chars()).unwrap();
    let sample = rows(&testdata("rlvr-sample-300.jsonl"));
    let by_question = |path: &str, key: &str| -> HashMap<String, Value> {
        rows(&testdata(path))
            .into_iter()
            .map(|r| (r[key].as_str().unwrap().to_string(), r))
            .collect()
    };
    let gsm8k = by_question("gsm8k-train-sample-rows.jsonl", "question");
    let math = by_question("math-sample-rows.jsonl", "problem");
    let mut checked = HashMap::new();
    for row in &sample {
        let dataset = row["dataset"].as_str().unwrap();
        let (prefix, source) = match dataset {
            "gsm8k" => (rlvr_data::GSM8K_FEW_SHOT, &gsm8k),
            "MATH" => (rlvr_data::MATH_FEW_SHOT, &math),
            _ => continue,
        };
        let content = row["messages"][0]["content"].as_str().unwrap();
        let question = content
            .strip_prefix(prefix)
            .unwrap()
            .strip_prefix("Question: ")
            .unwrap();
        let original = &source[question];
        let expected = rlvr_row(row, AT, &tulu, FEW).unwrap();
        let converted = rlvr_row(original, AT, &tulu, FEW).unwrap();
        assert_eq!(converted, expected, "{dataset}: {question}");
        *checked.entry(dataset).or_insert(0) += 1;
    }
    assert_eq!(checked, HashMap::from([("gsm8k", 100), ("MATH", 100)]));
    // Zero-shot: the question and the answer-form instruction `rlvr eval --preset chat` uses.
    let row = json!({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"});
    let zero = rlvr_row(&row, AT, &tulu, PromptFormat::ZeroShot).unwrap();
    assert_eq!(
        zero.prompt,
        "<|user|>\nWhat is 2+2?\nLet's think step by step and output the final answer after \"####\".\n<|assistant|>\n"
    );
    assert_eq!(
        (zero.ground_truth.as_str(), zero.dataset.as_str()),
        ("4", "gsm8k")
    );
    // A MATH row with a solution but no `answer` takes the last boxed answer, braces balanced.
    let solved = json!({"problem": "p", "solution": "so $\\boxed{1}$ then $\\boxed{\\frac{1}{2}}$."});
    assert_eq!(
        rlvr_row(&solved, AT, &tulu, FEW).unwrap().ground_truth,
        "\\frac{1}{2}"
    );
    let err = rlvr_row(&json!({"question": "q", "answer": "no marker"}), AT, &tulu, FEW)
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `answer`") && err.contains("####"), "{err}");
    let err = rlvr_row(&json!({"prompt": "q"}), AT, &tulu, FEW)
        .unwrap_err()
        .to_string();
    assert!(err.contains("test:1: field `messages`"), "{err}");
}

#[test]
fn preference_rows_mask_the_shared_prompt_and_end_each_answer_with_eos() {
    let tok = Tokenizer::builtin_chars();
    let chatml = ChatTemplate::builtin("chatml", "<|im_end|>").unwrap();
    let conv = |answer: &str| {
        json!([
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": answer},
        ])
    };
    let row = json!({"prompt": "ignored", "chosen": conv("6"), "rejected": conv("7.")});
    let (chosen, rejected) = preference_row(&row, AT, &chatml, &tok, 256).unwrap().unwrap();
    let answer = |(ids, labels): &(Vec<i64>, Vec<i64>)| {
        let kept: Vec<u32> = ids
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l != IGNORE)
            .map(|(i, _)| *i as u32)
            .collect();
        tok.decode_with_specials(&kept)
    };
    // Only the last answer is learned; the earlier assistant turn is prompt.
    assert_eq!(answer(&chosen), "6<|im_end|>\n");
    assert_eq!(answer(&rejected), "7.<|im_end|>\n");
    let masked = |l: &[i64]| l.iter().take_while(|&&x| x == IGNORE).count();
    assert_eq!(masked(&chosen.1), masked(&rejected.1));
    assert_eq!(chosen.0[..masked(&chosen.1)], rejected.0[..masked(&rejected.1)]);
    // A prompt that fills the maximum length leaves no answer: filtered out, not an error.
    assert_eq!(preference_row(&row, AT, &chatml, &tok, 20).unwrap(), None);
    // Prompts that differ, or a side that does not end with the answer, name the field.
    let other = json!({"chosen": conv("6"), "rejected": [{"role": "user", "content": "5+5?"}, {"role": "assistant", "content": "10"}]});
    let err = preference_row(&other, AT, &chatml, &tok, 256)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field `rejected`") && err.contains("shares its prompt"),
        "{err}"
    );
    let open = json!({"chosen": conv("6"), "rejected": [{"role": "user", "content": "x"}]});
    let err = preference_row(&open, AT, &chatml, &tok, 256)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field `rejected`") && err.contains("end with the assistant"),
        "{err}"
    );
    let err = preference_row(&json!({"chosen": conv("6")}), AT, &chatml, &tok, 256)
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `rejected`: missing"), "{err}");
}

#[test]
fn best_fit_packing_fills_rows_and_measures_the_padding_it_saves() {
    let lengths = [90, 60, 50, 40, 30, 10, 10, 5, 128, 200];
    let rows = pack(&lengths, 128);
    let mut seen: Vec<usize> = rows.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..lengths.len()).collect::<Vec<_>>(),
        "every example exactly once"
    );
    for row in &rows {
        let used: usize = row.iter().map(|&i| lengths[i].min(128)).sum();
        assert!(used <= 128, "{row:?}");
    }
    // 200 (cut to 128) and 128 fill rows alone; 90+30+5 | 60+50+10 | 40+10 → 5 rows.
    assert_eq!(rows.len(), 5);
    let cut: Vec<usize> = lengths.iter().map(|&l| l.min(128)).collect();
    let w = Waste::measure(&cut, 4, 128, &rows);
    assert_eq!(w.tokens, 551);
    // Batches of 4 padded to their longest: [90,60,50,40] → 360, [30,10,10,5] → 120, [128,128] → 256.
    assert!(
        (w.unpacked - (1.0 - 551.0 / 736.0)).abs() < 1e-12,
        "{}",
        w.unpacked
    );
    assert!((w.packed - (1.0 - 551.0 / 640.0)).abs() < 1e-12, "{}", w.packed);
    assert_eq!(pack(&lengths, 128), rows, "deterministic");
}
