//! Where a decode step's time goes on the CPU, for a SmolLM2-135M-shaped model at 32 rows:
//! the whole cached step, and the projections computed as `x · Wᵀ` (`linear`) against
//! `(W · xᵀ)ᵀ`, which the model uses for few rows (see `learner/src/llama.rs`, `project`).
//!
//! `cargo run --release -p rlvr-rollout --example profile_decode`

use std::time::Instant;

use rlvr_learner::llama::{Config, KvCache, Llama};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn time(name: &str, reps: u32, f: &dyn Fn()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!(
        "{name:<40} {:>8.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(reps)
    );
}

fn main() {
    let config: Config = serde_json::from_value(serde_json::json!({
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
        "tie_word_embeddings": true, "max_position_embeddings": 8192
    }))
    .expect("config");
    let vs = VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    let rows = 32;
    let mut cache = KvCache::new(&config, rows, 144, Kind::Float, Device::Cpu);
    tch::no_grad(|| {
        let prompt = Tensor::zeros([rows, 16], (Kind::Int64, Device::Cpu));
        let one = Tensor::zeros([rows, 1], (Kind::Int64, Device::Cpu));
        let cache = std::cell::RefCell::new(&mut cache);
        time("prefill 32 x 16 tokens, no LM head", 3, &|| {
            drop(
                model
                    .forward_cached(&prompt, 0, &[0; 32], &mut cache.borrow_mut())
                    .expect("prefill"),
            );
        });
        time("decode step before the LM head, 32 rows", 10, &|| {
            drop(
                model
                    .forward_cached(&one, 0, &[80; 32], &mut cache.borrow_mut())
                    .expect("decode"),
            );
        });
        let x = Tensor::randn([rows, 576], (Kind::Float, Device::Cpu));
        for (name, out) in [("MLP gate (1536 x 576)", 1536), ("LM head (49152 x 576)", 49152)] {
            let w = Tensor::randn([out, 576], (Kind::Float, Device::Cpu));
            time(&format!("{name}: x . W^T"), 20, &|| {
                drop(x.linear::<Tensor>(&w, None))
            });
            time(&format!("{name}: (W . x^T)^T"), 20, &|| {
                drop(w.matmul(&x.tr()).tr().contiguous())
            });
        }
    });
}
