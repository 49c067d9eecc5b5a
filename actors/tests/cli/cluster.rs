//! Worker nodes joining a run over `ractor_cluster`, and weights reaching engines in other
//! processes.

use super::*;

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
