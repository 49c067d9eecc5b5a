//! The `rlvr` binary as a user meets it: listings, resolved recipes, plans, exit codes, and a
//! real run with metrics, checkpoints and an exact resume after the process is killed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn recipes_lists_every_seed_recipe() {
    let out = rlvr(&["recipes"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for name in [
        "tulu3-8b",
        "tulu3-70b",
        "tulu3-405b",
        "tulu3-8b-sft",
        "tulu3-70b-sft",
        "tulu3-8b-dpo",
        "tulu3-70b-dpo",
        "tulu3-405b-dpo",
        "tulu3-8b-rm",
        "tulu3-8b-rlvr",
        "tulu3-70b-rlvr",
        "tulu3-405b-rlvr",
        "smollm2-135m",
        "smollm2-360m",
        "smollm2-1.7b",
        "smollm2-135m-pretrain",
        "smollm2-360m-sft",
        "smollm2-1.7b-dpo",
        "tiny-arith",
    ] {
        assert!(
            s.lines().any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing:\n{s}"
        );
    }
}

#[test]
fn show_prints_the_resolved_pipeline_as_json_and_toml() {
    let out = rlvr(&["show", "tulu3-70b", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[0]["train"]["learning_rate"], 2e-6);
    assert_eq!(stages[1]["dpo"]["loss_type"], "dpo_norm");
    assert_eq!(stages[2]["rlvr"]["beta"], 0.07);
    let out = rlvr(&["show", "tulu3-8b-sft", "--set", "train.learning_rate=1e-6"]);
    let resolved: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(resolved["train"]["learning_rate"].as_float(), Some(1e-6));

    // --explain: a key's doc and type, and each stage's value; a table lists its keys.
    let out = rlvr(&["show", "tulu3-70b", "--explain", "rlvr.beta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("rlvr.beta: number\n  KL coefficient"), "{s}");
    assert!(s.contains("tulu3-70b-rlvr: 0.07"), "{s}");
    let out = rlvr(&["show", "--explain", "rlvr"]);
    assert!(text(&out.stdout).contains("rlvr.reward_model_multiplier"));
    assert_refused(&rlvr(&["show", "--explain", "rlvr.betta"]), "rlvr.beta");
}

#[test]
fn bad_input_exits_2_and_lists_the_choices() {
    let out = rlvr(&["show", "no-such-recipe"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("tulu3-70b") && err.contains("smollm2-135m"), "{err}");

    let out = rlvr(&["show", "tulu3-8b-sft", "--set", "train.lerning_rate=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("learning_rate"));

    let out = rlvr(&["plan", "tulu3-8b", "--gpus", "0"]);
    assert_eq!(out.status.code(), Some(2));

    let out = rlvr(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = tmp("no-evals");
    let d = dir.to_str().unwrap();
    let out = rlvr(&["run", "tiny-arith-rlvr", "--out", d, "--set", "rlvr.num_evals=0"]);
    assert_refused(&out, "rlvr.num_evals = 0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_fits_on_64_gpus_and_refuses_one_with_advice() {
    let out = rlvr(&["plan", "tulu3-70b", "--gpus", "64"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("total per GPU") && s.contains("fits") && s.contains("optimizer steps"),
        "{s}"
    );
    // It fits, but the launch over 64 GPUs is not wired: plan says so, as run would.
    assert!(
        s.contains("this build does not run it yet") && s.contains("launch.gpus"),
        "{s}"
    );

    let out = rlvr(&["plan", "tulu3-70b", "--gpus", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("DOES NOT FIT") && s.contains("use at least"), "{s}");
    assert!(text(&out.stderr).contains("does not fit"));

    let out = rlvr(&["plan", "tulu3-8b-sft", "--gpus", "8", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["params"], 8_030_261_248u64);
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "recipes", "show", "plan", "run", "generate", "verify", "bench", "data", "worker",
    ] {
        let out = rlvr(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        assert!(text(&out.stdout).contains("Usage"), "{sub}");
    }
}

/// `tulu3-8b` starts with an SFT stage on 64 GPUs over 8 nodes: outside a launcher it is
/// refused, naming the stage and what to do, before anything runs; so is a one-node stage
/// asking for more GPUs than this machine has.
#[test]
fn stages_this_machine_cannot_place_are_refused_before_anything_runs() {
    let dir = tmp("unavailable");
    let out = rlvr(&["run", "tulu3-8b", "--out", dir.to_str().unwrap()]);
    assert_refused(&out, "tulu3-8b-sft");
    assert!(
        text(&out.stderr).contains("torchrun or srun"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.exists(), "nothing was started");
    // tulu3-8b-rlvr: 8 GPUs on one node.
    let gpus = tch::Cuda::device_count();
    if gpus < 8 {
        let out = rlvr(&["run", "tulu3-8b-rlvr", "--out", dir.to_str().unwrap()]);
        assert_refused(&out, &format!("this machine has {gpus}"));
        assert!(!dir.exists(), "nothing was started");
    }
}

const SMALL: [&str; 6] = [
    "--set",
    "train.per_device_train_batch_size=8",
    "--set",
    "train.logging_steps=1",
    "--set",
    "train.checkpointing_steps=5",
];

/// `n` SFT conversations in open-instruct's `messages` form: sums of two numbers.
fn sft_rows(n: u64, offset: u64) -> String {
    (0..n)
        .map(|i| {
            let (a, b) = ((i * 7 + offset) % 50, (i * 13 + offset) % 40);
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("what is {a}+{b}?")},
                {"role": "assistant", "content": format!("{a}+{b}={}. #### {}", a + b, a + b)},
            ]})
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn sft_learns_from_a_jsonl_file_of_conversations_and_bad_rows_name_file_line_and_field() {
    let dir = tmp("sft-jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    let (train, eval) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    std::fs::write(&train, sft_rows(400, 0)).unwrap();
    std::fs::write(&eval, sft_rows(32, 1000)).unwrap();
    let out_dir = dir.join("run");
    let mix = format!("data.mix=[{{dataset = \"{}\", amount = 400}}]", train.display());
    let eval_mix = format!(
        "data.eval_mix=[{{dataset = \"{}\", amount = 32}}]",
        eval.display()
    );
    let mut args = vec![
        "run",
        "tiny-arith-sft",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        &mix,
        "--set",
        &eval_mix,
        "--set",
        "train.max_steps=60",
    ];
    args.extend(SMALL);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&out_dir);
    let evals: Vec<f64> = m.iter().filter_map(|r| r.get("eval_loss")?.as_f64()).collect();
    assert_eq!(evals.len(), 2, "{m:?}");
    assert!(evals[1] < 0.6 * evals[0], "held-out loss must fall: {evals:?}");
    assert!(out_dir.join("tiny-arith-sft").join("model.safetensors").is_file());

    // A row without an assistant turn, and one that is not JSON, name the file, line and field.
    args.push("--overwrite");
    std::fs::write(
        &train,
        format!(
            "{}{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\n",
            sft_rows(2, 0)
        ),
    )
    .unwrap();
    let out = rlvr(&args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("train.jsonl:3: field `messages`: no assistant turn"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&train, "{\"messages\": [\n").unwrap();
    let out = rlvr(&args);
    assert!(
        text(&out.stderr).contains("train.jsonl:1"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_inspect_shows_each_stage_rows_lengths_and_rendered_examples() {
    let out = rlvr(&["data", "inspect", "tiny-arith", "--examples", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    for want in [
        "stage tiny-arith-pretrain (pretrain)",
        "stage tiny-arith-sft (sft)",
        "stage tiny-arith-rlvr (rlvr)",
        "tokens per row: p50",
        "padding: ",
        "resolved: builtin:arith [train] (builtin): 20000 rows generated",
        "tokens per prompt: p50",
        "example 1 (",
        "prompt 1 (",
        "<|im_start|>user\n    | ",
        // Each RLVR prompt's verifier and parsed ground truth, and the rows per verifier.
        "prompts per verifier: gsm8k 2000",
        "verifier gsm8k, ground truth \"",
        "    parsed: Number(",
    ] {
        assert!(o.contains(want), "{want:?} missing in:\n{o}");
    }
    // SFT rows learn only the assistant turn: fewer learned tokens than tokens.
    let sft = &o[o.find("stage tiny-arith-sft").unwrap()..];
    let line = sft.lines().find(|l| l.contains("example 1 (")).unwrap();
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(nums[2] < nums[1], "{line}");
    // A stage whose tokenizer is on the hub and not in the cache cannot be shown: the command
    // says which repository and cache it looked in, and fails rather than guess a tokenizer.
    let empty = tmp("inspect-empty-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["data", "inspect", "tulu3-8b-sft"])
        .env("HF_HUB_CACHE", &empty)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    for want in ["tulu3-8b-sft", "meta-llama/Llama-3.1-8B", empty.to_str().unwrap()] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn tiny_pretraining_runs_logs_and_learns() {
    let dir = tmp("pretrain");
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "run",
        "tiny-arith-pretrain",
        "--out",
        d,
        "--set",
        "train.max_steps=60",
    ];
    args.extend(SMALL);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&dir);
    let steps: Vec<&Value> = m.iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 60);
    for r in &steps {
        for key in ["stage", "step", "loss", "lr", "tokens", "elapsed_s"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["stage"], "pretrain");
    }
    let evals: Vec<f64> = m.iter().filter_map(|r| r.get("eval_loss")?.as_f64()).collect();
    assert_eq!(evals.len(), 2);
    assert!(
        evals[1] < 0.7 * evals[0],
        "held-out loss must fall clearly: {evals:?}"
    );
    let resolved = std::fs::read_to_string(dir.join("recipe.resolved.toml")).unwrap();
    assert!(resolved.contains("max_steps = 60"));
    let model = dir.join("tiny-arith-pretrain");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(f).is_file(), "{f}");
    }
    // The checkpoint samples through `rlvr generate`.
    let m = model.to_str().unwrap();
    let prompt = "question: tom has 3 pens. tom gets 4 more. how many pens does tom have now?\nanswer:";
    let out = rlvr(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--n",
        "2",
        "--max-new-tokens",
        "30",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let ids = l["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 30);
        assert_eq!(l["logprobs"].as_array().unwrap().len(), ids.len());
        assert!(["stop", "length"].contains(&l["finish_reason"].as_str().unwrap()));
    }
    assert_eq!(lines[0]["text"], lines[1]["text"], "greedy completions agree");
    let out = rlvr(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--max-new-tokens",
        "5",
        "--seed",
        "3",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("completion 0"));
    let out = rlvr(&["generate", "--model", d, "--prompt", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a directory without config.json is bad input"
    );

    // A second run into the same directory needs --resume or --overwrite.
    let again = rlvr(&["run", "tiny-arith-pretrain", "--out", d]);
    assert_eq!(again.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics() {
    let steps = "train.max_steps=200";
    let full = tmp("full");
    let mut args = vec![
        "run",
        "tiny-arith-pretrain",
        "--out",
        full.to_str().unwrap(),
        "--set",
        steps,
    ];
    args.extend(SMALL);
    assert!(rlvr(&args).status.success());

    let cut = tmp("cut");
    let mut args = vec![
        "run",
        "tiny-arith-pretrain",
        "--out",
        cut.to_str().unwrap(),
        "--set",
        steps,
    ];
    args.extend(SMALL);
    kill_then_resume("tiny-arith-pretrain", &args, &cut, 10);
    let strip = |v: Vec<Value>| -> Vec<(u64, Option<f64>, Option<f64>)> {
        v.iter()
            .map(|r| {
                (
                    r["step"].as_u64().unwrap(),
                    r.get("loss").and_then(Value::as_f64),
                    r.get("eval_loss").and_then(Value::as_f64),
                )
            })
            .collect()
    };
    assert_eq!(strip(metrics(&cut)), strip(metrics(&full)));
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}

#[test]
fn verify_scores_each_line_in_order_and_reports_bad_ones() {
    let dir = tmp("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    let lines = [
        r#"{"dataset": "gsm8k", "response": "so the answer is 18.0", "ground_truth": "18"}"#,
        r#"{"dataset": "gsm8k", "response": "the total is 17", "ground_truth": "18"}"#,
        r#"{"dataset": "MATH", "response": "thus $\\boxed{\\dfrac{1}{2}}$", "ground_truth": "0.5"}"#,
        r#"{"dataset": "gsm8k", "response": "no closing brace""#,
        r#"{"dataset": "gsm8k", "ground_truth": "1"}"#,
        r#"{"dataset": "chess", "response": "e4", "ground_truth": "e4"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = rlvr(&["verify", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), 6);
    assert_eq!(v[0]["verified"], true);
    assert_eq!(v[1]["verified"], false);
    assert_eq!(v[2]["verified"], true);
    assert!(v[3]["error"].as_str().unwrap().starts_with("line 4"));
    assert!(v[4]["error"].as_str().unwrap().contains("`response`"));
    assert!(
        v[5]["error"].as_str().unwrap().contains("gsm8k"),
        "lists the known verifiers"
    );
    assert!(
        text(&out.stderr).contains("3 scored, 3 bad lines"),
        "{}",
        text(&out.stderr)
    );
    // Tülu 3's rule compares strings: 18.0 is not 18.
    let out = rlvr(&["verify", "--input", input.to_str().unwrap(), "--mode", "tulu3"]);
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["verified"], false);
    assert_eq!(
        rlvr(&["verify", "--input", "/nonexistent.jsonl"]).status.code(),
        Some(2)
    );

    // A plug-in verifier from the command line, and a line of invalid UTF-8 among good ones.
    let mut bytes = br#"{"dataset": "contains", "response": "so: Paris", "ground_truth": "paris"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"dataset\": \"gsm8k\", \"response\": \"\xff\xfe\"}\n");
    bytes.extend_from_slice(br#"{"dataset": "gsm8k", "response": "7", "ground_truth": "7"}"#);
    std::fs::write(&input, bytes).unwrap();
    let plugin = concat!(
        "contains=python3,",
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/plugin_verifier.py"
    );
    let out = rlvr(&["verify", "--input", input.to_str().unwrap(), "--plugin", plugin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["verified"], true);
    assert!(v[1]["error"].as_str().unwrap().contains("UTF-8"), "{}", v[1]);
    assert_eq!(v[2]["verified"], true);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_reports_ifeval_strict_and_loose_results_and_accuracies() {
    let dir = tmp("verify-ifeval");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    let lines = [
        // Followed loosely only: the chatty first line has a comma.
        r#"{"dataset": "google_ifeval", "prompt": "p", "response": "Sure, here:\nno commas at all", "instruction_id_list": ["punctuation:no_comma", "keywords:existence"], "kwargs": [{}, {"keywords": ["commas"]}]}"#,
        r#"{"dataset": "google_ifeval", "response": "x", "instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a", "frequency": 2}]}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = rlvr(&["verify", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["strict"], serde_json::json!([false, true]));
    assert_eq!(v[0]["loose"], serde_json::json!([true, true]));
    assert_eq!(v[0]["verified"], false);
    assert_eq!(
        v[1]["error"],
        "line 2: instruction 0: keywords:frequency needs `relation`"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "IFEval: prompt-level strict 0.0000 loose 1.0000, instruction-level strict 0.5000 loose 1.0000"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_tiny_arith_pipeline_hands_the_model_on_and_the_rlvr_stage_runs_its_actor_graph() {
    let dir = tmp("pipeline");
    let out_dir = dir.join("run");
    let out = rlvr(&[
        "run",
        "tiny-arith",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "train.max_steps=40",
        "--set",
        "train.per_device_train_batch_size=8",
        "--set",
        "rlvr.train.max_steps=4",
        "--set",
        "rlvr.rlvr.num_evals=2",
        "--set",
        "rlvr.rlvr.local_rollout_batch_size=4",
        "--set",
        "rlvr.rlvr.local_mini_batch_size=32",
        "--set",
        "rlvr.rollout.workers=2",
        "--set",
        "rlvr.data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 24, split = \"test\"}]",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&out_dir);
    let sft_evals: Vec<f64> = m
        .iter()
        .filter(|r| r["stage"] == "sft")
        .filter_map(|r| r.get("eval_loss")?.as_f64())
        .collect();
    assert_eq!(sft_evals.len(), 2);
    assert!(
        sft_evals[1] < 0.75 * sft_evals[0],
        "assistant-turn loss must fall: {sft_evals:?}"
    );
    assert!(out_dir.join("tiny-arith-sft/model.safetensors").is_file());

    // RLVR: a held-out evaluation at the start, after step 2 and at the end; one record per step.
    let evals: Vec<(u64, f64)> = m
        .iter()
        .filter(|r| r["stage"] == "rlvr")
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("eval_accuracy")?.as_f64()?)))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 2, 4]);
    assert!(evals.iter().all(|e| (0.0..=1.0).contains(&e.1)));
    let steps: Vec<&serde_json::Value> = m
        .iter()
        .filter(|r| r["stage"] == "rlvr" && r.get("reward_mean").is_some())
        .collect();
    assert_eq!(steps.len(), 4);
    for (i, r) in steps.iter().enumerate() {
        assert_eq!(r["step"], i as u64 + 1);
        assert_eq!(
            r["policy_version"],
            i as u64 + 1,
            "one optimiser step per RL step"
        );
        assert_eq!(
            r["policy_version_gap"], 0,
            "synchronous mode never trains on stale samples"
        );
        assert!(r["accuracy_per_verifier"]["gsm8k"].is_number());
        assert!(r["response_length"].as_f64().unwrap() > 0.0);
    }
    assert!(out_dir.join("tiny-arith-rlvr/model.safetensors").is_file());
    assert!(out_dir.join("tiny-arith-rlvr/tokenizer.json").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Per-step DPO records of a run: (step, loss, accuracy).
fn dpo_steps(dir: &Path) -> Vec<(u64, f64, f64)> {
    metrics(dir)
        .iter()
        .filter(|r| r["stage"] == "dpo" && r.get("loss").is_some())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?, r["accuracy"].as_f64()?)))
        .collect()
}

const DPO_SMALL: [&str; 12] = [
    "--set",
    "train.max_steps=10",
    "--set",
    "train.per_device_train_batch_size=8",
    "--set",
    "train.logging_steps=1",
    "--set",
    "train.checkpointing_steps=5",
    "--set",
    "data.mix=[{dataset = \"builtin:arith-prefs\", amount = 256}]",
    "--set",
    "data.eval_mix=[{dataset = \"builtin:arith-prefs\", amount = 256, split = \"test\"}, {dataset = \"builtin:arith-rlvr\", amount = 16, split = \"test\"}]",
];

#[test]
fn preference_stages_dpo_resumes_exactly_and_a_reward_model_seeds_ppo() {
    // Pretrain -> SFT -> DPO, small.
    let dir = tmp("dpo");
    let pipeline = dir.join("pipeline");
    let mut args = vec![
        "run",
        "tiny-arith-prefs",
        "--out",
        pipeline.to_str().unwrap(),
        "--set",
        "train.max_steps=30",
        "--set",
        "train.per_device_train_batch_size=8",
    ];
    // The same settings scoped to the pipeline's DPO stage.
    let scoped: Vec<String> = DPO_SMALL.chunks(2).map(|p| format!("dpo.{}", p[1])).collect();
    for s in &scoped {
        args.extend(["--set", s.as_str()]);
    }
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&pipeline);
    let evals: Vec<&Value> = m
        .iter()
        .filter(|r| r["stage"] == "dpo" && r.get("eval_loss").is_some())
        .collect();
    assert_eq!(evals.len(), 2, "held-out evaluation at the start and the end");
    // The reference is the starting policy: the loss starts at ln 2 with no reward margin.
    let start = evals[0]["eval_loss"].as_f64().unwrap();
    assert!((start - 2f64.ln()).abs() < 1e-4, "{start}");
    assert!(evals[0]["eval_reward_margin"].as_f64().unwrap().abs() < 1e-4);
    assert!(evals[1]["eval_loss"].as_f64().unwrap() < start);
    assert!(evals[1]["eval_reward_margin"].as_f64().unwrap() > 0.0);
    for e in &evals {
        assert!((0.0..=1.0).contains(&e["eval_accuracy"].as_f64().unwrap()), "{e}");
    }
    let steps = dpo_steps(&pipeline);
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(pipeline.join("tiny-arith-dpo/model.safetensors").is_file());

    // The stage alone from the SFT model (`model.name_or_path`) repeats the pipeline's steps;
    // killed after its step-5 checkpoint and resumed, it repeats them again.
    let sft = pipeline.join("tiny-arith-sft");
    let init = format!("model.name_or_path={}", sft.display());
    let alone = dir.join("alone");
    let mut args = vec![
        "run",
        "tiny-arith-dpo",
        "--out",
        alone.to_str().unwrap(),
        "--set",
        &init,
    ];
    args.extend(DPO_SMALL);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(dpo_steps(&alone), steps);

    let cut = dir.join("cut");
    let mut args = vec![
        "run",
        "tiny-arith-dpo",
        "--out",
        cut.to_str().unwrap(),
        "--set",
        &init,
    ];
    args.extend(DPO_SMALL);
    kill_then_resume("tiny-arith-dpo", &args, &cut, 5);
    assert_eq!(dpo_steps(&cut), steps);

    // A reward model from the same SFT model, then PPO with its value model started from it.
    let rm = dir.join("rm");
    let mut args = vec![
        "run",
        "tiny-arith-rm",
        "--out",
        rm.to_str().unwrap(),
        "--set",
        &init,
    ];
    args.extend(&DPO_SMALL[..10]); // all but the answer-accuracy prompts
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&rm);
    let evals: Vec<f64> = m
        .iter()
        .filter(|r| r["stage"] == "rm")
        .filter_map(|r| r.get("eval_loss")?.as_f64())
        .collect();
    assert_eq!(evals.len(), 2);
    assert!(
        (evals[0] - 2f64.ln()).abs() < 1e-6,
        "a zero head scores every answer 0"
    );
    assert!(evals[1] < evals[0], "{evals:?}");
    let config = std::fs::read_to_string(rm.join("tiny-arith-rm/config.json")).unwrap();
    assert!(config.contains("LlamaForSequenceClassification"), "{config}");
    let reward_model = format!("rlvr.reward_model_path={}", rm.join("tiny-arith-rm").display());
    let ppo = dir.join("ppo");
    let mut args = vec![
        "run",
        "tiny-arith-rlvr",
        "--out",
        ppo.to_str().unwrap(),
        "--set",
        &init,
    ];
    args.extend(&RL_SMALL[2..]);
    args.extend([
        "--set",
        "train.max_steps=2",
        "--set",
        "rlvr.algorithm=ppo",
        "--set",
        "rlvr.num_samples_per_prompt=1",
        "--set",
        "rlvr.kl_estimator=kl1",
        "--set",
        &reward_model,
    ]);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rl_rewards(&ppo).len(), 2);

    // GRPO whose reward adds the reward model's score (halved) to the verifiers'.
    let learned = dir.join("learned");
    let mut args = vec![
        "run",
        "tiny-arith-rlvr",
        "--out",
        learned.to_str().unwrap(),
        "--set",
        &init,
    ];
    args.extend(&RL_SMALL[2..]);
    args.extend([
        "--set",
        "train.max_steps=2",
        "--set",
        "rlvr.reward_model_multiplier=0.5",
        "--set",
        &reward_model,
    ]);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let steps: Vec<Value> = metrics(&learned)
        .into_iter()
        .filter(|r| r["stage"] == "rlvr" && r.get("reward_mean").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for r in &steps {
        let components = r["reward_components"].as_object().unwrap();
        let names: Vec<&str> = components.keys().map(String::as_str).collect();
        assert_eq!(names, ["non_stop", "reward_model", "verifiable"], "{r}");
        let sum: f64 = components.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - r["reward_mean"].as_f64().unwrap()).abs() < 1e-9, "{r}");
        assert_ne!(
            components["reward_model"].as_f64().unwrap(),
            0.0,
            "the trained model scores: {r}"
        );
    }
    // Dynamic sampling filters before the learner scores: refused with a reward model.
    args.extend(["--set", "rlvr.algorithm=dapo"]);
    assert_refused(&rlvr(&args), "rlvr.reward_model_multiplier");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Preference rows in open-instruct's format: `chosen` and `rejected` conversations that share
/// the user turn; the chosen answer adds right, the rejected one multiplies.
fn preference_rows(n: u64, offset: u64) -> String {
    (0..n)
        .map(|i| {
            let (a, b) = ((i * 7 + offset) % 50, (i * 13 + offset) % 40);
            let conv = |answer: String| {
                serde_json::json!([
                    {"role": "user", "content": format!("what is {a}+{b}?")},
                    {"role": "assistant", "content": answer},
                ])
            };
            serde_json::json!({
                "prompt": format!("what is {a}+{b}?"),
                "chosen": conv(format!("{a}+{b}={}. #### {}", a + b, a + b)),
                "rejected": conv(format!("{a}*{b}={}. #### {}", a * b, a * b)),
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn mixes_of_files_and_built_in_sets_drive_packed_sft_dpo_from_pairs_and_gsm8k_prompts() {
    let dir = tmp("mixes");
    std::fs::create_dir_all(&dir).unwrap();
    let (train, prefs, held_out) = (
        dir.join("train.jsonl"),
        dir.join("prefs.jsonl"),
        dir.join("held-out.jsonl"),
    );
    std::fs::write(&train, sft_rows(120, 0)).unwrap();
    std::fs::write(&prefs, preference_rows(64, 0)).unwrap();
    std::fs::write(&held_out, preference_rows(16, 500)).unwrap();

    // SFT on a file and a built-in set together, packed into rows of 256 (examples are ~60
    // and ~100 tokens).
    let sft = dir.join("sft");
    let mix = format!(
        "data.mix=[{{dataset = \"{}\", amount = 0.5}}, {{dataset = \"builtin:arith-chat\", amount = 100}}]",
        train.display()
    );
    let mut args = vec![
        "run",
        "tiny-arith-sft",
        "--out",
        sft.to_str().unwrap(),
        "--set",
        &mix,
        "--set",
        "data.packing=true",
        "--set",
        "data.max_seq_length=256",
        "--set",
        "train.max_steps=4",
    ];
    args.extend(SMALL);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("(local, 120 rows): 60 rows") && err.contains("(packing on)"),
        "{err}"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(sft.join("data/tiny-arith-sft.json")).unwrap())
            .unwrap();
    let taken: Vec<u64> = record["data.mix"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["taken"].as_u64().unwrap())
        .collect();
    assert_eq!(taken, [60, 100]);
    assert_eq!(record["packing"], true);
    let padding = &record["padding"];
    assert!(
        padding["packed"].as_f64().unwrap() < padding["unpacked"].as_f64().unwrap(),
        "{padding}"
    );

    // DPO from the SFT model on preference rows, held-out pairs from another file.
    let dpo = dir.join("dpo");
    let init = format!("model.name_or_path={}", sft.join("tiny-arith-sft").display());
    let mix = format!("data.mix=[{{dataset = \"{}\", amount = 1.0}}]", prefs.display());
    let eval_mix = format!(
        "data.eval_mix=[{{dataset = \"{}\", amount = 16}}]",
        held_out.display()
    );
    let args = [
        "run",
        "tiny-arith-dpo",
        "--out",
        dpo.to_str().unwrap(),
        "--set",
        &init,
        "--set",
        &mix,
        "--set",
        &eval_mix,
        "--set",
        "train.max_steps=4",
        "--set",
        "train.per_device_train_batch_size=8",
    ];
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let evals: Vec<f64> = metrics(&dpo)
        .iter()
        .filter(|r| r["stage"] == "dpo")
        .filter_map(|r| r.get("eval_loss")?.as_f64())
        .collect();
    assert_eq!(evals.len(), 2, "held-out pairs scored at the start and the end");
    assert!((evals[0] - 2f64.ln()).abs() < 1e-4, "{evals:?}");
    assert!(dpo.join("data/tiny-arith-dpo.json").is_file());

    // GSM8K rows as they were released become eight-shot RL prompts.
    let gsm8k = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/eval/gsm8k-test.jsonl");
    let mix = format!("data.mix=[{{dataset = \"{}\", amount = 16}}]", gsm8k.display());
    let out = rlvr(&[
        "data",
        "inspect",
        "tiny-rlvr-sample",
        "--set",
        &mix,
        "--examples",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    // (The tiny recipe's character tokenizer has no capitals: `<unk>`.)
    assert!(
        o.contains("prompts: 16") && o.contains("uestion: <unk>here are 15 trees in the grove."),
        "{o}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_zero3_spawns_ranks_that_hold_half_and_match_the_unsharded_loss() {
    let common = [
        "--ranks",
        "2",
        "--batch",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "1",
        "--shape-from",
        "tiny-arith-sft",
    ];
    let run = |extra: &[&str]| -> Value {
        let mut args = vec!["bench", "zero3"];
        args.extend(common);
        args.extend(extra);
        let out = rlvr(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(text(&out.stdout).trim()).unwrap()
    };
    let base = run(&["--unsharded"]);
    let sharded = run(&[]);
    assert_eq!(sharded["world_size"], 2);
    let (a, b) = (base["loss"].as_f64().unwrap(), sharded["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    let share = sharded["held_share"].as_f64().unwrap();
    assert!((0.5..0.51).contains(&share), "{share}");
    assert_eq!(sharded["ranks"].as_array().unwrap().len(), 2);
    assert_eq!(sharded["unsharded_bytes"], base["held_bytes"]);
}

/// `(step, loss)` of an LM stage's logged steps, and its held-out losses.
fn lm_curve(dir: &Path) -> (Vec<(u64, f64)>, Vec<f64>) {
    let m = metrics(dir);
    let steps = m
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("loss")?.as_f64()?)))
        .collect();
    let evals = m.iter().filter_map(|r| r.get("eval_loss")?.as_f64()).collect();
    (steps, evals)
}

/// Run `recipe` with `common` settings twice: over two local ZeRO-3 ranks into `two` (the log
/// must say so), and in one process accumulating two micro-batches into `one`.
fn run_on_two_ranks_and_accumulating(recipe: &str, two: &Path, one: &Path, common: &[&str]) {
    let runs = [
        (two, vec!["learner.world_size=2", "launch.zero_stage=3"]),
        (one, vec!["train.gradient_accumulation_steps=2"]),
    ];
    for (out_dir, settings) in runs {
        let mut args = vec!["run", recipe, "--out", out_dir.to_str().unwrap()];
        for setting in settings {
            args.extend(["--set", setting]);
        }
        args.extend(common);
        let out = rlvr(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if out_dir == two {
            assert!(
                text(&out.stderr).contains("ZeRO-3 over 2 ranks"),
                "{}",
                text(&out.stderr)
            );
        }
    }
}

/// A launcher that starts three ranks for an RLVR recipe whose learners take two GPUs: ranks 0
/// and 1 learn over ZeRO-3, rank 2 runs the rollout engine, as a worker node of rank 0's run
/// (rank 0 holds no engine: every step's rollout pool is one remote worker, none local). All
/// three exit when the stage ends. Every policy version reaches the engine over the run's weight
/// group (a c10d group of rank 0 and the engine rank), as tensors into its host memory, sent
/// while the learner ranks gathered them unit by unit; each step's rollouts come from the
/// learner's weights of that step (f32: the log-probs agree). A secret an earlier run left in
/// the directory does not stop it: the engine rank, started first, reads the secret only once
/// the weight group has met, after rank 0 wrote this run's. A plain worker node that joins
/// with this run's secret is turned away (it could never get the weights) and the run goes on
/// with its engine rank.
#[test]
fn launched_ranks_past_an_rlvr_stage_s_learners_run_its_rollout_engines() {
    let dir = tmp("launch-engines");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join(".engine-ranks.cookie");
    let earlier = "a secret of an earlier run";
    std::fs::write(&secret, earlier).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Six steps, not two: time for the plain worker node to start and join.
    let (port, steps) = (free_port(), 6);
    let max_steps = format!("train.max_steps={steps}");
    let ranks = spawn_engine_ranks(&dir, port, 3, 2, 3, 1, &["--set", &max_steps]);
    wait_until("this run's secret", || {
        let now = read(&secret);
        !now.is_empty() && now != earlier
    });
    let join = format!("127.0.0.1:{}", port + 1);
    let mut plain = spawn_logged(
        &[
            "worker",
            "--join",
            &join,
            "--role",
            "rollout",
            "--cookie-file",
            secret.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &dir.join("plain.log"),
    );
    let logs = wait_ranks(ranks);
    let _ = plain.kill();
    let _ = plain.wait();
    let (engine, lead) = (&logs[2], &logs[0]);
    assert!(
        lead.contains("1 launched rank(s) run the rollout engines"),
        "{lead}"
    );
    assert!(
        lead.contains("not adopted: this run's ZeRO-3 learner sends its weights only to the run's launched engine ranks"),
        "the plain worker node: {lead}\n{}",
        read(&dir.join("plain.log"))
    );
    assert!(lead.contains("ZeRO-3 over 2 ranks"), "{lead}");
    assert!(!lead.contains("refused node"), "the stale secret: {lead}");
    assert!(engine.contains("rank 2 runs a rollout engine"), "{engine}");
    let metrics: Vec<Value> = step_metrics(&dir);
    assert_eq!(metrics.len(), steps);
    for version in 0..=steps {
        let arrived = format!("policy version {version} arrived over the run's weight group");
        let line = engine.lines().find(|l| l.contains(&arrived));
        assert!(
            line.is_some_and(|l| l.contains("into host memory")),
            "{arrived}: {engine}"
        );
    }
    for r in &metrics {
        let mismatch = r["mismatch_max_abs_logprob_diff"].as_f64().unwrap();
        assert!(
            mismatch < 1e-4,
            "the engine's log-probs against the learner's: {r}"
        );
        let rollout = &r["workers"]["rollout"];
        assert_eq!(
            (rollout["live"].as_u64(), rollout["remote"].as_u64()),
            (Some(1), Some(1)),
            "{r}"
        );
    }
    assert!(dir.join("tiny-arith-rlvr/model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `world` launched ranks of `tiny-arith-rlvr` (`learners` over ZeRO-3 at `zero_stage`, the
/// rest engine ranks, split into engines of `tensor_parallel` ranks; 2 steps, then the `extra`
/// arguments), started at once, the last rank first: each rank's log, in rank order.
fn launch_engine_ranks(
    dir: &Path,
    world: usize,
    learners: usize,
    zero_stage: u8,
    tensor_parallel: usize,
    extra: &[&str],
) -> Vec<String> {
    let port = free_port();
    wait_ranks(spawn_engine_ranks(
        dir,
        port,
        world,
        learners,
        zero_stage,
        tensor_parallel,
        extra,
    ))
}

/// [`launch_engine_ranks`]' ranks, started (the launcher's `MASTER_PORT` is `port`).
fn spawn_engine_ranks(
    dir: &Path,
    port: u16,
    world: usize,
    learners: usize,
    zero_stage: u8,
    tensor_parallel: usize,
    extra: &[&str],
) -> Vec<std::process::Child> {
    let port = port.to_string();
    let mut ranks: Vec<std::process::Child> = (0..world)
        .rev()
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_rlvr"))
                .args(["run", "tiny-arith-rlvr", "--out", dir.to_str().unwrap()])
                .args(["--set", &format!("launch.gpus={world}")])
                .args([
                    "--set",
                    &format!("rlvr.actor_num_gpus_per_node=[{learners}]"),
                    "--set",
                    &format!("launch.zero_stage={zero_stage}"),
                ])
                .args([
                    "--set",
                    &format!("rlvr.vllm_tensor_parallel_size={tensor_parallel}"),
                    "--set",
                    &format!("rlvr.vllm_num_engines={}", (world - learners) / tensor_parallel),
                ])
                .args([
                    "--set",
                    "train.max_steps=2",
                    "--set",
                    "rlvr.local_rollout_batch_size=4",
                ])
                .args(["--set", "rlvr.local_mini_batch_size=32"])
                .args([
                    "--set",
                    "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
                ])
                .args(extra)
                .env("OMP_NUM_THREADS", "1")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    ranks.reverse();
    ranks
}

/// Each rank's log, in rank order, once all have succeeded.
fn wait_ranks(ranks: Vec<std::process::Child>) -> Vec<String> {
    ranks
        .into_iter()
        .enumerate()
        .map(|(rank, child)| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "rank {rank}: {}", text(&out.stderr));
            text(&out.stderr)
        })
        .collect()
}

/// One learner rank, unsharded, and two engine ranks: rank 0 sends each version from its
/// snapshot on its device, tensors into each engine rank's buckets (not host bytes), to both
/// engines in one broadcast; every step's rollouts come from that step's weights.
#[test]
fn an_unsharded_learner_sends_each_version_to_two_engine_ranks_device_to_device() {
    let dir = tmp("launch-tensors");
    std::fs::create_dir_all(&dir).unwrap();
    let logs = launch_engine_ranks(&dir, 3, 1, 0, 1, &[]);
    for engine in &logs[1..] {
        for version in 1..=2 {
            let arrived = format!("policy version {version} arrived over the run's weight group");
            let line = engine.lines().find(|l| l.contains(&arrived));
            assert!(
                line.is_some_and(|l| l.contains("device to device")),
                "{arrived}: {engine}"
            );
        }
    }
    let steps: Vec<Value> = step_metrics(&dir);
    assert_eq!(steps.len(), 2);
    for r in &steps {
        assert_eq!(r["workers"]["rollout"]["remote"].as_u64(), Some(2), "{r}");
        let mismatch = r["mismatch_max_abs_logprob_diff"].as_f64().unwrap();
        assert!(
            mismatch < 1e-4,
            "the engines' log-probs against the learner's: {r}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With in-flight updates (`rlvr.max_staleness`) a launched engine rank takes each new version
/// from its weight group between decode steps, and rollouts stay within the bound; so does an
/// engine split over two ranks, whose leader tells its follower at each of those points whether
/// weights follow (the ranks would deadlock or part ways otherwise).
#[test]
fn launched_engine_ranks_take_new_weights_in_flight_within_max_staleness() {
    let dir = tmp("launch-in-flight");
    let in_flight = [
        "--set",
        "rlvr.async_mode=true",
        "--set",
        "rlvr.max_staleness=2",
        "--set",
        "train.max_steps=4",
    ];
    let fed = "takes newer weights from the run's weight group between decode steps";
    // (world, learners, tensor parallel): one whole engine rank, one engine of two ranks.
    for (world, learners, tp) in [(2, 1, 1), (3, 1, 2)] {
        let run = dir.join(format!("tp{tp}"));
        std::fs::create_dir_all(&run).unwrap();
        let logs = launch_engine_ranks(&run, world, learners, 0, tp, &in_flight);
        assert!(logs[learners].contains(fed), "{}", logs[learners]);
        let steps: Vec<Value> = step_metrics(&run);
        assert_eq!(steps.len(), 4);
        for r in &steps {
            assert!(r["policy_version_gap"].as_u64().unwrap() <= 2, "{r}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_engine_split_over_two_tensor_parallel_ranks_rolls_out_what_one_engine_rank_does() {
    let dir = tmp("launch-tp");
    let rewards = |dir: &Path| -> Vec<Value> {
        let steps: Vec<Value> = step_metrics(dir);
        for r in &steps {
            // One remote rollout worker: the engine rank, or the tensor-parallel group's leader.
            assert_eq!(r["workers"]["rollout"]["remote"].as_u64(), Some(1), "{r}");
        }
        // What the step's completions decide: their rewards and lengths, what the learner made
        // of their tokens (entropy), and the loss, which also reads the engine's log-probs.
        steps
            .iter()
            .map(|r| serde_json::json!([r["reward_mean"], r["response_length"], r["entropy"], r["loss"]]))
            .collect()
    };
    let (one, split) = (dir.join("one"), dir.join("split"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&split).unwrap();
    // The weights go from the learners' ZeRO-3 shards (gathered) to the engine's tensor-parallel
    // shards (each engine rank's slice).
    launch_engine_ranks(&one, 3, 2, 3, 1, &[]);
    let logs = launch_engine_ranks(&split, 4, 2, 3, 2, &[]);
    assert!(
        logs[3].contains("holds part 2 of 2 of a tensor-parallel rollout engine"),
        "{}",
        logs[3]
    );
    let (want, got) = (rewards(&one), rewards(&split));
    assert_eq!(want.len(), 2);
    assert!(want.iter().all(|w| w[2].as_f64().unwrap() > 0.0), "{want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g[0], &g[1], &g[2]),
            (&w[0], &w[1], &w[2]),
            "the split engine drew the whole engine's completions"
        );
        // The split engine sums each layer in another order: its log-probs, and so the loss,
        // differ in the last bits.
        let (lg, lw) = (g[3].as_f64().unwrap(), w[3].as_f64().unwrap());
        assert!((lg - lw).abs() < 1e-6, "loss {lg} against {lw}");
    }
    // Three engine ranks do not make two engines of two: refused before anything runs.
    let odd = dir.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["run", "tiny-arith-rlvr", "--out", odd.to_str().unwrap()])
        .args([
            "--set",
            "launch.gpus=4",
            "--set",
            "rlvr.actor_num_gpus_per_node=[1]",
        ])
        .args([
            "--set",
            "rlvr.vllm_num_engines=2",
            "--set",
            "rlvr.vllm_tensor_parallel_size=2",
        ])
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", free_port().to_string())
        .env("RANK", "3")
        .env("WORLD_SIZE", "4")
        .env("LOCAL_RANK", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("3 engine ranks do not make engines"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ranks_started_by_a_launcher_as_torchrun_and_srun_start_them_take_the_steps_of_local_ranks() {
    let dir = tmp("launched");
    let common = [
        "--set",
        "train.max_steps=3",
        "--set",
        "train.per_device_train_batch_size=8",
        "--set",
        "train.logging_steps=1",
        "--set",
        "launch.zero_stage=3",
    ];
    let local = dir.join("local");
    let mut args = vec!["run", "tiny-arith-sft", "--out", local.to_str().unwrap()];
    args.extend(["--set", "learner.world_size=2"]);
    args.extend(common);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = lm_curve(&local);
    // torchrun's variables, then Slurm's (MASTER_ADDR and MASTER_PORT from the job script).
    for (name, vars) in [
        ("torchrun", ["RANK", "WORLD_SIZE", "LOCAL_RANK"]),
        ("srun", ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"]),
    ] {
        let launched = dir.join(name);
        let port = free_port().to_string();
        let ranks: Vec<std::process::Child> = (0..2)
            .map(|rank| {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlvr"));
                cmd.args(["run", "tiny-arith-sft", "--out", launched.to_str().unwrap()])
                    .args(common)
                    .env("OMP_NUM_THREADS", "1")
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env(vars[0], rank.to_string())
                    .env(vars[1], "2")
                    .env(vars[2], rank.to_string())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for child in ranks {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        }
        let got = lm_curve(&launched);
        assert_eq!(got.0.len(), 3, "{name}: {got:?}");
        for ((step, a), (_, b)) in got.0.iter().zip(&want.0) {
            assert!((a - b).abs() < 1e-6, "{name} step {step}: {a} vs {b}");
        }
        assert!(launched.join("tiny-arith-sft/model.safetensors").is_file());
    }
    // A recipe asking for another number of ranks than the launcher started is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args([
            "run",
            "tiny-arith-sft",
            "--out",
            dir.join("bad").to_str().unwrap(),
        ])
        .args(["--set", "learner.world_size=4"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "1")
        .output()
        .unwrap();
    assert_refused(&out, "learner.world_size = 4");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sft_over_two_zero3_ranks_takes_the_steps_of_one_process_accumulating_two_micro_batches() {
    let dir = tmp("ranks");
    let (two, one) = (dir.join("two"), dir.join("one"));
    let common = [
        "--set",
        "train.max_steps=4",
        "--set",
        "train.per_device_train_batch_size=8",
        "--set",
        "train.logging_steps=1",
        "--set",
        "train.checkpointing_steps=2",
    ];
    run_on_two_ranks_and_accumulating("tiny-arith-sft", &two, &one, &common);
    let ((a, ea), (b, eb)) = (lm_curve(&two), lm_curve(&one));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(ea.len(), 2, "{ea:?}");
    assert_eq!(
        a.iter().map(|s| s.0).collect::<Vec<_>>(),
        b.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for ((step, la), (_, lb)) in a.iter().zip(&b) {
        assert!((la - lb).abs() < 1e-4, "step {step}: {la} vs {lb}");
    }
    for (x, y) in ea.iter().zip(&eb) {
        assert!((x - y).abs() < 1e-4, "held-out loss {x} vs {y}");
    }
    assert!(two.join("tiny-arith-sft/model.safetensors").is_file());
    let step2 = two.join("checkpoints/tiny-arith-sft/step-2");
    for f in [
        "optimizer-rank0-of-2.safetensors",
        "optimizer-rank1-of-2.safetensors",
    ] {
        assert!(step2.join(f).is_file(), "{f}");
    }
    // Without its final model the stage resumes from step 2 on both ranks and ends the same.
    std::fs::remove_dir_all(two.join("tiny-arith-sft")).unwrap();
    let out = rlvr(&[
        "run",
        "tiny-arith-sft",
        "--out",
        two.to_str().unwrap(),
        "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resuming tiny-arith-sft"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(lm_curve(&two), (a, ea));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dpo_and_reward_model_stages_over_two_zero3_ranks_take_the_steps_of_one_process_accumulating() {
    let dir = tmp("dpo-ranks");
    let (two, one) = (dir.join("two"), dir.join("one"));
    let common = [
        "--set",
        "train.max_steps=4",
        "--set",
        "train.per_device_train_batch_size=4",
        "--set",
        "train.logging_steps=1",
        "--set",
        "data.mix=[{dataset = \"builtin:arith-prefs\", amount = 64}]",
        "--set",
        "data.eval_mix=[{dataset = \"builtin:arith-prefs\", amount = 32, split = \"test\"}, {dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
    ];
    run_on_two_ranks_and_accumulating("tiny-arith-dpo", &two, &one, &common);
    let (a, b) = (dpo_steps(&two), dpo_steps(&one));
    assert_eq!(a.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    for ((step, la, aa), (_, lb, ab)) in a.iter().zip(&b) {
        assert!(
            (la - lb).abs() < 1e-4 && (aa - ab).abs() < 1e-9,
            "step {step}: {la} vs {lb}"
        );
    }
    let evals = |dir: &Path| -> Vec<(f64, f64)> {
        metrics(dir)
            .iter()
            .filter_map(|r| Some((r.get("eval_loss")?.as_f64()?, r.get("eval_accuracy")?.as_f64()?)))
            .collect()
    };
    let (ea, eb) = (evals(&two), evals(&one));
    assert_eq!(ea.len(), 2, "{ea:?}");
    for ((la, acc_a), (lb, acc_b)) in ea.iter().zip(&eb) {
        assert!(
            (la - lb).abs() < 1e-4 && acc_a == acc_b,
            "held out {la} {acc_a} vs {lb} {acc_b}"
        );
    }
    assert!(two.join("tiny-arith-dpo/model.safetensors").is_file());
    // A reward-model stage too: the value model sharded, its steps those of one process.
    let (two, one) = (dir.join("rm-two"), dir.join("rm-one"));
    run_on_two_ranks_and_accumulating("tiny-arith-rm", &two, &one, &common);
    let rm_steps = |dir: &Path| -> Vec<(u64, f64, f64)> {
        metrics(dir)
            .iter()
            .filter(|r| r["stage"] == "rm" && r.get("loss").is_some())
            .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?, r["accuracy"].as_f64()?)))
            .collect()
    };
    let (a, b) = (rm_steps(&two), rm_steps(&one));
    assert_eq!(
        a.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{a:?}"
    );
    for ((step, la, aa), (_, lb, ab)) in a.iter().zip(&b) {
        assert!(
            (la - lb).abs() < 1e-4 && (aa - ab).abs() < 1e-9,
            "reward model step {step}: {la} vs {lb}"
        );
    }
    assert!(two.join("tiny-arith-rm/model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_weight_sync_reaches_a_rollout_engine_in_another_process() {
    let out = rlvr(&[
        "bench",
        "weight-sync",
        "--ranks",
        "3",
        "--repeats",
        "1",
        "--bucket-mib",
        "1",
        "--shape-from",
        "tiny-arith-sft",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(report["checksums_equal"], true);
    assert_eq!(report["world_size"], 3);
    // 96,576 f32 parameters: 386,304 bytes in one 1 MiB bucket, host-staged and on the device.
    assert_eq!(report["bytes"], 386_304);
    assert_eq!(
        (report["buckets"].as_u64(), report["resident_buckets"].as_u64()),
        (Some(1), Some(1))
    );
    // Alone, rank 0 broadcasts to itself and loads its own engine (NCCL on a one-GPU machine).
    let out = rlvr(&[
        "bench",
        "weight-sync",
        "--ranks",
        "1",
        "--repeats",
        "1",
        "--shape-from",
        "tiny-arith-sft",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (report["world_size"].as_u64(), report["checksums_equal"].as_bool()),
        (Some(1), Some(true))
    );
}

#[test]
fn bench_generate_splits_an_engine_over_tensor_parallel_ranks_drawing_the_whole_engine_s_tokens() {
    let out = rlvr(&[
        "bench",
        "generate",
        "--tensor-parallel",
        "2",
        "--shape-from",
        "tiny-arith-sft",
        "--batch",
        "3",
        "--samples",
        "2",
        "--new-tokens",
        "8",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (report["tensor_parallel"].as_u64(), report["completions"].as_u64()),
        (Some(2), Some(6))
    );
    assert_eq!(report["same_tokens_greedy"], 6, "{report}");
    assert!(
        report["logprob_max_abs_diff_vs_whole"].as_f64().unwrap() < 1e-5,
        "{report}"
    );
    assert!(
        report["logprob_max_abs_diff_vs_learner"].as_f64().unwrap() < 1e-5,
        "{report}"
    );
    // SmolLM2-135M's 9 heads do not split over 2 ranks: refused, naming the field.
    let out = rlvr(&[
        "bench",
        "generate",
        "--tensor-parallel",
        "2",
        "--batch",
        "1",
        "--new-tokens",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("num_attention_heads"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_weight_sync_over_the_cluster_reaches_a_worker_node_that_then_generates_as_a_local_engine() {
    let out = rlvr(&[
        "bench",
        "weight-sync",
        "--over",
        "cluster",
        "--repeats",
        "2",
        "--bucket-mib",
        "0",
        "--shape-from",
        "tiny-arith-sft",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = rlvr(&[
        "bench",
        "weight-sync",
        "--over",
        "cluster",
        "--repeats",
        "2",
        "--bucket-mib",
        "1",
        "--shape-from",
        "tiny-arith-sft",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(report["completions_equal"], true);
    assert_eq!(report["transport"], "ractor_cluster");
    assert_eq!(report["version"], 2);
    assert_eq!(report["bytes"], 386_304);
    assert_eq!(report["buckets"], 1);
}

#[test]
fn hub_data_sets_and_tokenizers_come_from_the_standard_cache_offline() {
    let dir = tmp("hub");
    let cache = dir.join("hub");
    // A data set and a model as huggingface_hub caches them: refs/main names the snapshot.
    let place = |repo: &str, commit: &str| {
        let root = cache.join(repo);
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), commit).unwrap();
        let snapshot = root.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        snapshot
    };
    let data = place("datasets--someorg--sums", "c0ffee");
    std::fs::create_dir_all(data.join("data")).unwrap();
    std::fs::write(data.join("data/train-00000-of-00001.jsonl"), sft_rows(40, 0)).unwrap();
    let model = place("models--someorg--tiny", "beef");
    rlvr_data::Tokenizer::builtin_chars().save(&model).unwrap();
    let offline = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rlvr"))
            .args(args)
            .env("OMP_NUM_THREADS", "1")
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let mix = "data.mix=[{dataset = \"someorg/sums\", amount = 0.5}]";
    let out = offline(&[
        "data",
        "inspect",
        "tiny-arith-sft",
        "--set",
        mix,
        "--set",
        "model.name_or_path=someorg/tiny",
        "--examples",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(
        o.contains("resolved: someorg/sums [train] (hub): 20 rows of 40"),
        "{o}"
    );
    assert!(!o.contains("tokenizer: the built-in one"), "{o}");
    // And a run trains on it, recording the commit it read.
    let run = dir.join("run");
    let out = offline(&[
        "run",
        "tiny-arith-sft",
        "--out",
        run.to_str().unwrap(),
        "--set",
        mix,
        "--set",
        "train.max_steps=2",
        "--set",
        "train.per_device_train_batch_size=4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("data/tiny-arith-sft.json")).unwrap())
            .unwrap();
    assert_eq!(record["data.mix"]["entries"][0]["commit"], "c0ffee");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Start `rlvr ARGS` in the background, its standard error into `log`.
fn spawn_logged(args: &[&str], log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn worker_nodes_join_a_run_a_wrong_secret_is_refused_and_a_killed_node_loses_no_prompt() {
    let dir = tmp("cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let (cookie, wrong) = (dir.join("cookie"), dir.join("wrong"));
    std::fs::write(&cookie, format!("secret-{}\n", std::process::id())).unwrap();
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    for file in [&cookie, &wrong] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = dir.join("run");
    let steps = 60;
    // Every rollout and verifier worker is on another node: the run itself holds none.
    let mut run = spawn_logged(
        &[
            "run",
            "tiny-arith-rlvr",
            "--out",
            out.to_str().unwrap(),
            "--listen",
            &addr,
            "--cookie-file",
            cookie.to_str().unwrap(),
            "--set",
            &format!("train.max_steps={steps}"),
            "--set",
            "rollout.workers=0",
            "--set",
            "rollout.verifier_workers=0",
            "--set",
            "rlvr.local_rollout_batch_size=4",
            "--set",
            "rlvr.local_mini_batch_size=32",
            "--set",
            "rlvr.num_evals=3",
            "--set",
            "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
        ],
        &dir.join("run.log"),
    );
    let worker = |role: &str, n: &str, secret: &Path, log: &str| {
        let args = [
            "worker",
            "--join",
            &addr,
            "--role",
            role,
            "--workers",
            n,
            "--cookie-file",
            secret.to_str().unwrap(),
            "--device",
            "cpu",
        ];
        spawn_logged(&args, &dir.join(log))
    };

    let bad = rlvr(&["worker", "--join", &addr, "--role", "rollout", "--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("expected cpu, cuda or cuda:N"),
        "{}",
        text(&bad.stderr)
    );
    // A node with another secret is refused, and both sides say so.
    let refused = worker("rollout", "1", &wrong, "wrong.log").wait().unwrap();
    assert!(!refused.success());
    assert!(
        read(&dir.join("wrong.log")).contains("refused this node"),
        "{}",
        read(&dir.join("wrong.log"))
    );
    assert!(
        read(&dir.join("run.log")).contains("refused node"),
        "{}",
        read(&dir.join("run.log"))
    );

    let mut first = worker("rollout", "1", &cookie, "rollout-1.log");
    let mut verifiers = worker("verifier", "2", &cookie, "verifier.log");
    let logged_steps = |out: &Path| {
        read(&out.join("metrics.jsonl"))
            .lines()
            .filter(|l| l.contains("\"reward_mean\""))
            .count()
    };
    wait_until("step 3", || logged_steps(&out) >= 3);
    // A second rollout node joins mid-run and takes jobs; then the first is killed.
    let mut second = worker("rollout", "1", &cookie, "rollout-2.log");
    wait_until("the second rollout node", || {
        read(&dir.join("run.log"))
            .matches("rlvr.rollout: remote worker")
            .count()
            >= 2
    });
    wait_until("a step on two rollout nodes", || {
        read(&out.join("metrics.jsonl")).lines().any(|l| {
            let r: Value = serde_json::from_str(l).unwrap_or_default();
            r["workers"]["rollout"]["remote"] == 2
        })
    });
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        logged_steps(&out) < steps,
        "the run ended before the kill; make it longer"
    );

    assert!(run.wait().unwrap().success(), "{}", read(&dir.join("run.log")));
    for node in [&mut second, &mut verifiers] {
        assert!(
            node.wait().unwrap().success(),
            "a worker node failed when the run ended"
        );
    }
    let log = read(&dir.join("run.log"));
    assert!(log.contains("left"), "{log}");

    // Every step took 4 new prompts, each scored for all 8 samples, and the pools finished
    // exactly one job per prompt group dealt (a rollout job holds an engine's batch of 256
    // sequences: 1 per step of 32 and 1 per evaluation of 8 prompts; one verify job per prompt)
    // — none lost to the kill, none counted twice.
    let records = metrics(&out);
    let mut rows = std::collections::HashSet::new();
    let mut evals_before = 0;
    let mut remote_counts = Vec::new();
    for r in &records {
        if r.get("eval_accuracy").is_some() {
            evals_before += 1;
            continue;
        }
        let Some(step) = r.get("reward_mean").and(r["step"].as_u64()) else {
            continue;
        };
        assert_eq!(r["verdicts"], 32, "step {step}");
        for row in r["prompt_rows"].as_array().unwrap() {
            assert!(rows.insert(row.as_u64().unwrap()), "prompt {row} dealt twice");
        }
        let w = &r["workers"];
        assert_eq!(w["rollout"]["jobs_done"], step + evals_before, "step {step}");
        assert_eq!(
            w["verifier"]["jobs_done"],
            4 * step + 8 * evals_before,
            "step {step}"
        );
        assert_eq!(w["verifier"]["remote"], 2);
        remote_counts.push(w["rollout"]["remote"].as_u64().unwrap());
    }
    assert_eq!(rows.len(), 4 * steps);
    assert!(remote_counts.contains(&2), "{remote_counts:?}");
    assert_eq!(remote_counts.last(), Some(&1), "the killed node's worker is gone");
    std::fs::remove_dir_all(&dir).unwrap();
}
