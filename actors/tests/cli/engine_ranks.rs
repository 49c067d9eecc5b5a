//! Launched RLVR ranks past the learners that run its rollout engines: the run's weight group,
//! in-flight updates, and engines split over tensor-parallel ranks.

use super::*;

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
