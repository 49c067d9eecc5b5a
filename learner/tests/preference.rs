//! Preference steps: with the reference taken from the starting weights the DPO loss starts at
//! ln 2 with zero rewards; sequence log-probabilities match a direct computation; a few steps
//! of each loss rank the chosen answers first.

use rlvr_core::{PreferenceBatch, IGNORE};
use rlvr_learner::model::Config;
use rlvr_learner::preference::{PreferenceLoss, PreferenceLossType};
use rlvr_learner::{Learner, LearnerConfig};
use tch::{Device, Kind, Tensor};

fn learner(lr: f64) -> Learner {
    let config: Config = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
        "tie_word_embeddings": true
    }))
    .unwrap();
    let cfg = LearnerConfig::constant(lr, Device::Cpu);
    Learner::new(&config, cfg, 3)
}

/// `(ids, labels)`: a 3-token prompt (no loss) then `answer`.
fn encode(prompt: &[i64], answer: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let ids: Vec<i64> = prompt.iter().chain(answer).copied().collect();
    let labels = ids
        .iter()
        .enumerate()
        .map(|(i, &t)| if i < prompt.len() { IGNORE } else { t })
        .collect();
    (ids, labels)
}

/// Four pairs: the chosen answer repeats the prompt's last token, the rejected one (of another
/// length) does not.
fn pairs(l: &Learner) -> PreferenceBatch {
    let pairs: Vec<_> = (0..4i64)
        .map(|k| {
            let prompt = [1, 5 + k, 10 + k];
            (
                encode(&prompt, &[10 + k, 10 + k, 2]),
                encode(&prompt, &[30 - k, 2]),
            )
        })
        .collect();
    let mut b = PreferenceBatch::from_pairs(&pairs, 0);
    let logps = l.sequence_logps(&b.batch).unwrap();
    b.reference_chosen = logps[..4].to_vec();
    b.reference_rejected = logps[4..].to_vec();
    b
}

#[test]
fn sequence_logps_sum_the_labelled_tokens() {
    let l = learner(0.0);
    let b = pairs(&l);
    let ids = Tensor::from_slice(&b.batch.input_ids[..b.batch.cols]).view([1, -1]);
    let lp = tch::no_grad(|| l.model().forward(&ids)).log_softmax(-1, Kind::Double);
    // Row 0: prompt of 3, answer of 3 labelled tokens at positions 3..6.
    let want: f64 = (3..6)
        .map(|p| lp.double_value(&[0, p - 1, b.batch.input_ids[p as usize]]))
        .sum();
    assert!(
        (b.reference_chosen[0] - want).abs() < 1e-4,
        "{} vs {want}",
        b.reference_chosen[0]
    );
}

#[test]
fn each_loss_learns_to_rank_the_chosen_answer_first() {
    for kind in [
        PreferenceLossType::Dpo,
        PreferenceLossType::DpoNorm,
        PreferenceLossType::Simpo,
    ] {
        let mut l = learner(3e-3);
        let b = pairs(&l);
        let loss = PreferenceLoss {
            kind,
            beta: 0.5,
            gamma_beta_ratio: 0.3,
        };
        let start = l.preference_eval(&b, &loss).unwrap();
        if loss.uses_reference() {
            assert!((start.loss - 2f64.ln()).abs() < 1e-5, "{kind:?}: {}", start.loss);
            assert!(start.chosen_reward.abs() < 1e-6 && start.rejected_reward.abs() < 1e-6);
        }
        let mut last = start;
        for _ in 0..30 {
            last = l.preference_step(std::slice::from_ref(&b), &loss).unwrap();
        }
        let end = l.preference_eval(&b, &loss).unwrap();
        assert_eq!(last.step, 30);
        assert!(
            end.loss < start.loss * 0.5,
            "{kind:?}: {} -> {}",
            start.loss,
            end.loss
        );
        assert_eq!(end.accuracy, 1.0, "{kind:?}");
        assert!(end.chosen_reward > end.rejected_reward, "{kind:?}");
        assert!(end.chosen_logp > start.chosen_logp, "{kind:?}");
    }
}

#[test]
fn malformed_pairs_are_errors() {
    let mut l = learner(1e-3);
    let mut b = pairs(&l);
    let dpo = PreferenceLoss {
        kind: PreferenceLossType::Dpo,
        beta: 0.1,
        gamma_beta_ratio: 0.0,
    };
    b.reference_rejected.pop();
    let err = l.preference_step(&[b], &dpo).unwrap_err().to_string();
    assert!(err.contains("4 pairs but 4 and 3 reference"), "{err}");
}

#[test]
fn a_reward_model_learns_the_preference_and_saves_as_a_sequence_classifier() {
    let mut l = learner(3e-3);
    let b = pairs(&l);
    let err = l.reward_step(std::slice::from_ref(&b)).unwrap_err().to_string();
    assert!(err.contains("no value model"), "{err}");
    l.attach_critic().unwrap();
    // A zero head scores every sequence 0: loss ln 2.
    let start = l.reward_eval(&b).unwrap();
    assert!((start.loss - 2f64.ln()).abs() < 1e-6, "{}", start.loss);
    // The same steps with gradient checkpointing.
    let mut checkpointed = learner(3e-3);
    checkpointed.attach_critic().unwrap();
    checkpointed.set_gradient_checkpointing(true);
    for step in 0..30 {
        let want = l.reward_step(std::slice::from_ref(&b)).unwrap();
        let got = checkpointed.reward_step(std::slice::from_ref(&b)).unwrap();
        assert!(
            (got.loss - want.loss).abs() < 1e-5 && (got.grad_norm - want.grad_norm).abs() < 1e-4,
            "checkpointed step {step}: {got:?} vs {want:?}"
        );
    }
    let end = l.reward_eval(&b).unwrap();
    assert!(end.loss < 0.5 * start.loss, "{} -> {}", start.loss, end.loss);
    assert_eq!(end.accuracy, 1.0);
    assert!(end.chosen_reward > end.rejected_reward);

    // Saved as LlamaForSequenceClassification, it loads as a value model with the same scores.
    let dir = std::env::temp_dir().join(format!("rlvr-rm-{}", std::process::id()));
    l.save_reward_model(&dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    let mut fresh = learner(3e-3);
    fresh.attach_critic_from(&dir).unwrap();
    let again = fresh.reward_eval(&b).unwrap();
    assert!((again.loss - end.loss).abs() < 1e-6 && again.accuracy == 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
