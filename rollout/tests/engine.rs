//! The native engine against the learner: the parity gate (same log-probs on every path, per
//! token), same greedy tokens as a full forward pass, reproducible sampling whatever the batch,
//! the in-flight batch, stop conditions and weight updates.

use rlvr_core::{
    Completion, FinishReason, GenerationRequest, PolicyBatch, PolicySample, SamplingParams, TrainBatch,
};
use rlvr_data::Tokenizer;
use rlvr_learner::model::Documents;
use rlvr_learner::policy::TokenDistribution;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, WeightFeed, WeightSource};
use tch::{Device, Kind, Tensor};

mod common;
use common::{config, engine, engine_of, learner, learner_logprobs, learner_of, worst};

fn requests() -> Vec<GenerationRequest> {
    vec![
        GenerationRequest {
            id: 10,
            prompt_ids: vec![1, 5, 9],
            n: 3,
            seed: 1,
        },
        GenerationRequest {
            id: 11,
            prompt_ids: vec![1, 7, 7, 7, 2, 40, 41],
            n: 1,
            seed: 2,
        },
        GenerationRequest {
            id: 12,
            prompt_ids: vec![3],
            n: 2,
            seed: 3,
        },
    ]
}

/// The parity gate, per token and as a maximum (never a mean), in f32 on the CPU: the engine's
/// log-probs equal the learner's within 1e-5 on every path each side has — the engine's
/// prefill (a completion's first token) and cached decode (the rest), at batch sizes 1, 3 and
/// 8; the learner's full forward, its RL forward where responses share one pass of their
/// prompt, and packed rows (several sequences per row, attention kept inside each) — and with
/// top-k/top-p, where both sides renormalise over the kept tokens.
#[test]
fn parity_gate_engine_and_learner_agree_on_every_path() {
    let l = learner();
    let reqs = requests();
    let prompt_of = |id: u64| &reqs.iter().find(|r| r.id == id).unwrap().prompt_ids;
    let full = SamplingParams {
        temperature: 0.7,
        max_new_tokens: 20,
        ..Default::default()
    };
    let (mut prefill, mut decode) = (0f32, 0f32);
    let mut runs = Vec::new();
    for slots in [1, 3, 8] {
        let out = engine(&l, slots).generate(&reqs, &full).unwrap();
        assert_eq!(out.len(), 6);
        for c in &out {
            assert_eq!((c.policy_version, c.token_ids.len()), (7, 20));
            let want = learner_logprobs(&l, prompt_of(c.request_id), &c.token_ids, 0.7);
            prefill = prefill.max(worst(&c.logprobs[..1], &want[..1]));
            decode = decode.max(worst(&c.logprobs[1..], &want[1..]));
        }
        runs.push(out);
    }
    // Seeded sampling draws the same tokens at every batch size; how far the log-probs of one
    // batch size are from another's is reported (the kernels differ with the batch).
    let mut across_batches = 0f32;
    for other in &runs[1..] {
        for (a, b) in runs[0].iter().zip(other) {
            assert_eq!(a.token_ids, b.token_ids);
            across_batches = across_batches.max(worst(&a.logprobs, &b.logprobs));
        }
    }

    // The learner's RL forward: responses to one prompt share one pass of it.
    let completions = &runs[2];
    let sample = |c: &rlvr_core::Completion| PolicySample {
        prompt_ids: prompt_of(c.request_id).clone(),
        response_ids: c.token_ids.clone(),
        logprobs: c.logprobs.clone(),
        proximal_logprobs: vec![],
        is_weights: vec![],
        advantages: vec![],
        returns: vec![],
        values: vec![],
    };
    let samples: Vec<PolicySample> = completions.iter().map(sample).collect();
    let batch = PolicyBatch::from_samples(&samples, 0);
    assert_eq!(
        batch.groups, 3,
        "the three completions of one request share a prompt row"
    );
    let shared = l.logprobs(&batch, &TokenDistribution::full(0.7)).unwrap();
    let mut shared_prefix = 0f32;
    for (row, c) in completions.iter().enumerate() {
        let got = &shared[row * batch.cols..row * batch.cols + c.token_ids.len()];
        shared_prefix = shared_prefix.max(worst(got, &c.logprobs));
    }

    // Packed rows: the six sequences (prompt + response) in two rows of three.
    let sequences: Vec<(Vec<i64>, Vec<i64>)> = completions
        .iter()
        .map(|c| {
            let ids: Vec<i64> = prompt_of(c.request_id)
                .iter()
                .chain(&c.token_ids)
                .map(|&t| i64::from(t))
                .collect();
            (ids.clone(), ids)
        })
        .collect();
    let rows: Vec<Vec<&(Vec<i64>, Vec<i64>)>> = sequences.chunks(3).map(|r| r.iter().collect()).collect();
    let cols = rows
        .iter()
        .map(|r| r.iter().map(|s| s.0.len()).sum::<usize>())
        .max()
        .unwrap();
    let packed = TrainBatch::from_packed(&rows, cols, 0);
    let p = packed.packing.as_ref().unwrap();
    let shape = [2, cols as i64];
    let documents = Documents {
        position_ids: Tensor::from_slice(&p.position_ids).view(shape),
        document_ids: Tensor::from_slice(&p.document_ids).view(shape),
    };
    let input = Tensor::from_slice(&packed.input_ids).view(shape);
    let logp = tch::no_grad(|| {
        let logits = l
            .model()
            .logits(&l.model().hidden_states_of(&input, Some(&documents)));
        (logits / 0.7).log_softmax(-1, Kind::Float)
    });
    let mut packed_rows = 0f32;
    for (i, c) in completions.iter().enumerate() {
        let (row, within) = (i / 3, i % 3);
        let start: usize = rows[row][..within].iter().map(|s| s.0.len()).sum();
        let p = prompt_of(c.request_id).len();
        let got: Vec<f32> = (0..c.token_ids.len())
            .map(|k| {
                logp.double_value(&[row as i64, (start + p + k - 1) as i64, i64::from(c.token_ids[k])]) as f32
            })
            .collect();
        packed_rows = packed_rows.max(worst(&got, &c.logprobs));
    }

    // Top-k/top-p: the engine reports, and the learner recomputes, the kept tokens'
    // renormalised log-probs.
    let cut = SamplingParams {
        top_k: 8,
        top_p: 0.9,
        ..full.clone()
    };
    let cut_out = engine(&l, 8).generate(&reqs, &cut).unwrap();
    let cut_samples: Vec<PolicySample> = cut_out.iter().map(sample).collect();
    let cut_batch = PolicyBatch::from_samples(&cut_samples, 0);
    let distribution = TokenDistribution {
        temperature: 0.7,
        top_k: 8,
        top_p: 0.9,
    };
    let recomputed = l.logprobs(&cut_batch, &distribution).unwrap();
    let mut truncated = 0f32;
    for (row, c) in cut_out.iter().enumerate() {
        let got = &recomputed[row * cut_batch.cols..row * cut_batch.cols + c.token_ids.len()];
        truncated = truncated.max(worst(got, &c.logprobs));
        let full_lp = learner_logprobs(&l, prompt_of(c.request_id), &c.token_ids, 0.7);
        assert!(
            c.logprobs.iter().zip(&full_lp).all(|(t, f)| t >= f),
            "renormalised log-probs are at least the full distribution's"
        );
    }

    let gate = [
        ("engine prefill vs learner full forward", prefill),
        ("engine cached decode vs learner full forward", decode),
        ("engine batch 1 vs batch 3 and 8", across_batches),
        ("learner shared-prefix RL forward vs engine", shared_prefix),
        ("learner packed rows vs engine", packed_rows),
        ("top-k 8 / top-p 0.9, renormalised, learner vs engine", truncated),
    ];
    for (path, diff) in gate {
        eprintln!("parity gate: {path}: per-token max |Δ log p| {diff:.2e}");
    }
    for (path, diff) in gate {
        assert!(diff < 1e-5, "{path}: per-token max |Δ log p| {diff:e}");
    }
}

