//! ZeRO-3 over a real Gloo group on 127.0.0.1: two ranks, each holding half of the parameters,
//! gradients and AdamW state and stepping on half of the batch, take the steps one unsharded
//! learner takes on the whole batch — language-model, DPO (also with gradient checkpointing on
//! one learner) and reward-model steps, the reward model saved whole; a sharded checkpoint resumes exactly; each rank
//! holds half the bytes; ranks load their shards from a checkpoint. RL is in `zero3_rl.rs`.

mod common;

use std::path::Path;

use rlvr_core::{PreferenceBatch, TrainBatch, WeightChunk, IGNORE};
use rlvr_learner::preference::{PreferenceLoss, PreferenceLossType};
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use tch::Device;

use common::{zero3_learner as learner, zero3_ranks as ranks};

/// Two halves of a batch: different sequences, lengths and label masks.
fn halves() -> [TrainBatch; 2] {
    let a: Vec<Vec<i64>> = (0..3)
        .map(|r| (0..12).map(|i| (r * 7 + i * 3) % 41).collect())
        .collect();
    let b: Vec<Vec<i64>> = (0..3)
        .map(|r| (0..9).map(|i| (r * 5 + i * 11 + 1) % 41).collect())
        .collect();
    [
        TrainBatch::from_sequences(&a, 0),
        TrainBatch::from_sequences(&b, 0),
    ]
}

const OBJECTIVE: Objective = Objective::Lm(Reduction::Mean);

fn assert_same(got: &[WeightChunk], want: &[WeightChunk], what: &str) {
    common::assert_same_weights(got, want, 1e-5, what);
}

#[test]
fn two_sharded_ranks_take_the_steps_of_one_learner_and_hold_half_the_bytes() {
    for tied in [false, true] {
        let [a, b] = halves();
        let mut one = learner(tied);
        let want: Vec<f64> = (0..5)
            .map(|_| one.train_step(&[a.clone(), b.clone()], OBJECTIVE).unwrap().loss)
            .collect();
        let want_eval = one.eval_loss(&a, OBJECTIVE).unwrap();
        let want_weights = one.export_weights(0).unwrap();

        let results = ranks(2, tied, |rank, mut l, group| {
            let total = l.num_params();
            l.set_zero3(group).unwrap();
            assert_eq!(l.num_params(), total);
            let half = if rank == 0 { &a } else { &b };
            let losses: Vec<f64> = (0..5)
                .map(|_| l.train_step(std::slice::from_ref(half), OBJECTIVE).unwrap().loss)
                .collect();
            let eval = l.eval_loss(&a, OBJECTIVE).unwrap();
            // Measured before exporting, which gathers the whole model.
            let memory = l.shard_memory().unwrap();
            (losses, eval, l.export_weights(0).unwrap(), memory)
        });
        // The largest unit after the embedding: a layer (two norms, attention, MLP).
        let layer = 4 * (2 * 32 + 32 * 32 * 2 + 2 * 32 * 16 + 3 * 32 * 64) as u64;
        for (rank, (losses, eval, weights, memory)) in results.iter().enumerate() {
            let (held, whole) = (&memory.held, &memory.unsharded);
            for (step, (got, want)) in losses.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() < 1e-5,
                    "tied {tied} rank {rank} step {step}: {got} vs {want}"
                );
            }
            assert!((eval - want_eval).abs() < 1e-5, "{eval} vs {want_eval}");
            common::assert_rank_export(
                rank,
                weights,
                &want_weights,
                1e-5,
                &format!("tied {tied} rank {rank}"),
            );
            // Parameters, gradients and two moments (f32): 16 bytes per parameter unsharded.
            assert_eq!(*whole, 16 * one.num_params() as u64, "{whole}");
            let share = *held as f64 / *whole as f64;
            eprintln!("tied {tied} rank {rank}: {held} of {whole} bytes ({share:.4})");
            assert!((0.5..0.51).contains(&share), "{share}");
            // During a pass: the embedding and one more unit at most.
            let embedding = 4 * 41 * 32;
            assert!(
                (embedding..=embedding + layer + 64).contains(&memory.peak_gathered),
                "{memory:?}"
            );
        }
    }
}

