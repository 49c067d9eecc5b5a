//! Stages over several processes: ZeRO-3 ranks that take the steps of one process, and ranks
//! started by a launcher as torchrun and srun start them.

use super::*;

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
