//! The model and learner on tiny configurations: causality, grouped-query attention,
//! checkpoints that round-trip, AdamW's update, and learning.

use rlvr_core::TrainBatch;
use rlvr_learner::model::{CausalLm, Config};
use rlvr_learner::optim::{AdamW, AdamWConfig};
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn tiny(tied: bool) -> Config {
    serde_json::from_value(tiny_json(tied)).unwrap()
}

fn tiny_json(tied: bool) -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
        "tie_word_embeddings": tied, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        "eos_token_id": [2, 3]
    })
}

fn learner_config(lr: f64) -> LearnerConfig {
    LearnerConfig::constant(lr, Device::Cpu)
}

#[test]
fn config_reads_hf_fields() {
    let c = tiny(false);
    assert_eq!(c.kv_heads(), 2);
    assert_eq!(c.head_dim, 8);
    assert_eq!(c.eos_token_ids, [2, 3], "every id of a list");
}

#[test]
fn attention_is_causal() {
    let (_vs, m) = rlvr_learner::runtime::seeded(0, || {
        let vs = VarStore::new(Device::Cpu);
        let m = CausalLm::new(&vs.root(), &tiny(false));
        (vs, m)
    });
    let a = Tensor::from_slice(&[1i64, 5, 7, 9, 11, 13]).view([1, 6]);
    let b = Tensor::from_slice(&[1i64, 5, 7, 9, 30, 31]).view([1, 6]);
    let (la, lb) = tch::no_grad(|| (m.forward(&a), m.forward(&b)));
    assert_eq!(la.size(), vec![1, 6, 40]);
    let diff_prefix = (la.narrow(1, 0, 4) - lb.narrow(1, 0, 4))
        .abs()
        .max()
        .double_value(&[]);
    let diff_suffix = (la.narrow(1, 4, 2) - lb.narrow(1, 4, 2))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff_prefix < 1e-6,
        "earlier positions must not see later tokens: {diff_prefix}"
    );
    assert!(
        diff_suffix > 1e-4,
        "later positions see the change: {diff_suffix}"
    );
}

/// Up to 64 rows on the CPU (a decode step) the projections run as `W · xᵀ`, the MLP and the
/// output projection stay transposed, and a frozen LM head of more than 2,048 rows is multiplied
/// in pieces; a longer batch takes the plain `x · Wᵀ` path. Both give the same logits.
#[test]
fn few_row_products_match_the_batched_path() {
    let mut config = tiny(false);
    config.vocab_size = 5000;
    let (mut vs, m) = rlvr_learner::runtime::seeded(3, || {
        let vs = VarStore::new(Device::Cpu);
        let m = CausalLm::new(&vs.root(), &config);
        (vs, m)
    });
    vs.freeze();
    let ids = Tensor::randint(5000, [1, 100], (Kind::Int64, Device::Cpu));
    let (many, few) = tch::no_grad(|| (m.forward(&ids), m.forward(&ids.narrow(1, 0, 40))));
    let diff = (many.narrow(1, 0, 40) - few).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "largest logit difference {diff}");
}

/// An engine's model lays q/k/v and gate/up out as one product each. Past the few-row path its
/// logits are the unfused model's; weights loaded by name afterwards land in the stacks (the
/// logits follow them); a weight given memory of its own afterwards is noticed (that layer
/// projects one by one, and the logits follow its new values, not the stale stack). A model
/// whose weights train is left as it is.
#[test]
fn fused_projections_give_the_unfused_logits_and_follow_loaded_weights() {
    let mut json = tiny_json(false);
    json["attention_bias"] = serde_json::json!(true);
    json["mlp_bias"] = serde_json::json!(true);
    for config in [tiny(false), serde_json::from_value::<Config>(json).unwrap()] {
        let build = |seed| {
            rlvr_learner::runtime::seeded(seed, || {
                let mut vs = VarStore::new(Device::Cpu);
                let m = CausalLm::new(&vs.root(), &config);
                vs.freeze();
                // Biases start at 0: random ones, so that a stack that drops them shows.
                let mut names: Vec<_> = vs.variables().into_iter().collect();
                names.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, mut t) in names {
                    if name.ends_with(".bias") {
                        t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
                    }
                }
                (vs, m)
            })
        };
        let ((vs, mut fused), (plain_vs, plain)) = (build(3), build(3));
        fused.fuse_projections();
        let ids = Tensor::randint(40, [2, 50], (Kind::Int64, Device::Cpu));
        let gap = |fused: &CausalLm, plain: &CausalLm| {
            let (a, b) = tch::no_grad(|| (fused.forward(&ids), plain.forward(&ids)));
            (a - b).abs().max().double_value(&[])
        };
        assert!(gap(&fused, &plain) < 1e-5, "fused: {}", gap(&fused, &plain));
        let load = |from: &VarStore, only: Option<&str>| {
            let (into, plain) = (vs.variables(), plain_vs.variables());
            for (name, t) in from.variables() {
                if only.is_none_or(|n| n == name) {
                    tch::no_grad(|| {
                        into[&name].shallow_clone().copy_(&t);
                        plain[&name].shallow_clone().copy_(&t);
                    });
                }
            }
        };
        let before = tch::no_grad(|| fused.forward(&ids));
        load(&build(4).0, None);
        let moved = tch::no_grad(|| (fused.forward(&ids) - &before).abs().max().double_value(&[]));
        assert!(moved > 1e-3, "the loaded weights reach the fused model: {moved}");
        assert!(
            gap(&fused, &plain) < 1e-5,
            "after a load: {}",
            gap(&fused, &plain)
        );
        let q = "model.layers.1.self_attn.q_proj.weight";
        let mut own = vs.variables()[q].shallow_clone();
        own.set_data(&own.copy());
        load(&build(5).0, Some(q));
        assert!(
            gap(&fused, &plain) < 1e-5,
            "a weight on its own: {}",
            gap(&fused, &plain)
        );
    }
    let vs = VarStore::new(Device::Cpu);
    let mut trains = CausalLm::new(&vs.root(), &tiny(false));
    let q = vs.variables()["model.layers.0.self_attn.q_proj.weight"].data_ptr();
    trains.fuse_projections();
    assert_eq!(
        vs.variables()["model.layers.0.self_attn.q_proj.weight"].data_ptr(),
        q
    );
}

