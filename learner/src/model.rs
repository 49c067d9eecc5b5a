//! The decoder-only causal LMs rlvr trains and generates with — Llama 2/3.x and SmolLM2,
//! Mistral, Qwen2/2.5, Qwen3 and OLMo 2 — on libtorch, with Hugging Face tensor names so
//! checkpoints load and save as safetensors that `transformers` reads.
//!
//! Shape follows candle's model files: a [`Config`] (`config.rs`) read from `config.json` and
//! dispatched on `model_type`, whose [`Layers`] say what a family's layers have; one
//! implementation of each layer (`layers.rs`: RMSNorm, rotary embeddings, the SwiGLU MLP, the
//! decoder block with the family's norm placement; `attention.rs`: grouped-query attention
//! with the family's biases and query/key norms). The passes differ only in where attention's
//! keys and values come from: the full sequence (here), a paged KV cache for generation
//! (`cache.rs`; on a GPU as a fixed-shape step a CUDA graph captures, `fixed_decode.rs`), or
//! a prompt shared by several responses for RL batches (`prefix.rs`);
//! [`CausalLm::backward_by_unit`] (`units.rs`) runs one parameter unit at a time for ZeRO-3.
//! Its projections (`linear.rs`) run a CPU decode step as `W · xᵀ`, kept transposed where the
//! next operation allows, and in f32 through an AVX2/AVX-512 kernel of their own
//! (`skinny.rs`); its attention reads each sequence's own cached positions only
//! (`decode_attention.rs`), and [`choose_tokens`] picks each row's next token from its logits
//! in two passes (`token_choice.rs`).

mod attention;
mod cache;
mod config;
mod decode_attention;
mod fixed_decode;
mod isa;
mod layers;
mod linear;
mod omp;
mod prefix;
mod skinny;
pub mod tensor_parallel;
mod token_choice;
mod units;

pub use cache::{CachedRow, KvCache};
pub use config::{Config, ConfigError, Family, Layers, NormPosition, QkNorm, RopeScaling};
pub use fixed_decode::FixedDecode;
pub use layers::Fill;
pub use token_choice::choose_tokens;

/// Which kernel multiplies an f32 decode step's projections on this CPU (`skinny.rs` with its
/// widest instruction set, or libtorch's `mm`).
pub fn cpu_decode_kernel() -> &'static str {
    skinny::kernel_name()
}

/// Which kernel attends an f32 decode step over the KV cache on this CPU
/// (`decode_attention.rs`, or libtorch's SDPA).
pub fn cpu_decode_attention() -> &'static str {
    decode_attention::kernel_name()
}
use std::sync::Arc;

use layers::{param, Block, RmsNorm, Rope, NORMAL};
use linear::{project, Linear};
use rlvr_dist::ProcessGroup;
use tch::nn::Path;
use tch::{Kind, Tensor};
pub use units::Units;

/// Packed rows (several documents per row): each token's position within its document and
/// its document, both `[batch, seq]` int64 on the model's device. Attention stays inside a
/// document and positions restart with each, so each document computes what it would alone.
#[derive(Debug)]
pub struct Documents {
    /// Position of each token within its document.
    pub position_ids: Tensor,
    /// Document of each token within its row.
    pub document_ids: Tensor,
}

/// What every layer of a full-sequence pass needs: rotary tables and, for packed rows, the
/// `[B, 1, T, T]` mask (causal within a document); without one, attention is plainly causal.
struct Context {
    rope: Rope,
    mask: Option<Tensor>,
}

/// A causal language model of one of the [`Family`]s. Variables live in the `VarStore` passed
/// to [`CausalLm::new`] under HF names (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Debug)]
pub struct CausalLm {
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    inv_freq: Tensor,
    config: Config,
}

impl CausalLm {
    /// Build the model with freshly initialised weights (normal, σ = 0.02, as transformers).
    pub fn new(root: &Path, config: &Config) -> Self {
        Self::build(root, config, Fill::Init)
    }

    /// Build the model with its parameters allocated in the store's element type and left
    /// unset, for a checkpoint to be copied in ([`crate::checkpoint::load_dir`]).
    pub fn for_loading(root: &Path, config: &Config) -> Self {
        Self::build(root, config, Fill::Empty)
    }

