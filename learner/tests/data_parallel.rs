//! Data-parallel training over a real Gloo group on 127.0.0.1: two ranks, each stepping on its
//! half of the batch with gradients averaged across them, take the same steps as one learner
//! on the whole batch.

use std::net::TcpListener;
use std::time::Duration;

use rlvr_core::{TrainBatch, WeightChunk};
use rlvr_dist::{Backend, ProcessGroup, Rendezvous};
use rlvr_learner::llama::Config;
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use tch::Device;

fn tiny() -> Config {
    serde_json::from_value(serde_json::json!({
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
        "tie_word_embeddings": false, "max_position_embeddings": 64
    }))
    .unwrap()
}

fn learner() -> Learner {
    Learner::new(&tiny(), LearnerConfig::constant(3e-3, Device::Cpu), 5)
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

fn floats(chunk: &WeightChunk) -> Vec<f32> {
    chunk
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn two_ranks_take_the_steps_of_one_learner_on_the_whole_batch() {
    let [a, b] = halves();
    // One learner, the two halves as two micro-batches of one step.
    let (want_losses, want_weights) = train(&mut learner(), &[a.clone(), b.clone()]);

    // Two ranks from the same initial weights, one half each.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ranks: Vec<(Learner, TrainBatch)> = vec![(learner(), a), (learner(), b)];
    let results: Vec<(Vec<f64>, Vec<WeightChunk>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .enumerate()
            .map(|(rank, (mut l, half))| {
                s.spawn(move || {
                    let rdv = Rendezvous {
                        host: "127.0.0.1".into(),
                        port,
                        rank,
                        world_size: 2,
                        local_rank: rank,
                    };
                    let group =
                        ProcessGroup::new(&rdv, Backend::Gloo, "dp", Duration::from_secs(30)).unwrap();
                    l.set_data_parallel(group).unwrap();
                    train(&mut l, std::slice::from_ref(&half))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    for (rank, (losses, weights)) in results.iter().enumerate() {
        for (step, (got, want)) in losses.iter().zip(&want_losses).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "rank {rank} step {step}: loss {got} vs {want}"
            );
        }
        assert_eq!(weights.len(), want_weights.len());
        for (got, want) in weights.iter().zip(&want_weights) {
            assert_eq!(got.name, want.name);
            let worst = floats(got)
                .iter()
                .zip(floats(want))
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "rank {rank} {}: differs by {worst}", got.name);
        }
    }
    // The weights moved: the comparison is not between two untouched copies.
    let start = learner().export_weights(0).unwrap();
    let moved = floats(&want_weights[0])
        .iter()
        .zip(floats(&start[0]))
        .any(|(x, y)| (x - y).abs() > 1e-4);
    assert!(moved);
}
