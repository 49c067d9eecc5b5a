//! `rlvr eval` and evaluation inside runs, on a tiny model: results.json and samples.jsonl as
//! documented, the same numbers for the same seed, pass@k with several samples, IFEval's four
//! accuracies, bad input exiting 2; an RLVR stage scoring `eval.tasks` at its evaluation points.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A tiny model (the SmolLM2-shaped parity fixture) with the built-in character tokenizer and
/// a ChatML template.
fn model(tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../learner/tests/fixtures/parity/smollm2");
    let dir = tmp(tag);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    // Room for IFEval's prompts: rotary positions are not limited by the weights.
    let mut config = read_json(&src.join("config.json"));
    config["max_position_embeddings"] = json!(2048);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut tok = rlvr_data::Tokenizer::builtin_chars();
    tok.set_chat_template(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    );
    tok.save(&dir).unwrap();
    dir
}

/// A task file of lower-case arithmetic in the RLVR row format.
fn task_file(dir: &Path) -> PathBuf {
    let path = dir.join("sums.jsonl");
    let rows: Vec<String> = (0..6)
        .map(|i| {
            json!({"messages": [{"role": "user", "content": format!("what is {i}+{i}?")}],
                   "ground_truth": (2 * i).to_string(), "dataset": "gsm8k"})
            .to_string()
        })
        .collect();
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

#[test]
fn eval_writes_results_and_samples_the_same_for_the_same_seed() {
    let dir = model("model");
    let tasks = format!("{},ifeval", task_file(&dir).display());
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--tasks",
            &tasks,
            "--limit",
            "4",
            "--max-new-tokens",
            "6",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = rlvr(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        (read_json(&out.join("results.json")), text(&o.stdout))
    };
    let (out_a, out_b, out_c) = (tmp("a"), tmp("b"), tmp("c"));
    let (a, table) = run(&out_a, &[]);
    let sums = &a["tasks"][task_file(&dir).to_str().unwrap()];
    assert_eq!(
        (sums["n"].as_u64(), sums["samples"].as_u64()),
        (Some(4), Some(4)),
        "{a}"
    );
    assert!(sums["accuracy"].as_f64().is_some());
    let ifeval = &a["tasks"]["ifeval"];
    for key in [
        "prompt_strict",
        "prompt_loose",
        "instruction_strict",
        "instruction_loose",
    ] {
        let v = ifeval[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {v}");
    }
    assert_eq!(a["preset"], "chat");
    assert!(
        table.contains("ifeval") && table.contains("prompt-level strict"),
        "{table}"
    );
    let samples: Vec<Value> = std::fs::read_to_string(out_a.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 8);
    for s in &samples {
        for key in ["task", "id", "prompt", "response", "verified", "reason"] {
            assert!(s.get(key).is_some(), "{key} in {s}");
        }
        let ids = s["response_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.iter().all(Value::is_u64), "{s}");
    }
    assert!(samples[0]["prompt"]
        .as_str()
        .unwrap()
        .starts_with("<|im_start|>user\nwhat is 0+0?"));
    // Same seed, same numbers, sampling included; several samples give pass@k.
    let sampled = ["--n", "3", "--temperature", "1.0", "--seed", "5"];
    let (b, _) = run(&out_b, &sampled);
    let (c, _) = run(&out_c, &sampled);
    assert_eq!(b["tasks"], c["tasks"]);
    let sums = &b["tasks"][task_file(&dir).to_str().unwrap()];
    assert_eq!(sums["samples"], 12);
    assert!(sums["pass@k"].as_f64().unwrap() >= sums["accuracy"].as_f64().unwrap());
    for d in [dir, out_a, out_b, out_c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn eval_refuses_what_it_cannot_run() {
    let dir = model("bad");
    for (args, words) in [
        (vec!["--tasks", "gsm9k"], "gsm9k"),
        (vec!["--tasks", "gsm8k", "--n", "0"], "--n"),
        (
            vec!["--tasks", "gsm8k", "--chat-template", "nonesuch"],
            "nonesuch",
        ),
    ] {
        let out = tmp("bad-out");
        let mut a = vec![
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(args);
        let o = rlvr(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(words), "{a:?}: {}", text(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_rlvr_stage_scores_its_test_sets_at_each_evaluation() {
    let dir = tmp("stage");
    std::fs::create_dir_all(&dir).unwrap();
    let tasks = task_file(&dir);
    let out = dir.join("run");
    let o = rlvr(&[
        "run",
        "tiny-arith-rlvr",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "train.max_steps=2",
        "--set",
        &format!("eval.tasks=[\"{}\"]", tasks.display()),
        "--set",
        "eval.every=1",
        "--set",
        "eval.max_new_tokens=8",
        "--set",
        "eval.chat_template=chatml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let records: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r.get("eval_tasks").is_some())
        .collect();
    let steps: Vec<u64> = records.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2], "at the start and after every step");
    for r in &records {
        let t = &r["eval_tasks"][tasks.to_str().unwrap()];
        assert_eq!(t["n"], 6, "{r}");
        assert!(t["accuracy"].as_f64().is_some());
    }
    let _ = std::fs::remove_dir_all(dir);
}