    fn build(root: &Path, config: &Config, fill: Fill) -> Self {
        let m = root / "model";
        let embed_tokens = param(
            &(&m / "embed_tokens"),
            "weight",
            &[config.vocab_size, config.hidden_size],
            NORMAL,
            fill,
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::new(&m / "layers" / i, config, fill))
            .collect();
        let norm = RmsNorm::new(&m / "norm", config.hidden_size, config, fill);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            Linear::new(
                root / "lm_head",
                config.hidden_size,
                config.vocab_size,
                false,
                fill,
            )
        });
        let inv_freq = Tensor::from_slice(&config.inv_freq())
            .to_kind(Kind::Float)
            .to_device(root.device());
        Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            config: config.clone(),
        }
    }

    /// Lay out each layer's projections that read one input (q/k/v, gate/up) as one product
    /// each, where the weights do not train (an inference engine's: call it after
    /// `VarStore::freeze`). The weights stay under their names as views of the stacks, so
    /// weights loaded by name land there; a pass finds a stack no longer backing its views
    /// (a conversion gave a weight memory of its own) and projects one by one. On a GPU it
    /// takes three kernels off each layer; on the CPU it saves nothing (one product of the
    /// stack took as long as the three), and a decode step stacks its own there (`linear.rs`).
    pub fn fuse_projections(&mut self) {
        for layer in &mut self.layers {
            layer.fuse();
        }
    }

    /// Make this model one rank's share of a tensor-parallel model over `group`: built from
    /// [`tensor_parallel::shard_config`] of the whole model's configuration, its layers then
    /// complete their partial sums over the group.
    pub fn set_tensor_parallel(&mut self, group: Arc<ProcessGroup>) {
        for layer in &mut self.layers {
            layer.tensor_parallel = Some(group.clone());
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> tch::Device {
        self.embed_tokens.device()
    }

    /// Token embeddings; the padding id's row gets no gradient, as in transformers.
    fn embed(&self, ids: &Tensor) -> Tensor {
        let padding = self
            .config
            .pad_token_id
            .filter(|&p| (0..self.config.vocab_size).contains(&p))
            .unwrap_or(-1);
        Tensor::embedding(&self.embed_tokens, ids, padding, false, false)
    }

    /// Final hidden states `[batch, seq, hidden]` for token ids `[batch, seq]`.
    pub fn hidden_states(&self, input_ids: &Tensor) -> Tensor {
        self.hidden_states_of(input_ids, None)
    }

    /// [`CausalLm::hidden_states`] of rows that hold one sequence each (`None`) or several
    /// packed documents.
    pub fn hidden_states_of(&self, input_ids: &Tensor, documents: Option<&Documents>) -> Tensor {
        let ctx = self.context(input_ids.size()[1], documents);
        let mut x = self.embed(input_ids);
        for layer in &self.layers {
            x = layer.forward(&x, &ctx);
        }
        self.norm.forward(&x)
    }

    /// Rotary tables and mask for `t` positions per row.
    fn context(&self, t: i64, documents: Option<&Documents>) -> Context {
        let kind = self.embed_tokens.kind();
        match documents {
            None => Context {
                rope: Rope::positions(&self.inv_freq, 0, t, kind),
                mask: None,
            },
            Some(d) => {
                let ids = &d.document_ids;
                let causal = Tensor::ones([t, t], (Kind::Bool, ids.device())).tril(0);
                let same = ids.unsqueeze(2).eq_tensor(&ids.unsqueeze(1));
                Context {
                    rope: Rope::at(&self.inv_freq, &d.position_ids, kind),
                    mask: Some(same.logical_and(&causal).unsqueeze(1)),
                }
            }
        }
    }

    /// Back-propagate `loss` (a scalar of the final hidden states) through the model while
    /// holding one decoder layer's activations at a time — gradient checkpointing per layer. A
    /// forward pass without autograd keeps each layer's input; the loss is back-propagated to
    /// the last layer's output; then each layer, last to first, is recomputed from its input
    /// and back-propagated with its output's gradient `g` (as the gradient of `Σ out ⊙ g`).
    /// Parameter gradients accumulate as in a plain `backward`, for one more forward pass of
    /// compute. Returns the loss, detached.
    pub fn backward_checkpointed(
        &self,
        input_ids: &Tensor,
        documents: Option<&Documents>,
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Tensor {
        let ctx = self.context(input_ids.size()[1], documents);
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = tch::no_grad(|| self.embed(input_ids));
        for layer in &self.layers {
            let next = tch::no_grad(|| layer.forward(&x, &ctx));
            inputs.push(x);
            x = next;
        }
        let top = x.detach().set_requires_grad(true);
        let value = loss(&self.norm.forward(&top));
        value.backward();
        let mut grad = top.grad();
        for (layer, input) in self.layers.iter().zip(&inputs).rev() {
            let xi = input.detach().set_requires_grad(true);
            let out = layer.forward(&xi, &ctx);
            (out * &grad).sum(Kind::Float).backward();
            grad = xi.grad();
        }
        (self.embed(input_ids) * &grad).sum(Kind::Float).backward();
        value.detach()
    }

    /// Logits of final hidden states (the LM head, or the tied embedding).
    pub fn logits(&self, h: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => project(h, &self.embed_tokens),
        }
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (causal attention).
    pub fn forward(&self, input_ids: &Tensor) -> Tensor {
        self.logits(&self.hidden_states(input_ids))
    }
}
