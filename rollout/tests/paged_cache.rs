//! The paged KV cache: any block size draws what one block per sequence (the unpaged layout)
//! draws, with the learner's log-probs; prompts sharing a few-shot prefix hold its blocks once;
//! a fixed budget admits what fits and draws the same completions; a budget too small for one
//! completion is refused; decode steps padded to the fixed shapes CUDA graphs replay draw what
//! eager steps draw.

use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_rollout::{DecodeMode, Engine};

mod common;
use common::{engine, learner, learner_logprobs, worst};

/// Eight prompts: a 40-token few-shot prefix, then a question of 3 to 6 tokens; 4 samples each.
fn few_shot() -> Vec<GenerationRequest> {
    let prefix: Vec<u32> = (0..40).map(|i| (i * 7 % 50) + 2).collect();
    (0..8u32)
        .map(|i| GenerationRequest {
            id: u64::from(i),
            prompt_ids: prefix
                .iter()
                .copied()
                .chain((0..3 + i % 4).map(|j| (i * 5 + j) % 50 + 3))
                .collect(),
            n: 4,
            seed: u64::from(i) + 100,
        })
        .collect()
}

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens: 8,
        ..Default::default()
    }
}

/// Block sizes 1, 3, 8 and 64 (64 holds a whole sequence: one contiguous block each, the
/// unpaged layout) draw the same tokens, with log-probs within 1e-5 of the learner's full
/// forward pass, per token.
#[test]
fn every_block_size_draws_what_the_unpaged_layout_draws() {
    let l = learner();
    let requests = few_shot();
    let mut runs = Vec::new();
    for block_size in [64, 1, 3, 8] {
        let mut e = engine(&l, 64);
        e.set_block_size(block_size);
        let out = e.generate(&requests, &params()).unwrap();
        let mut diff = 0f32;
        for c in &out {
            let prompt = &requests[c.request_id as usize].prompt_ids;
            diff = diff.max(worst(
                &c.logprobs,
                &learner_logprobs(&l, prompt, &c.token_ids, 1.0),
            ));
        }
        assert!(
            diff < 1e-5,
            "blocks of {block_size}: per-token max |Δ log p| {diff:e}"
        );
        runs.push(out);
    }
    for other in &runs[1..] {
        for (a, b) in runs[0].iter().zip(other) {
            assert_eq!(
                (a.request_id, a.index, &a.token_ids),
                (b.request_id, b.index, &b.token_ids)
            );
        }
    }
}

/// In blocks of 8, the first prompt holds its 6 prompt blocks, one more for its first sample
/// and 2 for each other sample (a copy of its partial block, one more): 13. The other seven
/// find the prefix's 5 full blocks cached and hold one prompt block, one more and 3 × 2: 8
/// each. 69 blocks at the peak, where 32 unshared sequences of 7 blocks would hold 224; and
/// each prompt draws what it draws alone.
#[test]
fn prompts_sharing_a_few_shot_prefix_hold_its_blocks_once() {
    let l = learner();
    let requests = few_shot();
    let mut e = engine(&l, 64);
    e.set_block_size(8);
    let together = e.generate(&requests, &params()).unwrap();
    assert_eq!(e.peak_sequences(), 32);
    assert_eq!(e.peak_blocks(), 13 + 7 * 8);
    for r in &requests {
        let mut alone = engine(&l, 64);
        alone.set_block_size(8);
        let mine: Vec<_> = together.iter().filter(|c| c.request_id == r.id).collect();
        for (a, b) in alone
            .generate(std::slice::from_ref(r), &params())
            .unwrap()
            .iter()
            .zip(mine)
        {
            assert_eq!(a.token_ids, b.token_ids, "request {}", r.id);
            assert!(worst(&a.logprobs, &b.logprobs) <= 1e-5, "request {}", r.id);
        }
    }
}

/// A budget of 20 blocks of 8 runs fewer sequences at once and never holds more than it has,
/// and draws the same completions as an unbounded cache; a budget below one completion's
/// needs (7 blocks) is refused with what it has.
#[test]
fn a_kv_budget_admits_what_fits_and_draws_the_same() {
    let l = learner();
    let requests = few_shot();
    let mut free = engine(&l, 64);
    free.set_block_size(8);
    let unbounded = free.generate(&requests, &params()).unwrap();
    let mut tight = engine(&l, 64);
    tight.set_block_size(8);
    tight.set_kv_budget(Some(20 * tight.block_bytes()));
    let bounded = tight.generate(&requests, &params()).unwrap();
    assert!(tight.peak_blocks() <= 20, "{} blocks", tight.peak_blocks());
    assert!(
        tight.peak_sequences() < 32,
        "{} sequences",
        tight.peak_sequences()
    );
    assert_eq!(bounded.len(), unbounded.len());
    for (a, b) in unbounded.iter().zip(&bounded) {
        assert_eq!(
            (a.request_id, a.index, &a.token_ids),
            (b.request_id, b.index, &b.token_ids)
        );
        assert!(worst(&a.logprobs, &b.logprobs) <= 1e-5);
    }
    tight.set_kv_budget(Some(6 * tight.block_bytes()));
    let err = tight.generate(&requests, &params()).unwrap_err().to_string();
    assert!(err.contains("KV cache") && err.contains("6 blocks"), "{err}");
}

/// Decode steps padded to fixed shapes (the layout a CUDA graph captures and replays, run here
/// op by op) draw the tokens eager steps draw, with log-probs within 1e-5 of the learner's:
/// 32 sequences through an engine of 23 (so 23 run, then the other 9 padded to 10), blocks of 4 (the padded rows write only the scratch block: a stray write would change a
/// later token). CUDA graphs are refused on the CPU.
#[test]
fn fixed_shape_decode_steps_draw_what_eager_steps_draw() {
    let l = learner();
    let requests = few_shot();
    let run = |mode: DecodeMode| {
        let mut e = engine(&l, 23);
        e.set_block_size(4);
        e.set_decode_mode(mode).unwrap();
        let out = e.generate(&requests, &params()).unwrap();
        (out, e.decode_shapes())
    };
    let (eager, _) = run(DecodeMode::Eager);
    let (padded, shapes) = run(DecodeMode::Padded);
    assert!(shapes > 2, "{shapes} fixed shapes");
    let mut diff = 0f32;
    for (a, b) in eager.iter().zip(&padded) {
        assert_eq!(
            (a.request_id, a.index, &a.token_ids),
            (b.request_id, b.index, &b.token_ids)
        );
        let prompt = &requests[b.request_id as usize].prompt_ids;
        diff = diff.max(worst(
            &b.logprobs,
            &learner_logprobs(&l, prompt, &b.token_ids, 1.0),
        ));
    }
    assert!(diff < 1e-5, "per-token max |Δ log p| {diff:e}");
    let refused = engine(&l, 11)
        .set_decode_mode(DecodeMode::CudaGraphs)
        .unwrap_err();
    assert!(refused.to_string().contains("no CUDA graphs"), "{refused}");
}
