//! Exit codes that mean what they say: every subcommand given one bad input exits 2 with a
//! message naming it (never 0 after reporting it unusable), and the warnings a CPU user needs —
//! bf16 training on the CPU, a first RL step whose answers all ran past the length limit.

use std::process::{Command, Output};

fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_subcommand_exits_2_on_bad_input_and_names_it() {
    let out = std::env::temp_dir().join(format!("rlvr-usage-{}", std::process::id()));
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["recipes", "extra"], "extra"),
        (vec!["show", "tulu4-8b"], "tulu4-8b"),
        (vec!["plan", "tulu3-8b", "--gpus", "0"], "--gpus"),
        (vec!["run", "tiny-arith", "--set", "train.nonsense=1"], "nonsense"),
        (
            vec!["verify", "--input", "/nonexistent.jsonl"],
            "/nonexistent.jsonl",
        ),
        (
            vec!["generate", "--model", "/nonexistent-model", "--prompt", "x"],
            "/nonexistent-model",
        ),
        (
            vec!["eval", "--model", "/nonexistent-model", "--out", out],
            "/nonexistent-model",
        ),
        (
            vec!["convert", "/nonexistent.gguf", "--out", out],
            "/nonexistent.gguf",
        ),
        (vec!["bench", "generate", "--batch", "0"], "--batch"),
        (
            vec!["bench", "load", "--model", "/nonexistent-model"],
            "/nonexistent-model",
        ),
        (vec!["worker", "--join", "nowhere", "--role", "rollout"], "cookie"),
        (
            vec![
                "data",
                "inspect",
                "tiny-arith-sft",
                "--set",
                "model.name_or_path=/nonexistent-model",
            ],
            "/nonexistent-model",
        ),
    ];
    for (args, words) in cases {
        let o = rlvr(&args);
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains(words), "{args:?} should name `{words}`: {all}");
    }
}

/// A bf16 stage on the CPU says it is slow there; one whose learning rate and steps cannot
/// move most of its bf16 weights says that too (at a learning rate that can, it does not); an RL
/// step with no finished answer says so.
#[test]
fn a_slow_or_stalled_bf16_stage_and_an_rl_step_with_no_finished_answer_say_so() {
    let out = std::env::temp_dir().join(format!("rlvr-warn-{}", std::process::id()));
    let bf16_pretrain = |lr: &str| {
        let o = rlvr(&[
            "run",
            "tiny-arith-pretrain",
            "--out",
            out.to_str().unwrap(),
            "--overwrite",
            "--set",
            "model.dtype=bf16",
            "--set",
            "train.max_steps=2",
            "--set",
            lr,
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stderr)
    };
    let moving = bf16_pretrain("train.learning_rate=1e-3");
    assert!(
        moving.contains("bf16 on the CPU") && moving.contains("model.dtype=f32"),
        "{moving}"
    );
    assert!(!moving.contains("can change at all"), "{moving}");
    let stalled = bf16_pretrain("train.learning_rate=1e-7");
    assert!(
        stalled.contains("learning rate of 1e-7 for 2 optimiser step(s)")
            && stalled.contains("can change at all"),
        "{stalled}"
    );
    // One token per answer: none ends, the non-stop penalty scores all alike.
    let o = rlvr(&[
        "run",
        "tiny-arith-rlvr",
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
        "--set",
        "train.max_steps=1",
        "--set",
        "rlvr.response_length=1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("ran past rlvr.response_length = 1 tokens"), "{err}");
    let _ = std::fs::remove_dir_all(out);
}
