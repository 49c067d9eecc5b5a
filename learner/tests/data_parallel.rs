//! Data-parallel training over a real Gloo group on 127.0.0.1: two ranks, each stepping on its
//! half of the batch with gradients averaged across them, take the same steps as one learner
//! on the whole batch.

mod common;

use rlvr_core::{TrainBatch, WeightChunk};
use rlvr_learner::{Learner, Objective, Reduction};

fn learner() -> Learner {
    common::learner_of(&common::tiny(2, 40, false), 3e-3, 5)
}

/// Two halves of a batch: different sequences, lengths and label masks.
fn halves() -> [TrainBatch; 2] {
    let a: Vec<Vec<i64>> = (0..3)
        .map(|r| (0..12).map(|i| (r * 7 + i * 3) % 40).collect())
        .collect();
    let b: Vec<Vec<i64>> = (0..3)
        .map(|r| (0..9).map(|i| (r * 5 + i * 11 + 1) % 40).collect())
        .collect();
    [
        TrainBatch::from_sequences(&a, 0),
        TrainBatch::from_sequences(&b, 0),
    ]
}

/// Losses of five steps and the final weights.
fn train(l: &mut Learner, micro: &[TrainBatch]) -> (Vec<f64>, Vec<WeightChunk>) {
    let objective = Objective::Lm(Reduction::Mean);
    let losses = (0..5)
        .map(|_| l.train_step(micro, objective).unwrap().loss)
        .collect();
    (losses, l.export_weights(0).unwrap())
}

#[test]
fn two_ranks_take_the_steps_of_one_learner_on_the_whole_batch() {
    let [a, b] = halves();
    // One learner, the two halves as two micro-batches of one step.
    let (want_losses, want_weights) = train(&mut learner(), &[a.clone(), b.clone()]);

    // Two ranks from the same initial weights, one half each.
    let ranks: Vec<(Learner, TrainBatch)> = vec![(learner(), a), (learner(), b)];
    let results = common::on_ranks(ranks, |_, (mut l, half), group| {
        l.set_data_parallel(group).unwrap();
        train(&mut l, std::slice::from_ref(&half))
    });

    for (rank, (losses, weights)) in results.iter().enumerate() {
        for (step, (got, want)) in losses.iter().zip(&want_losses).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "rank {rank} step {step}: loss {got} vs {want}"
            );
        }
        common::assert_same_weights(weights, &want_weights, 1e-5, &format!("rank {rank}"));
    }
    // The weights moved: the comparison is not between two untouched copies.
    let start = learner().export_weights(0).unwrap();
    let moved = common::floats(&want_weights[0])
        .iter()
        .zip(common::floats(&start[0]))
        .any(|(x, y)| (x - y).abs() > 1e-4);
    assert!(moved);
}