#[test]
fn greedy_tokens_match_a_full_forward_pass_each_step() {
    let l = learner();
    let mut e = engine(&l, 4);
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 15,
        ..Default::default()
    };
    let out = e.generate(&requests(), &params).unwrap();
    for c in out {
        let prompt = &requests()
            .into_iter()
            .find(|r| r.id == c.request_id)
            .unwrap()
            .prompt_ids;
        let mut seq: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        for &got in &c.token_ids {
            let n = seq.len() as i64;
            let logits = tch::no_grad(|| l.model().forward(&Tensor::from_slice(&seq).view([1, n])));
            let want = logits.select(1, n - 1).argmax(-1, false).int64_value(&[0]);
            assert_eq!(i64::from(got), want);
            seq.push(want);
        }
    }
}

#[test]
fn sampling_reproduces_whatever_the_batch() {
    let l = learner();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        top_k: 20,
        max_new_tokens: 12,
        ..Default::default()
    };
    let together = engine(&l, 3).generate(&requests(), &params).unwrap();
    let alone = engine(&l, 1).generate(&requests()[..1], &params).unwrap();
    assert_eq!(alone.len(), 3);
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!((a.request_id, a.index), (b.request_id, b.index));
        assert_eq!(a.token_ids, b.token_ids);
    }
    assert_ne!(
        together[0].token_ids, together[1].token_ids,
        "the n completions differ"
    );
    let again = engine(&l, 3).generate(&requests(), &params).unwrap();
    assert_eq!(again, together);
    // An engine that gave its KV cache back allocates a fresh one and draws the same.
    let mut freed = engine(&l, 3);
    freed.generate(&requests(), &params).unwrap();
    freed.release_cache();
    assert_eq!(freed.generate(&requests(), &params).unwrap(), together);
}

