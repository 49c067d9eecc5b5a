//! Where a decode step's time goes, for a SmolLM2-135M-shaped model at 32 rows (or as many as
//! the third argument says): the whole
//! cached step, single operations of it (a GPU step is bound by how many kernels it launches,
//! so the cheapest one sets the floor), the model's LM head, choosing the next tokens from the
//! logits (libtorch's operations against the fused CPU kernel), and projections through libtorch
//! computed as `x · Wᵀ` (`linear`) against `(W · xᵀ)ᵀ`, the form the model uses for few rows on
//! the CPU where its own f32 kernel does not apply (see `learner/src/model/linear.rs`).
//!
//! `cargo run --release -p rlvr-rollout --example profile_decode [cpu|cuda] [f32|bf16] [ROWS]`

use std::time::Instant;

use rlvr_learner::model::{choose_tokens, CachedRow, CausalLm, Config, KvCache};
use rlvr_rollout::sampling::choose_rows;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn time(device: Device, name: &str, reps: u32, f: &dyn Fn()) {
    f();
    sync(device);
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    sync(device);
    println!(
        "{name:<40} {:>8.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(reps)
    );
}

fn main() {
    let config: Config = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
        "tie_word_embeddings": true, "max_position_embeddings": 8192
    }))
    .expect("config");
    // As `rlvr` starts: CUDA kernels registered, freed buffers reused from the heap (without
    // it, each step's fresh 6 MB logits-sized buffers cost page faults).
    rlvr_learner::runtime::init();
    let args: Vec<String> = std::env::args().collect();
    let device = match args.get(1).map(String::as_str) {
        Some("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let kind = match args.get(2).map(String::as_str) {
        Some("bf16") => Kind::BFloat16,
        _ => Kind::Float,
    };
    println!("{device:?}, {kind:?}");
    let mut vs = VarStore::new(device);
    let model = CausalLm::new(&vs.root(), &config);
    vs.set_kind(kind);
    // As the engine does: parameters outside autograd, which the CPU decode kernel requires.
    vs.freeze();
    let rows: i64 = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(32);
    // `rows` sequences of 144 positions in blocks of 16, each its own.
    let mut cache = KvCache::new(&config, rows * 9, 16, kind, device);
    let tables: Vec<Vec<i64>> = (0..rows).map(|r| (r * 9..r * 9 + 9).collect()).collect();
    let at = |start: i64, len: i64| -> Vec<CachedRow> {
        tables
            .iter()
            .map(|t| CachedRow {
                blocks: t,
                start,
                len,
            })
            .collect()
    };
    let time = |name: &str, reps: u32, f: &dyn Fn()| time(device, name, reps, f);
    tch::no_grad(|| {
        let prompt = Tensor::zeros([rows, 16], (Kind::Int64, device));
        let one = Tensor::zeros([rows, 1], (Kind::Int64, device));
        let cache = std::cell::RefCell::new(&mut cache);
        time(&format!("prefill {rows} x 16 tokens, no LM head"), 3, &|| {
            drop(
                model
                    .forward_cached(&prompt, &at(0, 16), &mut cache.borrow_mut())
                    .expect("prefill"),
            );
        });
        time(
            &format!("decode step before the LM head, {rows} rows"),
            10,
            &|| {
                drop(
                    model
                        .forward_cached(&one, &at(80, 1), &mut cache.borrow_mut())
                        .expect("decode"),
                );
            },
        );
        let x = Tensor::randn([rows, 576], (kind, device));
        time(&format!("LM head of the model, {rows} rows"), 20, &|| {
            drop(model.logits(&x))
        });
        // The next tokens from f32 logits (as the engine has them), one draw per row: libtorch's
        // operations a slice of 16 MB of rows at a time on the CPU (as the engine ran them
        // before `choose_tokens`, and still does off x86-64), all rows on a GPU; then the fused
        // CPU kernel.
        let logits = Tensor::randn([rows, 49152], (Kind::Float, device)) * 3.0;
        let draws: Vec<f32> = (0..rows).map(|r| (r * 7919 % 1000) as f32 / 1000.0).collect();
        let slice = if device == Device::Cpu {
            (16 << 20) / (49152 * 4)
        } else {
            rows
        };
        time(&format!("choosing tokens, {rows} rows: libtorch ops"), 5, &|| {
            for start in (0..rows).step_by(slice as usize) {
                let len = slice.min(rows - start);
                let draws = &draws[start as usize..(start + len) as usize];
                drop(choose_rows(&logits.narrow(0, start, len), 1.0, Some(draws)));
            }
        });
        if choose_tokens(&logits, 1.0, Some(&draws)).is_some() {
            time(
                &format!("choosing tokens, {rows} rows: rlvr's fused kernel"),
                5,
                &|| drop(choose_tokens(&logits, 1.0, Some(&draws))),
            );
        }
        let w = Tensor::ones([576], (kind, device));
        time(&format!("one elementwise add [{rows}, 576]"), 200, &|| {
            drop(&x + 1.0)
        });
        time(&format!("rms_norm [{rows}, 576]"), 200, &|| {
            drop(x.rms_norm([576], Some(&w), 1e-5))
        });
        time(&format!("rms_norm [{rows}, 576] as 8 single ops"), 200, &|| {
            let xf = x.to_kind(Kind::Float);
            let var = xf.pow_tensor_scalar(2).mean_dim(&[-1i64][..], true, Kind::Float);
            drop(&w * (xf * (var + 1e-5).rsqrt()).to_kind(kind))
        });
        let q = Tensor::randn([rows, 9, 1, 64], (kind, device));
        let k = Tensor::randn([rows, 9, 96, 64], (kind, device));
        let mask = Tensor::ones([rows, 1, 1, 96], (Kind::Bool, device));
        time(
            &format!("attention, {rows} x 9 heads x 96 keys, masked"),
            200,
            &|| {
                drop(Tensor::scaled_dot_product_attention(
                    &q,
                    &k,
                    &k,
                    Some(&mask),
                    0.0,
                    false,
                    None,
                    true,
                ))
            },
        );
        for (name, out) in [("MLP gate (1536 x 576)", 1536), ("LM head (49152 x 576)", 49152)] {
            let w = Tensor::randn([out, 576], (kind, device));
            time(&format!("{name}: x . W^T"), 20, &|| {
                drop(x.linear::<Tensor>(&w, None))
            });
            time(&format!("{name}: (W . x^T)^T"), 20, &|| {
                drop(w.matmul(&x.tr()).tr().contiguous())
            });
        }
    });
}
