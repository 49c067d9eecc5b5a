//! The `rlvr` binary as a user meets it: listings, resolved recipes, plans, exit codes, and a
//! real run with metrics, checkpoints and an exact resume after the process is killed. One
//! test binary, a module per part of the product; what several of them use lies here.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod commands;
mod engine_ranks;
mod preference;
mod ranks;
mod stages;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

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

/// Per-step DPO records of a run: (step, loss, accuracy).
fn dpo_steps(dir: &Path) -> Vec<(u64, f64, f64)> {
    metrics(dir)
        .iter()
        .filter(|r| r["stage"] == "dpo" && r.get("loss").is_some())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?, r["accuracy"].as_f64()?)))
        .collect()
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