#[test]
fn a_sharded_checkpoint_resumes_exactly_on_the_same_world_size() {
    let [a, b] = halves();
    let dir = std::env::temp_dir().join(format!("rlvr-zero3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let step = |l: &mut Learner, rank: usize| {
        let half = if rank == 0 { &a } else { &b };
        l.train_step(std::slice::from_ref(half), OBJECTIVE).unwrap().loss
    };
    // Five steps straight; and three, a checkpoint, and two more from it in fresh learners.
    let straight = ranks(2, false, |rank, mut l, group| {
        l.set_zero3(group).unwrap();
        let losses: Vec<f64> = (0..5).map(|_| step(&mut l, rank)).collect();
        (losses, l.export_weights(0).unwrap())
    });
    ranks(2, false, |rank, mut l, group| {
        l.set_zero3(group).unwrap();
        for _ in 0..3 {
            step(&mut l, rank);
        }
        l.save_checkpoint(&dir).unwrap();
    });
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in [
        "model.safetensors",
        "optimizer-rank0-of-2.safetensors",
        "optimizer-rank1-of-2.safetensors",
    ] {
        assert!(files.iter().any(|n| n == f), "{f} in {files:?}");
    }
    let resumed = ranks(2, false, |rank, mut l, group| {
        l.set_zero3(group).unwrap();
        l.load_checkpoint(&dir, 3).unwrap();
        assert_eq!(l.steps_taken(), 3);
        let losses: Vec<f64> = (0..2).map(|_| step(&mut l, rank)).collect();
        (losses, l.export_weights(0).unwrap())
    });
    for (rank, ((want, want_w), (got, got_w))) in straight.iter().zip(&resumed).enumerate() {
        for (g, w) in got.iter().zip(&want[3..]) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        common::assert_rank_export(rank, got_w, want_w, 1e-5, "resumed");
    }
    assert!(!straight[0].1.is_empty());
    // The saved model is whole: an ordinary learner loads it.
    assert!(Learner::from_pretrained(Path::new(&dir), LearnerConfig::constant(1e-3, Device::Cpu)).is_ok());
    // Another world size is refused, naming the missing shard.
    let err = ranks(1, false, |_, mut l, group| {
        l.set_zero3(group).unwrap();
        l.load_checkpoint(&dir, 3).unwrap_err().to_string()
    });
    assert!(
        err[0].contains("optimizer-rank0-of-1") && err[0].contains("another world size"),
        "{}",
        err[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two micro-batches of two preference pairs each: a 3-token prompt (no loss), then answers of
/// different lengths.
fn pair_halves() -> [PreferenceBatch; 2] {
    let encode = |prompt: &[i64], answer: &[i64]| {
        let ids: Vec<i64> = prompt.iter().chain(answer).copied().collect();
        let labels = (0..ids.len())
            .map(|i| if i < prompt.len() { IGNORE } else { ids[i] })
            .collect();
        (ids, labels)
    };
    let half = |k0: i64| {
        let pairs: Vec<_> = (k0..k0 + 2)
            .map(|k| {
                let prompt = [1, 5 + k, 10 + k];
                (
                    encode(&prompt, &[10 + k, 10 + k, 2]),
                    encode(&prompt, &[30 - k, 7 + k, 9, 2]),
                )
            })
            .collect();
        PreferenceBatch::from_pairs(&pairs, 0)
    };
    [half(0), half(2)]
}

/// The reference pass, from the starting weights, into the batch.
fn with_reference(l: &Learner, mut b: PreferenceBatch) -> PreferenceBatch {
    let logps = l.sequence_logps(&b.batch).unwrap();
    let n = b.pairs();
    b.reference_chosen = logps[..n].to_vec();
    b.reference_rejected = logps[n..].to_vec();
    b
}

#[test]
fn two_sharded_ranks_and_gradient_checkpointing_take_the_dpo_steps_of_one_learner() {
    let dpo = PreferenceLoss {
        kind: PreferenceLossType::Dpo,
        beta: 0.5,
        gamma_beta_ratio: 0.0,
    };
    let [a, b] = pair_halves();
    let mut one = learner(false);
    let (a1, b1) = (with_reference(&one, a.clone()), with_reference(&one, b.clone()));
    let want: Vec<f64> = (0..5)
        .map(|_| one.preference_step(&[a1.clone(), b1.clone()], &dpo).unwrap().loss)
        .collect();
    let want_eval = one.preference_eval(&a1, &dpo).unwrap();
    let want_weights = one.export_weights(0).unwrap();

    // Gradient checkpointing takes the same steps.
    let mut checkpointed = learner(false);
    checkpointed.set_gradient_checkpointing(true);
    for (step, want) in want.iter().enumerate() {
        let got = checkpointed
            .preference_step(&[a1.clone(), b1.clone()], &dpo)
            .unwrap()
            .loss;
        assert!(
            (got - want).abs() < 1e-5,
            "checkpointed step {step}: {got} vs {want}"
        );
    }
    assert_same(
        &checkpointed.export_weights(0).unwrap(),
        &want_weights,
        "checkpointed DPO",
    );

    let results = ranks(2, false, |rank, mut l, group| {
        l.set_zero3(group).unwrap();
        let mine = with_reference(&l, if rank == 0 { a.clone() } else { b.clone() });
        let reference = (mine.reference_chosen.clone(), mine.reference_rejected.clone());
        let losses: Vec<f64> = (0..5)
            .map(|_| l.preference_step(std::slice::from_ref(&mine), &dpo).unwrap().loss)
            .collect();
        // Every rank evaluates the same pairs (a collective), with the starting reference.
        let eval = l.preference_eval(&a1, &dpo).unwrap();
        (reference, losses, eval, l.export_weights(0).unwrap())
    });
    for (rank, (reference, _, _, weights)) in results.iter().enumerate() {
        let want = if rank == 0 { &a1 } else { &b1 };
        for (got, want) in reference
            .0
            .iter()
            .chain(&reference.1)
            .zip(want.reference_chosen.iter().chain(&want.reference_rejected))
        {
            assert!((got - want).abs() < 1e-5, "rank {rank} reference {got} vs {want}");
        }
        common::assert_rank_export(rank, weights, &want_weights, 1e-5, &format!("DPO rank {rank}"));
    }
    // Every rank reports the mean over the ranks: one learner's mean over its micro-batches.
    for (rank, result) in results.iter().enumerate() {
        for (step, (got, want)) in result.1.iter().zip(&want).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "rank {rank} step {step}: {got} vs {want}"
            );
        }
    }
    assert!((results[0].2.loss - want_eval.loss).abs() < 1e-5);
    assert!((results[0].2.accuracy - want_eval.accuracy).abs() < 1e-12);
}

#[test]
fn two_sharded_ranks_take_the_reward_model_steps_of_one_learner_and_save_it_whole() {
    let dir = std::env::temp_dir().join(format!("rlvr-zero3-rm-{}", std::process::id()));
    let [a, b] = pair_halves();
    let mut one = learner(false);
    one.attach_critic().unwrap();
    let want: Vec<(f64, f64)> = (0..4)
        .map(|_| {
            let m = one.reward_step(&[a.clone(), b.clone()]).unwrap();
            (m.loss, m.grad_norm)
        })
        .collect();
    let want_eval = one.reward_eval(&a).unwrap();
    let results = ranks(2, false, |rank, mut l, group| {
        l.set_zero3(group).unwrap();
        l.attach_critic().unwrap();
        let half = if rank == 0 { &a } else { &b };
        let steps: Vec<(f64, f64)> = (0..4)
            .map(|_| {
                let m = l.reward_step(std::slice::from_ref(half)).unwrap();
                (m.loss, m.grad_norm)
            })
            .collect();
        let eval = l.reward_eval(&a).unwrap();
        l.save_reward_model(&dir).unwrap();
        (steps, eval)
    });
    for (rank, (steps, eval)) in results.iter().enumerate() {
        for (step, (got, want)) in steps.iter().zip(&want).enumerate() {
            assert!(
                (got.0 - want.0).abs() < 1e-5 && (got.1 - want.1).abs() < 1e-4,
                "rank {rank} step {step}: {got:?} vs {want:?}"
            );
        }
        assert!((eval.loss - want_eval.loss).abs() < 1e-5, "rank {rank} eval");
    }
    // Saved whole by rank 0: an unsharded learner loads it as a value model and scores the
    // pairs as the one learner does.
    let mut fresh = learner(false);
    fresh.attach_critic_from(&dir).unwrap();
    let again = fresh.reward_eval(&a).unwrap();
    assert!(
        (again.loss - want_eval.loss).abs() < 1e-5,
        "{} vs {}",
        again.loss,
        want_eval.loss
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ranks_loading_their_shards_from_a_checkpoint_take_the_steps_of_one_loaded_learner() {
    let dir = std::env::temp_dir().join(format!("rlvr-zero3-load-{}", std::process::id()));
    for tied in [false, true] {
        learner(tied).save_model(&dir).unwrap();
        let config = || LearnerConfig::constant(3e-3, Device::Cpu);
        let [a, b] = halves();
        let mut one = Learner::from_pretrained(&dir, config()).unwrap();
        let want: Vec<f64> = (0..3)
            .map(|_| one.train_step(&[a.clone(), b.clone()], OBJECTIVE).unwrap().loss)
            .collect();
        let want_weights = one.export_weights(0).unwrap();
        let results = common::on_ranks(vec![(); 2], |rank, (), group| {
            let mut l = Learner::from_pretrained_zero3(&dir, config(), group).unwrap();
            let half = if rank == 0 { &a } else { &b };
            let losses: Vec<f64> = (0..3)
                .map(|_| l.train_step(std::slice::from_ref(half), OBJECTIVE).unwrap().loss)
                .collect();
            (losses, l.export_weights(0).unwrap())
        });
        for (rank, (losses, weights)) in results.iter().enumerate() {
            for (got, want) in losses.iter().zip(&want) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "tied {tied} rank {rank}: {got} vs {want}"
                );
            }
            common::assert_rank_export(
                rank,
                weights,
                &want_weights,
                1e-5,
                &format!("loaded, tied {tied} rank {rank}"),
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
