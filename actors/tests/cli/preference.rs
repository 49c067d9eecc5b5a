//! Preference stages (DPO, reward model, PPO seeded by it) and mixes of files and built-in sets.

use super::*;

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
