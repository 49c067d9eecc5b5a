//! RL runs of the `rlvr` binary: plug-in verifiers in a recipe, real rows routed to three
//! verifiers, async and in-flight staleness, checkpoint rotation and TensorBoard, `rlvr ctl`,
//! every algorithm and correction, exact resumes of GRPO and PPO, and the reward's composition.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A plug-in verifier for the recipe test: the example's judgement, each answered request
/// logged (process, request id) to `answered`, and the first process to see 19 or more answers
/// logged dies before answering its request, once: creating the marker file exclusively picks
/// one process even when four read the log at once (an exact `== 19` could be skipped by two
/// processes reading 18 together).
const JUDGE: &str = r#"
import json, os, sys
sys.path.insert(0, os.environ["RLVR_EXAMPLES"])
from plugin_verifier import judge
log, marker = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    request = json.loads(line)
    answered = sum(1 for _ in open(log)) if os.path.exists(log) else 0
    if answered >= 19:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            os._exit(9)
        except FileExistsError:
            pass
    ok, reason = judge(request["response"], request["ground_truth"])
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {request['id']}\n")
    print(json.dumps({"id": request["id"], "verified": ok, "reason": reason}), flush=True)
"#;

#[test]
fn a_recipe_trains_on_a_python_plugin_verifier_with_four_processes_one_killed_mid_run() {
    let dir = tmp("plugin-recipe");
    std::fs::create_dir_all(&dir).unwrap();
    let (script, log, marker) = (dir.join("judge.py"), dir.join("answered"), dir.join("crashed"));
    std::fs::write(&script, JUDGE).unwrap();
    let recipe = dir.join("plugin.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"name = "plugin-rlvr"
extends = "tiny-rlvr-sample"

[train]
max_steps = 3

[rollout]
verifier_workers = 4

[rlvr]
dataset_verifiers = {{ gsm8k = "judge", ifeval = "judge", MATH = "judge" }}

[rlvr.verifiers.judge]
command = ["python3", {script:?}, {log:?}, {marker:?}]
workers = 4
timeout_s = 30
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ])
        .env(
            "RLVR_EXAMPLES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists(), "a plug-in process died mid-run");
    let m = metrics(&dir.join("run"));
    // Every verdict is the plug-in's: the held-out evaluations' per-verifier accuracy is keyed
    // by it alone.
    let evals: Vec<&Value> = m.iter().filter(|r| r.get("eval_accuracy").is_some()).collect();
    let per = evals[0]["eval_accuracy_per_verifier"].as_object().unwrap();
    assert_eq!(per.keys().collect::<Vec<_>>(), ["judge"]);
    // Counts: one answer per verdict the run used, none lost to the crash, none scored twice.
    let used: u64 = m.iter().filter_map(|r| r.get("verdicts")?.as_u64()).sum::<u64>()
        + evals
            .iter()
            .map(|r| r["eval_prompts"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(used, 3 * 8 * 4 + 2 * 24);
    let answered = std::fs::read_to_string(&log).unwrap();
    let ids: Vec<&str> = answered.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!((ids.len() as u64, unique.len() as u64), (used, used));
    // Four processes served the calls (the crashed one's retry on a fifth).
    let pids: std::collections::BTreeSet<&str> =
        answered.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(pids.len() >= 4, "{} processes answered", pids.len());
    // A plug-in that shadows a built-in name is refused, naming the key.
    let out = rlvr(&[
        "run",
        "tiny-rlvr-sample",
        "--out",
        dir.join("bad").to_str().unwrap(),
        "--set",
        "rlvr.verifiers.gsm8k.command=[\"true\"]",
    ]);
    assert_refused(&out, "rlvr.verifiers.gsm8k");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_rlvr_sample_routes_real_rows_to_three_verifiers_and_bad_rows_name_file_and_line() {
    let dir = tmp("rlvr-sample");
    let d = dir.to_str().unwrap();
    let out = rlvr(&[
        "run",
        "tiny-rlvr-sample",
        "--out",
        d,
        "--set",
        "train.max_steps=2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = metrics(&dir);
    let evals: Vec<&Value> = m.iter().filter(|r| r.get("eval_accuracy").is_some()).collect();
    assert_eq!(evals.len(), 2, "start and end");
    let per = evals[0]["eval_accuracy_per_verifier"].as_object().unwrap();
    let names: Vec<&str> = per.keys().map(String::as_str).collect();
    assert_eq!(names, ["gsm8k", "ifeval", "math"]);
    assert_eq!(evals[0]["eval_prompts"], 24);
    // `rlvr plot` draws the curve (with a line per verifier) again from the metrics, where the
    // run could draw one (it needs a TrueType font); a directory without metrics is refused.
    let again = dir.join("again.png");
    let out = rlvr(&["plot", d, "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    if dir.join("reward.png").is_file() {
        let png = std::fs::read(&again).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    assert_refused(&rlvr(&["plot", &format!("{d}/nowhere")]), "metrics.jsonl");

    let bad = dir.join("bad.jsonl");
    let row = r#"{"messages": [{"role": "user", "content": "what is 2+2?"}], "ground_truth": "4", "dataset": "gsm8k"}"#;
    std::fs::write(&bad, format!("{row}\n{{\"messages\": \n")).unwrap();
    let mix = format!("data.mix=[{{dataset = \"{}\", amount = 2}}]", bad.display());
    let out = rlvr(&[
        "run",
        "tiny-rlvr-sample",
        "--out",
        &format!("{d}/bad"),
        "--set",
        &mix,
    ]);
    assert_refused(&out, "bad.jsonl:2");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn async_rlvr_overlaps_the_next_rollout_within_a_one_version_staleness_bound() {
    let dir = tmp("async");
    let out = short_rlvr(&dir, 3, &["--set", "rlvr.async_mode=true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gaps: Vec<u64> = metrics(&dir)
        .iter()
        .filter_map(|r| r.get("policy_version_gap")?.as_u64())
        .collect();
    // Step 1 samples with the starting weights; each later step is generated while the
    // previous one learns, so it is at most one version behind (in practice exactly one).
    assert_eq!(gaps.len(), 3);
    assert_eq!(gaps[0], 0);
    assert!(gaps.iter().all(|&g| g <= 1), "{gaps:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The in-flight batch: a step of 64 prompts × 8 samples on engines of 512 sequences decodes
/// them together (`rollout_peak_sequences`), not in capped jobs; with `rollout.kv_cache_gib`
/// at 512 KiB (64 blocks of 16 positions of this model in f32, 8 KiB each) admission holds it
/// to at most 64 sequences at once (every sequence holds a block of its own) and the step
/// still completes.
#[test]
fn a_step_of_64_prompts_by_8_samples_decodes_every_sequence_at_once() {
    let dir = tmp("in-flight");
    let peak = |extra: &[&str]| {
        let mut args = vec![
            "--set",
            "rlvr.local_rollout_batch_size=64",
            "--set",
            "rlvr.local_mini_batch_size=512",
            "--set",
            "rollout.engine_batch=512",
        ];
        args.extend(extra);
        let out = short_rlvr(&dir, 1, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let peaks: Vec<u64> = metrics(&dir)
            .iter()
            .filter_map(|r| r.get("rollout_peak_sequences")?.as_u64())
            .collect();
        assert_eq!(peaks.len(), 1);
        peaks[0]
    };
    let unbounded = peak(&[]);
    assert!(unbounded >= 256, "at most {unbounded} sequences in flight");
    let bounded = peak(&["--set", "rollout.kv_cache_gib=0.00048828125"]);
    assert!((1..=64).contains(&bounded), "{bounded} sequences in 64 blocks");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rollouts_run_at_most_max_staleness_versions_behind_with_weights_taken_in_flight() {
    let dir = tmp("staleness");
    // The learner is the slow side here (its step takes longer than a rollout), so two later
    // steps are rolled out while one learns.
    let out = short_rlvr(
        &dir,
        6,
        &["--set", "rlvr.async_mode=true", "--set", "rlvr.max_staleness=2"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let steps: Vec<Value> = metrics(&dir)
        .into_iter()
        .filter(|r| r.get("policy_version_gap").is_some())
        .collect();
    assert_eq!(steps.len(), 6);
    let gaps: Vec<u64> = steps
        .iter()
        .map(|r| r["policy_version_gap"].as_u64().unwrap())
        .collect();
    assert_eq!(gaps[0], 0, "step 1 samples with the starting weights");
    assert!(gaps.iter().all(|&g| g <= 2), "{gaps:?}");
    // Every prompt is trained on once, in data order, whatever ran ahead.
    let rows: Vec<u64> = steps
        .iter()
        .flat_map(|r| {
            r["prompt_rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
        })
        .collect();
    let mut unique = rows.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((rows.len(), unique.len()), (24, 24), "{rows:?}");
    for r in &steps {
        assert_eq!(r["verdicts"], 32);
        assert!(r["completions_spanning_versions"].as_u64().unwrap() <= 32);
    }
    // A bound smaller than one step's versions is refused, naming the key.
    let out = short_rlvr(
        &dir,
        2,
        &[
            "--set",
            "rlvr.async_mode=true",
            "--set",
            "rlvr.max_staleness=1",
            "--set",
            "rlvr.num_epochs=2",
        ],
    );
    assert_refused(&out, "rlvr.max_staleness = 1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rlvr_checkpoints_rotate_keeping_the_newest_and_the_stage_logs_to_tensorboard() {
    let dir = tmp("rotate");
    let out = short_rlvr(
        &dir,
        7,
        &[
            "--set",
            "rlvr.save_freq=2",
            "--set",
            "train.keep_last_n_checkpoints=2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut kept: Vec<String> = std::fs::read_dir(dir.join("checkpoints/tiny-arith-rlvr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("step-"))
        .collect();
    kept.sort();
    // Saved at steps 2, 4 and 6; the two newest stay, each complete.
    assert_eq!(kept, ["step-4", "step-6"]);
    // Records carry the stage's name, and its numbers are in a TensorBoard event file too
    // (`scripts/tensorboard-check.sh` reads them back with TensorBoard's reader).
    assert!(metrics(&dir).iter().all(|r| r["stage_name"] == "tiny-arith-rlvr"));
    let events: Vec<_> = std::fs::read_dir(dir.join("tensorboard/tiny-arith-rlvr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("events.out.tfevents."), "{events:?}");
    for k in &kept {
        assert!(dir
            .join("checkpoints/tiny-arith-rlvr")
            .join(k)
            .join("trainer_state.json")
            .exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rlvr_ctl_reports_status_and_resizes_a_running_pool() {
    // A run directory too deep for a socket address: the socket lives elsewhere, named beside.
    let dir = tmp("ctl")
        .join("a-run-directory-deep-enough-that-its-control-socket-path-would-not-fit-a-unix-socket-address");
    assert!(dir.join("control.sock").as_os_str().len() > 108);
    let mut run = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args([
            "run",
            "tiny-arith-rlvr",
            "--out",
            dir.to_str().unwrap(),
            "--overwrite",
        ])
        .args([
            "--set",
            "train.max_steps=1000",
            "--set",
            "rlvr.local_rollout_batch_size=4",
        ])
        .args([
            "--set",
            "rlvr.local_mini_batch_size=32",
            "--set",
            "rlvr.num_evals=1",
        ])
        .args([
            "--set",
            "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ctl = |args: &[&str]| rlvr(&[&["ctl", "--run", dir.to_str().unwrap(), "--json"], args].concat());
    let status = || -> Option<Value> {
        let out = ctl(&["status"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let wait_for = |what: &str, f: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Some(s) = status().filter(|s| f(s)) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let first = wait_for("the first step", &|s| s["step"].as_u64() >= Some(1));
    assert_eq!(first["rollout"]["live"], 1, "{first}");
    let out = ctl(&["resize", "rollout", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let grown = wait_for("three rollout workers", &|s| s["rollout"]["live"] == 3);
    let out = ctl(&["resize", "verifier", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("one verifier worker", &|s| s["verifier"]["live"] == 1);
    // The steps after the resize ran with three rollout workers, as the run's own log says.
    let after = grown["step"].as_u64().unwrap() + 2;
    wait_for("two more steps", &|s| s["step"].as_u64() >= Some(after));
    let logged = metrics(&dir)
        .into_iter()
        .filter(|r| r["step"].as_u64() >= Some(after) && r.get("workers").is_some())
        .any(|r| r["workers"]["rollout"]["live"] == 3);
    assert!(logged, "no step logged three rollout workers");
    // A bad pool name is refused by the command line.
    let out = ctl(&["resize", "learner", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let socket = std::fs::read_to_string(dir.join("control.sock.path")).unwrap();
    assert!(socket.len() < 108, "{socket}");
    run.kill().unwrap();
    run.wait().unwrap();
    // Killed, the run could not remove its socket.
    std::fs::remove_file(&socket).unwrap();
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    // No run, no socket: the command says where it looked.
    let out = ctl(&["status"]);
    assert_refused(&out, "control.sock");
}

#[test]
fn every_algorithm_and_correction_trains_and_logs_the_train_rollout_mismatch() {
    let dir = tmp("algorithms");
    let runs: [&[&str]; 10] = [
        &["--set", "rlvr.algorithm=ppo"],
        &[
            "--set",
            "rlvr.algorithm=dapo",
            "--set",
            "rlvr.max_sampling_rounds=3",
            "--set",
            "rlvr.cliprange_high=0.28",
        ],
        &[
            "--set",
            "rlvr.overlong_buffer_length=8",
            "--set",
            "rlvr.mask_truncated_completions=true",
        ],
        &[
            "--set",
            "rlvr.algorithm=gspo",
            "--set",
            "rlvr.loss_aggregation=sequence",
            "--set",
            "train.gradient_checkpointing=true",
        ],
        &["--set", "rlvr.algorithm=cispo", "--set", "rlvr.cliprange_low=1.0"],
        &["--set", "rlvr.algorithm=rloo"],
        &[
            "--set",
            "rlvr.algorithm=reinforce_pp",
            "--set",
            "rlvr.kl_estimator=kl2",
        ],
        &["--set", "rlvr.algorithm=reinforce_pp_baseline"],
        &[
            "--set",
            "rlvr.async_mode=true",
            "--set",
            "rlvr.off_policy_correction=icepop",
        ],
        &[
            "--set",
            "rlvr.off_policy_correction=tis",
            "--set",
            "rlvr.top_p=0.9",
            "--set",
            "rlvr.top_k=20",
        ],
    ];
    for extra in runs {
        let out = short_rlvr(&dir, 2, extra);
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        let steps: Vec<Value> = step_metrics(&dir);
        assert_eq!(steps.len(), 2, "{extra:?}");
        let dapo = extra.contains(&"rlvr.algorithm=dapo");
        for r in &steps {
            if dapo {
                // The fresh model scores nothing, so every group scores alike: dynamic sampling
                // drops them all, round after round, and the step is skipped and says why.
                let sampling = &r["sampling"];
                assert_eq!(sampling["rounds"], 3, "{r}");
                assert_eq!(sampling["groups_dropped"], sampling["groups_sampled"], "{r}");
                assert!(r["skipped"].as_str().unwrap().contains("dynamic sampling"), "{r}");
                continue;
            }
            if let Some(why) = r.get("skipped") {
                // A fresh model rarely ends a response: with truncated ones left out, a step may
                // have nothing to learn from.
                let masking = extra.contains(&"rlvr.mask_truncated_completions=true");
                assert!(masking && why.as_str().unwrap().contains("cut"), "{extra:?}: {r}");
                continue;
            }
            let max = r["mismatch_max_abs_logprob_diff"].as_f64().unwrap();
            // On-policy, the learner's log-probs are the engine's (the parity gate); one step
            // behind, the second step's differ by a policy update.
            if !extra.contains(&"rlvr.async_mode=true") || r["policy_version_gap"] == 0 {
                assert!(max < 1e-4, "{extra:?}: {r}");
            }
            assert!(r["loss"].as_f64().unwrap().is_finite(), "{extra:?}: {r}");
        }
    }
    // Values rlvr does not run are refused, naming the key (and, for stop_token, the remedy).
    for (set, key) in [
        ("rlvr.kl_estimator=kl9", "rlvr.kl_estimator"),
        ("rlvr.top_p=0", "rlvr.top_p"),
        ("rlvr.is_bounds=[2.0, 1.0]", "rlvr.is_bounds"),
        ("rlvr.overlong_buffer_length=99", "rlvr.overlong_buffer_length"),
        (
            "rlvr.apply_verifiable_reward=false",
            "rlvr.apply_verifiable_reward",
        ),
        ("rlvr.reward_model_multiplier=1.0", "rlvr.reward_model_multiplier"),
        ("rlvr.stop_token=\"period\"", "rlvr.stop_strings"),
        ("rlvr.num_mini_batches=3", "rlvr.num_mini_batches"),
    ] {
        let out = short_rlvr(
            &dir,
            1,
            &["--set", set, "--set", "rlvr.off_policy_correction=icepop"],
        );
        assert_refused(&out, key);
    }
    let out = short_rlvr(&dir, 1, &["--set", "rlvr.algorithm=a2c"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("reinforce_pp_baseline"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rollout_engines_run_on_the_named_devices_in_bf16_and_the_mismatch_shows_its_rounding() {
    let dir = tmp("engines");
    let bf16 = [
        "--set",
        "rollout.workers=2",
        "--set",
        "rollout.devices=[\"cpu\", \"cpu\"]",
        "--set",
        "rollout.dtype=\"bf16\"",
    ];
    let out = short_rlvr(&dir, 2, &bf16);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let steps: Vec<Value> = step_metrics(&dir);
    assert_eq!(steps.len(), 2);
    for r in &steps {
        // The f32 learner scores bf16 engines' samples: their log-probs differ by bf16
        // rounding (in f32 they are equal within 1e-4, as the algorithms test checks), and no
        // more than rounding explains.
        let (max, mean) = (
            r["mismatch_max_abs_logprob_diff"].as_f64().unwrap(),
            r["mismatch_mean_abs_logprob_diff"].as_f64().unwrap(),
        );
        eprintln!("bf16 engines: train/rollout log-prob difference per token: max {max:.4}, mean {mean:.5}");
        assert!(max > 1e-4 && max < 0.5 && mean < 0.05, "{r}");
    }
    // A device name rlvr does not know, and a GPU where there is none, are refused, naming
    // the entry.
    let out = short_rlvr(&dir, 1, &["--set", "rollout.devices=[\"gpu0\"]"]);
    assert_refused(&out, "rollout.devices[0]");
    if !rlvr_learner::runtime::default_device().is_cuda() {
        let out = short_rlvr(&dir, 1, &["--set", "rollout.devices=[\"cpu\", \"cuda:1\"]"]);
        assert_refused(&out, "rollout.devices[1]");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run `tiny-arith-rlvr` with `extra` overrides into `dir`, once through and once killed after
/// its step-4 checkpoint and resumed; both must log the same rewards.
fn kill_and_resume(name: &str, extra: &[&str]) -> PathBuf {
    let full = tmp(&format!("{name}-full"));
    let mut args = vec!["run", "tiny-arith-rlvr", "--out", full.to_str().unwrap()];
    args.extend(RL_SMALL);
    args.extend(extra);
    let out = rlvr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let cut = tmp(&format!("{name}-cut"));
    let mut args = vec!["run", "tiny-arith-rlvr", "--out", cut.to_str().unwrap()];
    args.extend(RL_SMALL);
    args.extend(extra);
    kill_then_resume("tiny-arith-rlvr", &args, &cut, 4);

    let (a, b) = (rl_rewards(&full), rl_rewards(&cut));
    assert_eq!(
        a.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(a, b, "same prompts, seeds and weights after the resume");
    // The summary of the resumed run holds the evaluations logged before the cut.
    let evals = |d: &Path| {
        let state = std::fs::read_to_string(d.join("tiny-arith-rlvr/trainer_state.json")).unwrap();
        serde_json::from_str::<Value>(&state).unwrap()["evals"].clone()
    };
    assert_eq!(evals(&full), evals(&cut));
    assert!(evals(&cut).as_array().unwrap().len() >= 2, "{}", evals(&cut));
    // The resumed engines know which policy version the checkpoint's weights are.
    for r in metrics(&cut)
        .iter()
        .filter(|r| r.get("policy_version_gap").is_some())
    {
        assert_eq!(r["policy_version_gap"], 0, "synchronous steps: {r}");
    }
    assert!(cut.join("tiny-arith-rlvr/model.safetensors").is_file());
    std::fs::remove_dir_all(&cut).unwrap();
    full
}

#[test]
fn a_killed_grpo_run_resumes_from_its_checkpoint_to_the_same_rewards() {
    let full = kill_and_resume("grpo", &[]);
    std::fs::remove_dir_all(&full).unwrap();
}

#[test]
fn ppo_trains_a_value_model_takes_an_optimiser_step_per_epoch_and_resumes_exactly() {
    let ppo = [
        "--set",
        "rlvr.algorithm=ppo",
        "--set",
        "rlvr.num_samples_per_prompt=1",
        "--set",
        "rlvr.num_epochs=2",
        "--set",
        "rlvr.kl_estimator=kl1",
    ];
    let full = kill_and_resume("ppo", &ppo);
    assert!(full
        .join("checkpoints/tiny-arith-rlvr/step-2/value.safetensors")
        .is_file());
    let steps: Vec<Value> = metrics(&full)
        .into_iter()
        .filter(|r| r["stage"] == "rlvr" && r.get("reward_mean").is_some())
        .collect();
    for (i, r) in steps.iter().enumerate() {
        assert_eq!(
            r["policy_version"],
            2 * (i as u64 + 1),
            "one optimiser step per epoch"
        );
        assert!(r["vf_loss"].as_f64().unwrap() >= 0.0);
        assert!(r["kl"].is_number());
    }
    assert!(
        steps.iter().any(|r| r["vf_loss"].as_f64().unwrap() > 0.0),
        "the value model trains"
    );
    std::fs::remove_dir_all(&full).unwrap();
}

/// Check a step record's reward: the components that are on (and only those) add up to the
/// mean reward.
fn assert_components_add_up(record: &Value, on: &[&str]) {
    let components = record["reward_components"].as_object().unwrap();
    let names: Vec<&str> = components.keys().map(String::as_str).collect();
    assert_eq!(names, on, "{record}");
    let sum: f64 = components.values().map(|v| v.as_f64().unwrap()).sum();
    let mean = record["reward_mean"].as_f64().unwrap();
    assert!((sum - mean).abs() < 1e-9, "{sum} vs {mean}: {record}");
}

#[test]
fn the_reward_composes_a_weighted_sum_of_verifiers_a_format_reward_and_a_length_penalty() {
    let dir = tmp("compose");
    let out = short_rlvr(
        &dir,
        2,
        &[
            "--set",
            "rlvr.verifiers.both={sum = {gsm8k = 1.0, math = 0.5}}",
            "--set",
            "rlvr.dataset_verifiers={\"builtin:arith-rlvr\" = \"both\"}",
            "--set",
            "rlvr.apply_r1_style_format_reward=true",
            "--set",
            "rlvr.additive_format_reward=true",
            "--set",
            "rlvr.r1_style_format_reward=0.25",
            "--set",
            "rlvr.format_pattern='.*[0-9]'",
            "--set",
            "rlvr.length_penalty=0.5",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let steps: Vec<Value> = metrics(&dir)
        .into_iter()
        .filter(|r| r["stage"] == "rlvr" && r.get("reward_mean").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for r in &steps {
        assert_components_add_up(r, &["format", "length", "non_stop", "verifiable"]);
        let parts = r["verifier_parts"].as_object().unwrap();
        let gsm8k = parts["both.gsm8k"].as_f64().unwrap();
        let math = parts["both.math"].as_f64().unwrap();
        // verified_reward is 1: a stopped response's verifiable reward is its weighted sum, a
        // cut one's is replaced by the non-stop penalty.
        let verifiable = r["reward_components"]["verifiable"].as_f64().unwrap();
        assert!(verifiable <= gsm8k + math + 1e-9, "{r}");
        assert!((0.0..=0.5).contains(&math), "math's weight is 0.5: {r}");
        assert!(r["reward_per_verifier"]["both"].is_number(), "{r}");
        assert!(r["accuracy_per_verifier"]["both"].is_number(), "{r}");
        let format = r["reward_components"]["format"].as_f64().unwrap();
        let rate = r["format_rate"].as_f64().unwrap();
        assert!(format <= 0.25 * rate + 1e-9, "{r}");
        // The length penalty is 0.5 at the 32-token budget.
        let length = r["reward_components"]["length"].as_f64().unwrap();
        let tokens = r["response_length"].as_f64().unwrap();
        assert!(length <= 0.0 && length >= -0.5 * tokens / 32.0 - 1e-9, "{r}");
    }
    // What cannot run is refused, naming the key.
    for (set, key) in [
        (
            "rlvr.verifiers.both={sum = {nope = 1.0}}",
            "rlvr.verifiers.both.sum.nope",
        ),
        (
            "rlvr.verifiers.both={sum = {gsm8k = 1.0}, command = [\"x\"]}",
            "rlvr.verifiers.both",
        ),
        ("rlvr.format_pattern='('", "rlvr.format_pattern"),
        ("rlvr.length_penalty=-1", "rlvr.length_penalty"),
    ] {
        let out = short_rlvr(
            &dir,
            1,
            &["--set", set, "--set", "rlvr.apply_r1_style_format_reward=true"],
        );
        assert_refused(&out, key);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pipeline_hands_its_reward_model_to_ppo_not_as_the_next_policy() {
    let dir = tmp("rm-pipeline");
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("rm-ppo.toml");
    std::fs::write(
        &recipe,
        "name = \"rm-ppo\"\ndescription = \"a reward model, then PPO\"\n\
         pipeline = [\"tiny-arith-rm\", \"tiny-arith-rlvr\"]\n",
    )
    .unwrap();
    let run = dir.join("run");
    let out = rlvr(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "rm.train.max_steps=2",
        "--set",
        "rm.data.eval_mix=[{dataset = \"builtin:arith-prefs\", amount = 16, split = \"test\"}]",
        "--set",
        "rlvr.train.max_steps=1",
        "--set",
        "rlvr.rlvr.algorithm=ppo",
        "--set",
        "rlvr.rlvr.num_samples_per_prompt=1",
        "--set",
        "rlvr.rlvr.kl_estimator=kl1",
        "--set",
        "rlvr.rlvr.local_rollout_batch_size=4",
        "--set",
        "rlvr.rlvr.local_mini_batch_size=4",
        "--set",
        "rlvr.rlvr.num_evals=1",
        "--set",
        "rlvr.data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let rm = run.join("tiny-arith-rm");
    assert!(
        log.contains(&format!(
            "reward model from this run's reward-model stage, {}",
            rm.display()
        )),
        "{log}"
    );
    // The PPO stage's policy is its own (built from scratch here), not the reward model.
    assert!(run
        .join("checkpoints/tiny-arith-rlvr/init/model.safetensors")
        .is_file());
    let ppo = metrics(&run)
        .into_iter()
        .find(|r| r["stage"] == "rlvr" && r.get("vf_loss").is_some())
        .unwrap();
    assert!(ppo["vf_loss"].as_f64().unwrap().is_finite(), "{ppo}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each RL step's reward and learner metrics in `dir`'s `metrics.jsonl`.
fn rl_steps(dir: &Path) -> Vec<[f64; 5]> {
    metrics(dir)
        .iter()
        .filter(|r| r["stage"] == "rlvr" && r.get("grad_norm").is_some())
        .map(|r| ["reward_mean", "loss", "pg_loss", "vf_loss", "grad_norm"].map(|k| r[k].as_f64().unwrap()))
        .collect()
}

#[test]
fn an_rlvr_stage_over_two_learner_ranks_takes_the_steps_of_one() {
    let dir = tmp("rl-ranks");
    let small = [
        "--set",
        "rlvr.local_rollout_batch_size=4",
        "--set",
        "rlvr.local_mini_batch_size=16",
        "--set",
        "rlvr.num_mini_batches=2",
        "--set",
        "rlvr.local_rollout_forward_batch_size=4",
    ];
    let ppo = [
        "--set",
        "rlvr.algorithm=ppo",
        "--set",
        "rlvr.num_samples_per_prompt=1",
        "--set",
        "rlvr.kl_estimator=kl1",
        "--set",
        "rlvr.local_rollout_batch_size=32",
    ];
    // GRPO (the KL to a frozen reference in the loss) over ZeRO-3 shards; PPO (value model,
    // the proximal pass of an off-policy correction) over ZeRO-3 shards with the optimiser
    // offloaded; PPO with the KL in the reward over data-parallel ranks. Each against one rank. (Over ZeRO-3 the reference
    // runs on whole sequences rather than with the prompt shared, which rounds differently;
    // in the first step, whose verifiable rewards are all 0, the KL reward is that rounding
    // alone, which Adam's first step would amplify into different weights. The learner's
    // tests compare the sharded reference's log-probs directly.)
    let grpo: Vec<&str> = small
        .iter()
        .copied()
        .chain(["--set", "rlvr.save_freq=2"])
        .collect();
    let ppo: Vec<&str> = small.iter().copied().chain(ppo).collect();
    let sharded_ppo: Vec<&str> = ppo
        .iter()
        .copied()
        .chain(["--set", "rlvr.off_policy_correction=tis", "--set", "rlvr.beta=0"])
        .collect();
    let zero3 = ["--set", "launch.zero_stage=3"];
    let offloaded = [zero3.as_slice(), &["--set", "launch.offload_optimizer=true"]].concat();
    for (name, common, layout) in [
        ("zero3-grpo", &grpo, zero3.as_slice()),
        ("zero3-ppo-offload", &sharded_ppo, &offloaded),
        ("dp-ppo", &ppo, &["--set", "launch.zero_stage=0"]),
    ] {
        let one = dir.join(format!("{name}-1"));
        let out = short_rlvr(&one, 3, common);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want = rl_steps(&one);
        let two = dir.join(format!("{name}-2"));
        let mut args = common.clone();
        args.extend(["--set", "learner.world_size=2"]);
        args.extend(layout);
        let out = short_rlvr(&two, 3, &args);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        if name.ends_with("offload") {
            assert!(
                text(&out.stderr).contains("optimiser offloaded to host memory"),
                "{name}"
            );
        }
        let got = rl_steps(&two);
        assert_eq!(want.len(), 3, "{name}");
        assert!(
            want.iter().any(|s| s[4] > 1e-3),
            "{name}: some step must learn: {want:?}"
        );
        for (step, (w, g)) in want.iter().zip(&got).enumerate() {
            for (k, (a, b)) in w.iter().zip(g).enumerate() {
                assert!((a - b).abs() < 1e-5, "{name} step {step} metric {k}: {a} vs {b}");
            }
        }
        assert!(two.join("tiny-arith-rlvr/trainer_state.json").is_file(), "{name}");
        if name == "zero3-grpo" {
            // Both ranks resume from their shards of the step-2 checkpoint to the same step 3.
            let step2 = two.join("checkpoints/tiny-arith-rlvr/step-2");
            assert!(step2.join("optimizer-rank1-of-2.safetensors").is_file());
            std::fs::remove_file(two.join("tiny-arith-rlvr/trainer_state.json")).unwrap();
            let out = rlvr(&[
                "run",
                "tiny-arith-rlvr",
                "--out",
                two.to_str().unwrap(),
                "--resume",
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(text(&out.stderr).contains("resuming tiny-arith-rlvr"));
            assert_eq!(rl_steps(&two), got, "resumed");
        }
    }
    // An offloaded optimiser needs ZeRO-3 shards to offload.
    let out = short_rlvr(
        &dir.join("refused"),
        1,
        &["--set", "launch.offload_optimizer=true"],
    );
    assert_refused(&out, "launch.offload_optimizer");
    std::fs::remove_dir_all(&dir).unwrap();
}
