//! `rlvr run RECIPE --rehearse`: the Tülu 3 8B pipeline (SFT -> reward model -> DPO -> RLVR
//! with PPO, the value model from the reward-model stage) through all four stages on local
//! ZeRO-3 ranks with a tiny model, and its report.

mod common;

use common::{rlvr, text, tmp};
use serde_json::Value;

#[test]
fn tulu3_8b_rehearses_through_all_four_stages_on_sharded_ranks() {
    let dir = tmp("rehearse-8b");
    // Two ranks stand for each stage's GPUs (this machine's share of a test run).
    let out = rlvr(&[
        "run",
        "tulu3-8b",
        "--rehearse",
        "--max-ranks",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // The shrinking is said, with how the global batch is kept.
    assert!(
        stderr.contains("64 GPUs on 8 node(s), 64 learning -> 2 local ranks (SHRUNK"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gradient accumulation x32 keeps the global batch"),
        "{stderr}"
    );
    // The RLVR stage's value model starts from the pipeline's reward-model stage.
    assert!(
        stderr.contains("reward model from this run's reward-model stage"),
        "{stderr}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rehearsal.json")).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["tulu3-8b-sft", "tulu3-8b-rm", "tulu3-8b-dpo", "tulu3-8b-rlvr"]
    );
    for s in stages {
        let (real, rehearsal) = (&s["real"], &s["rehearsal"]);
        assert_eq!(rehearsal["ranks"], 2, "{s}");
        assert_eq!(rehearsal["shrunk"], true, "{s}");
        // Both ranks reported, each holding half the model states, as ZeRO-3 says.
        assert_eq!(rehearsal["learner_ranks"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(rehearsal["agrees"], true, "{s}");
        assert!(real["plan_learner_gib_per_gpu"].as_f64().unwrap() > 1.0, "{s}");
        assert_eq!(real["fits"], true, "{s}");
    }
    assert!(stdout.contains("rehearsal of tulu3-8b in"), "{stdout}");
    for stage in names {
        assert!(dir.join(stage).join("model.safetensors").is_file(), "{stage}");
    }
    // Each stage checkpointed its shards, one file per rank.
    assert!(dir
        .join("checkpoints/tulu3-8b-rlvr/step-1/value-rank1-of-2.safetensors")
        .is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
