//! Single-process stages as a user runs them: SFT from files, data inspection, pretraining
//! that learns, an exact resume after a kill, the tiny pipeline, and the hub cache offline.

use super::*;

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