#[test]
fn checkpoints_round_trip_with_hf_names() {
    let dir = std::env::temp_dir().join(format!("rlvr-ckpt-{}", std::process::id()));
    for tied in [false, true] {
        let a = Learner::new(&tiny(tied), learner_config(1e-3), 1);
        a.save_model(&dir).unwrap();
        let names: Vec<String> = Tensor::read_safetensors(dir.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            names.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"model.embed_tokens.weight".to_string()));
        assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
        let b = Learner::from_pretrained(&dir, learner_config(1e-3)).unwrap();
        let x = Tensor::from_slice(&[3i64, 4, 5, 6]).view([1, 4]);
        let d = tch::no_grad(|| {
            (a.model().forward(&x) - b.model().forward(&x))
                .abs()
                .max()
                .double_value(&[])
        });
        assert_eq!(d, 0.0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_mismatched_checkpoint_names_the_tensor() {
    let dir = std::env::temp_dir().join(format!("rlvr-bad-ckpt-{}", std::process::id()));
    Learner::new(&tiny(false), learner_config(1e-3), 1)
        .save_model(&dir)
        .unwrap();
    let mut other = tiny(false);
    other.intermediate_size = 48;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&other.to_hf_json("float32")).unwrap(),
    )
    .unwrap();
    let err = Learner::from_pretrained(&dir, learner_config(1e-3))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("mlp") && err.contains("shape"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adamw_matches_the_closed_form_first_step() {
    // One parameter p = 1 with loss 0.5 p (gradient 0.5), lr 0.1, weight decay 0.01:
    // m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25; p = 1 (1 - 0.001) - 0.1 * 0.5 / (0.5 + eps).
    let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![("p".into(), p.shallow_clone())],
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    );
    (&p * 0.5).sum(Kind::Double).backward();
    let norm = opt.clip_grad_norm(None);
    assert!((norm - 0.5).abs() < 1e-12);
    opt.step(0.1);
    let want = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
    assert!(
        (p.double_value(&[0]) - want).abs() < 1e-12,
        "{}",
        p.double_value(&[0])
    );
}

#[test]
fn gradient_clipping_scales_to_the_max_norm() {
    let p = Tensor::from_slice(&[1.0f64, 1.0]).set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![("p".into(), p.shallow_clone())],
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    );
    (&p * Tensor::from_slice(&[3.0f64, 4.0]))
        .sum(Kind::Double)
        .backward();
    assert!((opt.clip_grad_norm(Some(1.0)) - 5.0).abs() < 1e-12);
    let g = p.grad();
    assert!((g.norm().double_value(&[]) - 1.0).abs() < 1e-5);
}

#[test]
fn the_learner_learns_a_pattern_and_masks_ignored_labels() {
    let mut l = Learner::new(&tiny(true), learner_config(1e-2), 3);
    let seqs: Vec<Vec<i64>> = (0..8)
        .map(|i| (0..12).map(|j| (i + j) % 10 + 4).collect())
        .collect();
    let batch = TrainBatch::from_sequences(&seqs, 0);
    let first = l
        .train_step(std::slice::from_ref(&batch), Objective::Lm(Reduction::Mean))
        .unwrap();
    let mut last = first;
    for _ in 0..40 {
        last = l
            .train_step(std::slice::from_ref(&batch), Objective::Lm(Reduction::Mean))
            .unwrap();
    }
    assert!(last.loss < 0.3 * first.loss, "{} -> {}", first.loss, last.loss);
    assert_eq!(last.step, 41);
    assert_eq!(last.tokens, 8 * 11);
    // A sum-reduced loss of the same batch is the mean times the token count.
    let mean = l.eval_loss(&batch, Objective::Lm(Reduction::Mean)).unwrap();
    let sum = l.eval_loss(&batch, Objective::Lm(Reduction::Sum)).unwrap();
    assert!(
        (sum - mean * 88.0).abs() < 1e-3 * sum.abs().max(1.0),
        "{sum} vs {mean}"
    );
    // Out-of-vocabulary ids are an error, not a crash.
    let bad = TrainBatch::from_sequences(&[vec![1, 2, 99]], 0);
    assert!(l.train_step(&[bad], Objective::Lm(Reduction::Mean)).is_err());
}

