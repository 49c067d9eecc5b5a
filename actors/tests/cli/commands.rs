//! Listings, resolved recipes, plans, help, exit codes, refusals, and `rlvr verify`.

use super::*;

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