/// 64 prompts × 8 samples draw what each prompt draws alone, with a vocabulary of 16,384:
/// under plain temperature sampling (on an x86-64 CPU the fused kernel, its rows shared over
/// threads) and under top-k, which the CPU samples in slices of rows whose `[rows, vocab]`
/// temporaries stay within 16 MB (256 rows: two slices, at the prefill's first token and at
/// every decode step; prompts of the second slice checked too).
#[test]
fn a_batch_draws_what_each_prompt_draws_alone() {
    let mut model = config();
    model.vocab_size = 16_384;
    let l = learner_of(&model);
    let requests: Vec<GenerationRequest> = (0..64u32)
        .map(|i| GenerationRequest {
            id: u64::from(i),
            prompt_ids: vec![i * 97 % 16_384, i + 1, 3],
            n: 8,
            seed: u64::from(i),
        })
        .collect();
    for top_k in [0, 1_000] {
        let params = SamplingParams {
            temperature: 1.0,
            max_new_tokens: 6,
            top_k,
            ..Default::default()
        };
        let together = engine_of(&model, &l, 512).generate(&requests, &params).unwrap();
        assert_eq!(together.len(), 512);
        for r in requests.iter().step_by(9) {
            let alone = engine_of(&model, &l, 8).generate(std::slice::from_ref(r), &params);
            assert_drawn_alone(&alone.unwrap(), &together, r.id, top_k == 0);
        }
    }
}

/// The completions of request `id` among `together` are `alone`'s: the same tokens, and
/// log-probs within 1e-5, up to where a draw fell within rounding of the boundary between two
/// tokens. A batch's logits and a prompt's alone come from the same sums in different orders
/// (the decode kernel tiles several columns, multiplies one as dot products), ~1e-7 apart, so a
/// draw that close to a boundary picks the token beside the other's, and the two completions
/// go on from different tokens. Such partings must be rare (at most one completion in eight; a
/// wrong row or generator parts nearly all) and, where the draw searched the distribution in
/// token order (`in_token_order`: plain sampling; top-k/top-p search it by probability), between
/// adjacent token ids.
fn assert_drawn_alone(alone: &[Completion], together: &[Completion], id: u64, in_token_order: bool) {
    let mine: Vec<_> = together.iter().filter(|c| c.request_id == id).collect();
    assert_eq!(mine.len(), alone.len(), "request {id}");
    let mut partings = 0;
    for (a, b) in alone.iter().zip(mine) {
        assert_eq!(a.index, b.index, "request {id}");
        let same = a
            .token_ids
            .iter()
            .zip(&b.token_ids)
            .take_while(|(x, y)| x == y)
            .count();
        let worst = worst(&a.logprobs[..same], &b.logprobs[..same]);
        assert!(worst <= 1e-5, "request {id}: log-probs differ by {worst}");
        match (a.token_ids.get(same), b.token_ids.get(same)) {
            (None, None) => {}
            (Some(x), Some(y)) if !in_token_order || x.abs_diff(*y) == 1 => partings += 1,
            _ => panic!(
                "request {id}, sample {}: {:?} alone, {:?} together",
                a.index, a.token_ids, b.token_ids
            ),
        }
    }
    assert!(
        partings * 8 <= alone.len(),
        "request {id}: {partings} of {} completions parted",
        alone.len()
    );
}

