//! Tensor parallelism over Gloo: two ranks (threads, each with its own process group over a
//! real TCPStore) hold half of every layer's heads and channels and draw what one whole engine
//! draws, with its log-probs.

use std::sync::Arc;

use rlvr_core::{Completion, GenerationRequest, SamplingParams};
use rlvr_dist::ProcessGroup;
use rlvr_learner::model::tensor_parallel::shard_config;
use rlvr_learner::model::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine, WeightSource};
use tch::{Device, Kind};

mod common;
use common::{config, learner_logprobs, worst};

/// Run `f(group)` on `world` thread ranks of one Gloo group; results in rank order.
fn on_ranks<T: Send>(world: usize, f: impl Fn(Arc<ProcessGroup>) -> T + Sync) -> Vec<T> {
    rlvr_dist::on_thread_ranks(world, |group| f(Arc::new(group))).expect("join the group")
}

fn requests() -> Vec<GenerationRequest> {
    [(vec![1, 5, 9], 3), (vec![1, 7, 7, 7, 2, 40, 41], 1), (vec![3], 2)]
        .into_iter()
        .enumerate()
        .map(|(i, (prompt_ids, n))| GenerationRequest {
            id: 10 + i as u64,
            prompt_ids,
            n,
            seed: i as u64 + 1,
        })
        .collect()
}

/// The tiny Llama of the other engine tests as `model_type` (Qwen 2 adds query/key/value
/// biases, split with their rows; Qwen 3 norms each head's queries and keys).
fn family(model_type: &str) -> Config {
    let mut c = serde_json::to_value(config()).unwrap();
    let fields = c.as_object_mut().unwrap();
    fields.remove("architectures");
    fields.insert("model_type".into(), model_type.into());
    serde_json::from_value(c).unwrap()
}

/// Two ranks of `cfg` against one whole engine and the learner's full forward, greedy and
/// sampled, weights loaded as host bytes and as tensors.
fn two_ranks_draw_what_one_engine_draws(cfg: &Config) {
    let l = Learner::new(cfg, LearnerConfig::constant(1e-3, Device::Cpu), 11);
    let reqs = requests();
    let greedy = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 20,
        ..Default::default()
    };
    let sampled = SamplingParams {
        temperature: 0.8,
        max_new_tokens: 20,
        ..Default::default()
    };
    let chunks = l.export_weights(7).unwrap();
    let mut whole = NativeEngine::new(cfg, Device::Cpu, Kind::Float, 4, 99);
    whole.load_weights(&chunks, 7).unwrap();
    let want = [&greedy, &sampled].map(|p| whole.generate(&reqs, p).unwrap());
    let tensors: std::sync::Mutex<Vec<_>> = l.device_weights().unwrap().into();
    let ranks = on_ranks(2, |group| {
        let mut e = NativeEngine::tensor_parallel(cfg, Device::Cpu, Kind::Float, 4, 5, group).unwrap();
        // Its share of the whole weights, as host bytes; then again as tensors.
        e.load_weights(&chunks, 7).unwrap();
        let from_chunks = e.generate(&reqs, &greedy).unwrap();
        e.load(WeightSource::Tensors(&tensors.lock().unwrap()), 7)
            .unwrap();
        let got = [&greedy, &sampled].map(|p| e.generate(&reqs, p).unwrap());
        assert_eq!(from_chunks, got[0]);
        assert!(
            e.export_weights(7).is_err(),
            "a rank holds a share, not the model"
        );
        got
    });
    let prompt_of = |c: &Completion| &reqs.iter().find(|r| r.id == c.request_id).unwrap().prompt_ids;
    for (rank, got) in ranks.iter().enumerate() {
        for (params, (ours, theirs)) in [&greedy, &sampled].iter().zip(got.iter().zip(&want)) {
            assert_eq!(ours.len(), 6);
            for (a, b) in ours.iter().zip(theirs) {
                assert_eq!(
                    a.token_ids, b.token_ids,
                    "rank {rank}, temperature {}",
                    params.temperature
                );
                let gap = worst(&a.logprobs, &b.logprobs);
                assert!(gap < 1e-5, "rank {rank}: log-probs {gap} from the whole engine's");
                let temperature = if params.temperature > 0.0 {
                    params.temperature
                } else {
                    1.0
                };
                let full = learner_logprobs(&l, prompt_of(a), &a.token_ids, temperature);
                let gap = worst(&a.logprobs, &full);
                assert!(gap < 1e-5, "rank {rank}: log-probs {gap} from the learner's");
            }
        }
    }
    assert_eq!(ranks[0], ranks[1], "the ranks move in lockstep");
}

#[test]
fn two_llama_ranks_draw_the_tokens_and_log_probs_of_one_whole_engine() {
    two_ranks_draw_what_one_engine_draws(&config());
}

#[test]
fn two_qwen2_and_qwen3_ranks_do_too() {
    use rlvr_learner::model::QkNorm;
    // What each family adds to the Llama layer, and so what the split must carry.
    for (model_type, qkv_bias, qk_norm) in [("qwen2", true, QkNorm::None), ("qwen3", false, QkNorm::PerHead)]
    {
        let cfg = family(model_type);
        assert_eq!(
            (cfg.layers().qkv_bias, cfg.layers().qk_norm),
            (qkv_bias, qk_norm),
            "{model_type}"
        );
        two_ranks_draw_what_one_engine_draws(&cfg);
    }
}

#[test]
fn models_that_do_not_split_are_refused_naming_the_field() {
    let err = shard_config(&config(), 3).unwrap_err();
    assert_eq!(err.field, "num_attention_heads");
    assert!(err.to_string().contains("tensor_parallel = 3"), "{err}");
    let err = shard_config(&config(), 4).unwrap_err();
    assert_eq!(
        err.field, "num_key_value_heads",
        "4 query heads split, 2 key/value heads do not"
    );
    let half = shard_config(&config(), 2).unwrap();
    assert_eq!(
        (
            half.num_attention_heads,
            half.num_key_value_heads,
            half.intermediate_size
        ),
        (2, 1, 32)
    );
}
