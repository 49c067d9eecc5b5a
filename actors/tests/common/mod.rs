//! Helpers the `rlvr` binary's tests share: running it, reading a run's metrics, killing and
//! resuming runs, and the short RLVR run most RL tests start from.
//!
//! Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A port free on 127.0.0.1 now, with the seven after it (for a rendezvous, whose run opens
/// more stores at `MASTER_PORT + 1`, `+ 2`, ..., or a run's `--listen`). Taken below the
/// kernel's range for outgoing connections (32768 and up on Linux), so that none of the many
/// connections the tests open meanwhile takes one of them; a base where one of the eight is
/// bound already is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test binary starts at its own place in 20000..32000, each call 8 ports on.
    let start = 20_000 + (std::process::id() % 1_500) as u16 * 8;
    for _ in 0..1_500 {
        let offset = NEXT.fetch_add(8, Ordering::Relaxed) % 12_000;
        let base = 20_000 + (start - 20_000 + offset) % 12_000;
        let free = (base..base + 8).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no 8 consecutive free ports in 20000..32000")
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Assert that `out` is a usage error (exit 2) whose message contains `needle`.
pub fn assert_refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(needle),
        "{needle:?} missing in:\n{}",
        text(&out.stderr)
    );
}

pub fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The records of an RL stage's steps in `dir/metrics.jsonl` (those with a reward).
pub fn step_metrics(dir: &Path) -> Vec<Value> {
    metrics(dir)
        .into_iter()
        .filter(|r| r.get("reward_mean").is_some())
        .collect()
}

/// Start `rlvr ARGS` and kill it as soon as `checkpoint` is complete (its trainer_state.json,
/// written last, exists).
pub fn kill_after(args: &[&str], checkpoint: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = checkpoint.join("trainer_state.json");
    let start = Instant::now();
    while !done.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Run `args` (a run of `recipe` into `cut`), kill it once its step-`step` checkpoint is
/// complete and before the stage ends, then `--resume` it to the end.
pub fn kill_then_resume(recipe: &str, args: &[&str], cut: &Path, step: u64) {
    kill_after(args, &cut.join(format!("checkpoints/{recipe}/step-{step}")));
    for done in ["model.safetensors", "trainer_state.json"] {
        assert!(!cut.join(recipe).join(done).exists(), "killed before the end");
    }
    let out = rlvr(&["run", recipe, "--out", cut.to_str().unwrap(), "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("resuming {recipe}")),
        "{}",
        text(&out.stderr)
    );
}

/// `tiny-arith-rlvr` for `steps` steps of 4 prompts x 8 responses (one optimiser step each),
/// with held-out accuracy on 8 prompts, and `extra` overrides.
pub fn short_rlvr(dir: &Path, steps: u64, extra: &[&str]) -> Output {
    let max_steps = format!("train.max_steps={steps}");
    let mut args = vec![
        "run",
        "tiny-arith-rlvr",
        "--out",
        dir.to_str().unwrap(),
        "--overwrite",
        "--set",
        &max_steps,
        "--set",
        "rlvr.local_rollout_batch_size=4",
        "--set",
        "rlvr.local_mini_batch_size=32",
        "--set",
        "rlvr.num_evals=1",
        "--set",
        "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
    ];
    args.extend(extra);
    rlvr(&args)
}

/// A short RLVR run from a fresh tiny model, checkpointing every 2 steps.
pub const RL_SMALL: [&str; 10] = [
    "--set",
    "train.max_steps=8",
    "--set",
    "rlvr.save_freq=2",
    "--set",
    "rlvr.local_rollout_batch_size=4",
    "--set",
    "rlvr.local_mini_batch_size=32",
    "--set",
    "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
];

pub fn rl_rewards(dir: &Path) -> Vec<(u64, f64)> {
    metrics(dir)
        .iter()
        .filter(|r| r["stage"] == "rlvr")
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("reward_mean")?.as_f64()?)))
        .collect()
}