#[test]
fn gradient_checkpointing_takes_the_same_steps() {
    // Two learners from one seed, one recomputing each layer in the backward pass: the same
    // losses and weights after three steps of two micro-batches (tied and untied heads).
    for tied in [true, false] {
        let mut plain = Learner::new(&tiny(tied), learner_config(1e-2), 5);
        let mut ckpt = Learner::new(&tiny(tied), learner_config(1e-2), 5);
        ckpt.set_gradient_checkpointing(true);
        let micro: Vec<TrainBatch> = (0..2)
            .map(|k| {
                let seqs: Vec<Vec<i64>> = (0..4)
                    .map(|i| (0..10).map(|j| (i * 3 + j * (k + 1)) % 30 + 4).collect())
                    .collect();
                TrainBatch::from_sequences(&seqs, 0)
            })
            .collect();
        for _ in 0..3 {
            let a = plain.train_step(&micro, Objective::Lm(Reduction::Mean)).unwrap();
            let b = ckpt.train_step(&micro, Objective::Lm(Reduction::Mean)).unwrap();
            assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
            assert!(
                (a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm,
                "{} vs {}",
                a.grad_norm,
                b.grad_norm
            );
        }
        let ids = Tensor::from_slice(&[4i64, 9, 13, 20, 7]).view([1, -1]);
        let (x, y) = tch::no_grad(|| (plain.model().forward(&ids), ckpt.model().forward(&ids)));
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "tied {tied}: logits differ by {diff}");
    }
}

#[test]
fn bf16_with_f32_master_weights_learns_and_resumes_exactly() {
    let seqs: Vec<Vec<i64>> = (0..8)
        .map(|i| (0..12).map(|j| (i + j) % 10 + 4).collect())
        .collect();
    let batch = TrainBatch::from_sequences(&seqs, 0);
    let step = |l: &mut Learner| {
        l.train_step(std::slice::from_ref(&batch), Objective::Lm(Reduction::Mean))
            .unwrap()
            .loss
    };
    let bf16 = || {
        let mut l = Learner::new(&tiny(true), learner_config(1e-2), 3);
        l.set_bf16().unwrap();
        l
    };
    let mut l = bf16();
    assert_eq!(
        l.model()
            .forward(&Tensor::from_slice(&[4i64, 5]).view([1, 2]))
            .kind(),
        Kind::BFloat16
    );
    let first = step(&mut l);
    let losses: Vec<f64> = (0..40).map(|_| step(&mut l)).collect();
    assert!(losses[39] < 0.3 * first, "{first} -> {}", losses[39]);
    assert!(l.set_bf16().is_err(), "only before the first step");

    // A checkpoint after 5 steps carries the f32 master weights: the resumed run repeats the
    // uninterrupted one's losses exactly.
    let dir = std::env::temp_dir().join(format!("rlvr-bf16-{}", std::process::id()));
    let mut a = bf16();
    for _ in 0..5 {
        step(&mut a);
    }
    a.save_checkpoint(&dir).unwrap();
    let mut b = bf16();
    b.load_checkpoint(&dir, 5).unwrap();
    for _ in 0..5 {
        assert_eq!(step(&mut a), step(&mut b));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sharded_bf16_checkpoints_load_into_an_f32_model() {
    // Two shards and their index, in bf16, as large Hugging Face checkpoints come.
    let vs = VarStore::new(Device::Cpu);
    let model = CausalLm::new(&vs.root(), &tiny(false));
    let dir = std::env::temp_dir().join(format!("rlvr-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let half = vars.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&vars[..half], &vars[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let bf16: Vec<(String, Tensor)> = part
            .iter()
            .map(|(n, t)| (n.clone(), t.to_kind(Kind::BFloat16)))
            .collect();
        Tensor::write_safetensors(&bf16, dir.join(&file)).unwrap();
        for (n, _) in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let loaded_vs = VarStore::new(Device::Cpu);
    let loaded = CausalLm::new(&loaded_vs.root(), &tiny(false));
    rlvr_learner::checkpoint::load_dir(&loaded_vs, &dir).unwrap();
    let ids = Tensor::from_slice(&[4i64, 9, 13]).view([1, -1]);
    let (a, b) = tch::no_grad(|| (model.forward(&ids), loaded.forward(&ids)));
    assert_eq!(b.kind(), Kind::Float);
    // bf16 rounding of the weights moves the logits a little, not more.
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(diff < 0.05, "{diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}