/// The in-flight batch: 64 prompts × 8 samples with an engine batch of 512 decode all 512
/// sequences in one step; as stop tokens end some early, the rest move into the freed slots,
/// and each prompt's samples are still the ones it draws alone — its prompt (2 to 24 tokens)
/// prefilled beside prompts of other lengths.
#[test]
fn sixty_four_prompts_of_eight_samples_decode_at_once() {
    let l = learner();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 16,
        stop_token_ids: vec![4, 9, 17, 23],
        ..Default::default()
    };
    let requests: Vec<GenerationRequest> = (0..64u32)
        .map(|i| GenerationRequest {
            id: u64::from(i),
            prompt_ids: std::iter::repeat_n(1, (i * 7 % 23) as usize)
                .chain([i % 50 + 2, 3])
                .collect(),
            n: 8,
            seed: u64::from(i),
        })
        .collect();
    let mut e = engine(&l, 512);
    let together = e.generate(&requests, &params).unwrap();
    let lengths: Vec<usize> = together.iter().map(|c| c.token_ids.len()).collect();
    // Every sequence not stopped by its first token (sampled at the prefill) decodes in the
    // first step.
    let decoded = lengths.iter().filter(|&&n| n > 1).count();
    assert!(decoded >= 256, "{decoded} sequences decode");
    assert_eq!(e.peak_sequences(), decoded);
    assert!(
        lengths.iter().any(|&n| n < 8) && lengths.contains(&16),
        "some stop early, some run to the limit: {lengths:?}"
    );
    for r in requests.iter().step_by(7) {
        let alone = engine(&l, 8).generate(std::slice::from_ref(r), &params).unwrap();
        assert_eq!(alone.len(), 8);
        assert_drawn_alone(&alone, &together, r.id, true);
    }
}

#[test]
fn stop_tokens_stop_strings_and_limits() {
    let l = learner();
    let mut e = engine(&l, 2);
    let greedy = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 10,
        ..Default::default()
    };
    let free = e.generate(&requests()[1..2], &greedy).unwrap();
    let third = free[0].token_ids[2];
    let stop = SamplingParams {
        stop_token_ids: vec![third],
        ..greedy.clone()
    };
    let stopped = e.generate(&requests()[1..2], &stop).unwrap();
    let first_at = free[0].token_ids.iter().position(|&t| t == third).unwrap();
    assert_eq!(stopped[0].token_ids, free[0].token_ids[..=first_at]);
    assert_eq!(stopped[0].finish_reason, FinishReason::Stop);

    // Stop strings need a tokenizer: the built-in character tokenizer (vocabulary 52 < 60).
    e.set_tokenizer(Tokenizer::builtin_chars());
    let tok = Tokenizer::builtin_chars();
    let text = tok.decode(&free[0].token_ids[..4]);
    let needle: String = text.chars().skip(2).take(2).collect();
    if !needle.is_empty() {
        let by_string = SamplingParams {
            stop: vec![needle.clone()],
            ..greedy
        };
        let s = e.generate(&requests()[1..2], &by_string).unwrap();
        assert_eq!(s[0].finish_reason, FinishReason::Stop);
        assert!(tok.decode(&s[0].token_ids).contains(&needle));
        assert!(s[0].token_ids.len() <= 4);
    }
}

#[test]
fn weight_updates_are_checked_and_versioned() {
    let l = learner();
    let mut e = engine(&l, 2);
    assert_eq!(e.policy_version(), 7);
    let mut chunks = l.export_weights(8).unwrap();
    chunks[0].shape = vec![1, 2, 3];
    let err = e.load_weights(&chunks, 8).unwrap_err().to_string();
    assert!(err.contains(&chunks[0].name) && err.contains("shape"), "{err}");
    let mut chunks = l.export_weights(8).unwrap();
    chunks[0].name = "model.nope.weight".into();
    assert!(e.load_weights(&chunks, 8).is_err());
    let mut tensors = l.device_weights().unwrap();
    tensors[1].1 = tensors[1].1.narrow(0, 0, 1);
    let err = e
        .load(WeightSource::Tensors(&tensors), 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&tensors[1].0) && err.contains("shape"), "{err}");
    assert_eq!(e.policy_version(), 7);
    e.load_weights(&l.export_weights(9).unwrap(), 9).unwrap();
    assert_eq!(e.policy_version(), 9);
    let bad = GenerationRequest {
        id: 1,
        prompt_ids: vec![],
        n: 1,
        seed: 0,
    };
    assert!(e.generate(&[bad], &SamplingParams::default()).is_err());
    let oov = GenerationRequest {
        id: 2,
        prompt_ids: vec![600],
        n: 1,
        seed: 0,
    };
    assert!(e.generate(&[oov], &SamplingParams::default()).is_err());
}

