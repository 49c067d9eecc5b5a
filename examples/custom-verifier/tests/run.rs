//! The example trains `tiny-arith-rlvr` with its own verifier: every held-out verdict is that
//! verifier's.

#[test]
fn the_example_trains_with_its_own_verifier() {
    let out = std::env::temp_dir().join(format!("rlvr-custom-verifier-{}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_custom-verifier"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r.get("eval_accuracy").is_some())
        .collect();
    assert_eq!(evals.len(), 2);
    for e in &evals {
        let per = e["eval_accuracy_per_verifier"].as_object().unwrap();
        assert_eq!(per.keys().collect::<Vec<_>>(), ["last_number"], "{e}");
    }
    let steps = metrics.lines().filter(|l| l.contains("\"reward_mean\"")).count();
    assert_eq!(steps, 3);
    std::fs::remove_dir_all(&out).unwrap();
}
