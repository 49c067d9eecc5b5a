//! Helpers the learner tests share: a tiny model shape, weight comparisons, and ranks on
//! threads joined in one Gloo group on 127.0.0.1. (Each test binary uses some of them.)
#![allow(dead_code)]

use rlvr_core::WeightChunk;
use rlvr_dist::ProcessGroup;
use rlvr_learner::model::Config;
use rlvr_learner::Learner;

/// A tiny Llama: hidden 32, 4 heads over 2 key-value heads, SwiGLU 64.
pub fn tiny(layers: i64, vocab: i64, tied: bool) -> Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab,
        "tie_word_embeddings": tied, "max_position_embeddings": 64
    }))
    .unwrap()
}

/// The f32 values of a chunk.
pub fn floats(chunk: &WeightChunk) -> Vec<f32> {
    chunk
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Assert two exports hold the same tensors within `tol`.
pub fn assert_same_weights(got: &[WeightChunk], want: &[WeightChunk], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.name, &g.shape), (&w.name, &w.shape));
        let worst = floats(g)
            .iter()
            .zip(floats(w))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < tol, "{what} {}: differs by {worst}", g.name);
    }
}

/// Assert what ZeRO-3 rank `rank` exported: the whole model (`want`, within `tol`) on rank 0,
/// nothing on the others.
pub fn assert_rank_export(rank: usize, got: &[WeightChunk], want: &[WeightChunk], tol: f32, what: &str) {
    match rank {
        0 => assert_same_weights(got, want, tol, what),
        _ => assert!(
            got.is_empty(),
            "{what}: rank {rank} exported {} tensors",
            got.len()
        ),
    }
}

/// Run `f(rank, input, group)` for each of `inputs` on its own thread, the threads joined in one
/// Gloo group; the results in rank order.
pub fn on_ranks<I: Send, T: Send>(inputs: Vec<I>, f: impl Fn(usize, I, ProcessGroup) -> T + Sync) -> Vec<T> {
    let inputs: Vec<std::sync::Mutex<Option<I>>> = inputs.into_iter().map(|i| Some(i).into()).collect();
    rlvr_dist::on_thread_ranks(inputs.len(), |group| {
        let rank = group.rank();
        let input = inputs[rank].lock().unwrap().take().unwrap();
        f(rank, input, group)
    })
    .unwrap()
}

/// A learner of `config` from `seed`, learning at a constant `lr` on the CPU.
pub fn learner_of(config: &Config, lr: f64, seed: i64) -> Learner {
    Learner::new(
        config,
        rlvr_learner::LearnerConfig::constant(lr, tch::Device::Cpu),
        seed,
    )
}

/// The ZeRO-3 tests' learner: a 3-layer model of 41 tokens, learning at 3e-3, seed 5.
pub fn zero3_learner(tied: bool) -> Learner {
    learner_of(&tiny(3, 41, tied), 3e-3, 5)
}

/// Run `f(rank, learner, group)` on `world` threads joined in one Gloo group, each with a
/// fresh [`zero3_learner`].
pub fn zero3_ranks<T: Send>(
    world: usize,
    tied: bool,
    f: impl Fn(usize, Learner, ProcessGroup) -> T + Sync,
) -> Vec<T> {
    on_ranks((0..world).map(|_| zero3_learner(tied)).collect(), f)
}