/// Host bytes and a learner's tensor snapshot load the same weights; the snapshot is a copy,
/// which a later step of the learner leaves as it was.
#[test]
fn weights_load_alike_from_host_bytes_and_from_a_tensor_snapshot() {
    let l = learner();
    let mut other = Learner::new(&config(), LearnerConfig::constant(1e-2, Device::Cpu), 12);
    let snapshot = other.device_weights().unwrap();
    let chunks = other.export_weights(8).unwrap();
    let (mut from_bytes, mut from_tensors) = (engine(&l, 2), engine(&l, 2));
    from_bytes.load_weights(&chunks, 8).unwrap();
    let batch = TrainBatch::from_sequences(&[vec![1, 5, 9, 2, 7, 7]], 0);
    let lm = rlvr_learner::Objective::Lm(rlvr_learner::Reduction::Mean);
    other.train_step(&[batch], lm).unwrap();
    assert_ne!(other.export_weights(8).unwrap(), chunks, "the learner stepped");
    from_tensors.load(WeightSource::Tensors(&snapshot), 8).unwrap();
    assert_eq!(from_tensors.policy_version(), 8);
    assert_eq!(from_tensors.export_weights(8).unwrap(), chunks);
    assert_eq!(from_bytes.export_weights(8).unwrap(), chunks);
}

/// A feed that publishes `weights` (a learner's snapshot, as a run's feed does) as version 8
/// once the engine has asked `after` times.
struct LateWeights {
    weights: std::sync::Mutex<Vec<(String, Tensor)>>,
    after: usize,
    asked: std::sync::atomic::AtomicUsize,
}

impl WeightFeed for LateWeights {
    fn load_newer(
        &self,
        version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> rlvr_rollout::Result<()>,
    ) -> rlvr_rollout::Result<()> {
        let asked = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if asked >= self.after && version < 8 {
            load(WeightSource::Tensors(&self.weights.lock().unwrap()), 8)?;
        }
        Ok(())
    }
}

#[test]
fn in_flight_updates_switch_weights_between_decode_steps() {
    let l = learner();
    let other = Learner::new(&config(), LearnerConfig::constant(1e-3, Device::Cpu), 12);
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 20,
        ..Default::default()
    };
    let reqs = &requests()[..1];
    let before = engine(&l, 3).generate(reqs, &params).unwrap();
    let mut e = engine(&l, 3);
    e.set_weight_feed(std::sync::Arc::new(LateWeights {
        weights: other.device_weights().unwrap().into(),
        after: 6,
        asked: Default::default(),
    }));
    let during = e.generate(reqs, &params).unwrap();
    assert_eq!(e.policy_version(), 8);
    for (a, b) in before.iter().zip(&during) {
        // The feed is asked once per round (admission and prefill, then a decode step); the
        // first round makes tokens 0 and 1, each later one a token: asked for the 7th time
        // before token 7, it switches there.
        let want: Vec<u64> = (0..20).map(|k| if k < 7 { 7 } else { 8 }).collect();
        assert_eq!(b.token_versions, want);
        assert_eq!(
            b.policy_version, 7,
            "a completion's version is its oldest token's"
        );
        assert_eq!(
            a.token_ids[..7],
            b.token_ids[..7],
            "same weights, same seeded draws"
        );
        assert_eq!(a.logprobs[..7], b.logprobs[..7]);
        assert_ne!(a.logprobs[7..], b.logprobs[7..], "new weights after the switch");
    }
    // A later call starts from the new weights.
    let next = e.generate(reqs, &params).unwrap();
    assert!(next.iter().all(|c| c.token_versions.iter().all(|&v| v == 8)));
}
