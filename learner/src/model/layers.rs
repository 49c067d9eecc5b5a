//! The layers every family shares: parameters (initialised as transformers does, or left empty
//! for a checkpoint), RMSNorm, rotary embeddings, the SwiGLU MLP, and the decoder block, which
//! puts the norms where the family does ([`NormPosition`]). Attention is in `attention.rs`.

use std::sync::Arc;

use rlvr_dist::ProcessGroup;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::attention::Attention;
use super::config::{Config, NormPosition};
use super::linear::{few_rows, project_all_t, times, untranspose, Fused, Linear};
use super::{tensor_parallel, Context};

/// How a new model's parameters are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// As transformers initialises them: weights N(0, 0.02), norm weights 1, biases 0.
    Init,
    /// Allocated in the store's element type and left unset, for a checkpoint to be copied in:
    /// nothing is drawn and nothing is held in another type first.
    Empty,
}

/// A new trainable parameter `name` under `p`, filled with `init` unless `fill` leaves it empty.
pub(super) fn param(p: &Path, name: &str, dims: &[i64], init: Init, fill: Fill) -> Tensor {
    match fill {
        Fill::Init => p.var(name, dims, init),
        Fill::Empty => p.add(name, Tensor::empty(dims, (p.kind(), p.device())), true),
    }
}

/// transformers' initialisation of weight matrices and embeddings.
pub(super) const NORMAL: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

#[derive(Debug)]
pub(super) struct RmsNorm {
    pub(super) weight: Tensor,
    eps: f64,
    weight_in_f32: bool,
}

impl RmsNorm {
    pub(super) fn new(p: Path, dim: i64, c: &Config, fill: Fill) -> Self {
        Self {
            weight: param(&p, "weight", &[dim], Init::Const(1.0), fill),
            eps: c.rms_norm_eps,
            weight_in_f32: c.layers().norm_weight_in_f32,
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        if self.weight_in_f32 && x.kind() != Kind::Float {
            // OLMo 2 multiplies by the weight in f32 and casts after.
            let w = self.weight.to_kind(Kind::Float);
            return x
                .to_kind(Kind::Float)
                .rms_norm([dim], Some(&w), self.eps)
                .to_kind(x.kind());
        }
        // libtorch's fused RMSNorm (one kernel on CUDA instead of eight): accumulated in f32
        // like transformers' LlamaRMSNorm, which casts to the input type before the weight.
        x.rms_norm([dim], Some(&self.weight), self.eps)
    }
}

/// Rotary embedding tables, computed in f32 and stored in the model's element type, as
/// transformers does: `cos`, and `sin` with its first half negated, so that a rotation is
/// `x · cos + swap(x) · sin` (`swap` exchanging the halves of each head) — transformers'
/// `x · cos + rotate_half(x) · sin` to the bit (the sign moves from `x` to the table) in
/// five kernels for queries and keys together, where rotating each took five.
#[derive(Debug)]
pub(super) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// The tables of `freqs` (`[..., head_dim / 2]`, f32): `[..., head_dim]` in `kind`, each
    /// computed over the doubled angles as transformers computes it (the same bits).
    fn of(freqs: &Tensor, kind: Kind) -> Self {
        let angles = Tensor::cat(&[freqs, freqs], -1);
        let (sin, half) = (angles.sin(), freqs.size().last().copied().unwrap_or(0));
        Self {
            cos: angles.cos().to_kind(kind),
            sin: Tensor::cat(&[sin.narrow(-1, 0, half).neg(), sin.narrow(-1, half, half)], -1).to_kind(kind),
        }
    }

    /// Tables for positions `start..start+len`: each `[len, head_dim]`.
    pub(super) fn positions(inv_freq: &Tensor, start: i64, len: i64, kind: Kind) -> Self {
        let pos = Tensor::arange_start(start, start + len, (Kind::Float, inv_freq.device()));
        Self::of(&(pos.unsqueeze(1) * inv_freq.unsqueeze(0)), kind)
    }

    /// Tables for per-row positions `[B, T]`: each `[B, 1, T, head_dim]`.
    pub(super) fn at(inv_freq: &Tensor, positions: &Tensor, kind: Kind) -> Self {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq.view([1, 1, -1]);
        Self::of(&freqs.unsqueeze(1), kind)
    }

    /// Queries `[B, heads, T, head_dim]` and keys `[B, kv_heads, T, head_dim]` rotated, as one
    /// tensor of their heads side by side (split it at `heads`).
    pub(super) fn rotate(&self, q: &Tensor, k: &Tensor) -> Tensor {
        let x = Tensor::cat(&[q, k], 1);
        let half = x.size()[3] / 2;
        let swapped = Tensor::cat(&[x.narrow(3, half, half), x.narrow(3, 0, half)], -1);
        &x * &self.cos + swapped * &self.sin
    }
}

#[derive(Debug)]
pub(super) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    /// Gate and up as one product, in an inference engine ([`Block::fuse`]).
    fused: Option<Fused>,
}

impl Mlp {
    fn new(p: Path, c: &Config, fill: Fill) -> Self {
        let (h, i, bias) = (c.hidden_size, c.intermediate_size, c.layers().mlp_bias);
        Self {
            gate_proj: Linear::new(&p / "gate_proj", h, i, bias, fill),
            up_proj: Linear::new(&p / "up_proj", h, i, bias, fill),
            down_proj: Linear::new(&p / "down_proj", i, h, bias, fill),
            fused: None,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if few_rows(x) {
            // A decode step stays in `[features, rows]` from the gate to the down projection,
            // whose `W · a` then needs no transposed operand (measured 8% faster).
            let [g, u] = [&self.gate_proj, &self.up_proj];
            let gate_up = project_all_t(&[&g.weight, &u.weight], x);
            let a = g.add_bias_t(&gate_up[0]).silu() * u.add_bias_t(&gate_up[1]);
            let down = self.down_proj.add_bias_t(&times(&self.down_proj.weight, &a));
            return untranspose(&down, x);
        }
        let gate_up = [&self.gate_proj, &self.up_proj];
        if let Some([gate, up]) = self
            .fused
            .as_ref()
            .and_then(|f| f.forward(&gate_up, x))
            .and_then(|ys| <[Tensor; 2]>::try_from(ys).ok())
        {
            return self.down_proj.forward(&(gate.silu() * up));
        }
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }

    fn parameters(&self) -> Vec<Tensor> {
        [&self.gate_proj, &self.up_proj, &self.down_proj]
            .into_iter()
            .flat_map(Linear::parameters)
            .collect()
    }
}

/// One decoder layer: attention and the MLP, each with its norm and residual add.
#[derive(Debug)]
pub(super) struct Block {
    /// `input_layernorm` before attention, or OLMo 2's `post_attention_layernorm` after it.
    attn_norm: RmsNorm,
    pub(super) self_attn: Attention,
    /// `post_attention_layernorm` before the MLP, or OLMo 2's `post_feedforward_layernorm`
    /// after it.
    mlp_norm: RmsNorm,
    mlp: Mlp,
    norms: NormPosition,
    /// The tensor-parallel group whose ranks hold the rest of this layer's heads and channels.
    pub(super) tensor_parallel: Option<Arc<ProcessGroup>>,
}

impl Block {
    pub(super) fn new(p: Path, c: &Config, fill: Fill) -> Self {
        let norms = c.layers().norms;
        let (attn_norm, mlp_norm) = match norms {
            NormPosition::Pre => ("input_layernorm", "post_attention_layernorm"),
            NormPosition::Post => ("post_attention_layernorm", "post_feedforward_layernorm"),
        };
        let attn_norm = RmsNorm::new(&p / attn_norm, c.hidden_size, c, fill);
        let self_attn = Attention::new(&p / "self_attn", c, fill);
        let mlp_norm = RmsNorm::new(&p / mlp_norm, c.hidden_size, c, fill);
        Self {
            attn_norm,
            self_attn,
            mlp_norm,
            mlp: Mlp::new(&p / "mlp", c, fill),
            norms,
            tensor_parallel: None,
        }
    }

    /// The layer on residual streams that attend together (one sequence batch, or prompts and
    /// the responses that continue them): `attend` maps the attention inputs of every stream
    /// to their attention outputs.
    pub(super) fn forward_streams(
        &self,
        xs: &[Tensor],
        attend: impl FnOnce(&Attention, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        // Under tensor parallelism attention's and the MLP's outputs are partial sums over
        // this rank's heads and channels, completed before they join the residual stream.
        let whole = |t: Tensor| match &self.tensor_parallel {
            Some(group) => tensor_parallel::all_reduce(group, t),
            None => t,
        };
        match self.norms {
            NormPosition::Pre => {
                let normed: Vec<Tensor> = xs.iter().map(|x| self.attn_norm.forward(x)).collect();
                let attended = attend(&self.self_attn, &normed);
                xs.iter()
                    .zip(attended)
                    .map(|(x, a)| {
                        let h = x + whole(a);
                        &h + whole(self.mlp.forward(&self.mlp_norm.forward(&h)))
                    })
                    .collect()
            }
            NormPosition::Post => {
                let attended = attend(&self.self_attn, xs);
                xs.iter()
                    .zip(attended)
                    .map(|(x, a)| {
                        let h = x + self.attn_norm.forward(&whole(a));
                        &h + self.mlp_norm.forward(&whole(self.mlp.forward(&h)))
                    })
                    .collect()
            }
        }
    }

    /// The layer on one residual stream, `attend` giving attention's output for its input.
    pub(super) fn forward_with(
        &self,
        x: &Tensor,
        attend: impl FnOnce(&Attention, &Tensor) -> Tensor,
    ) -> Tensor {
        let mut out = self.forward_streams(std::slice::from_ref(x), |a, xs| vec![attend(a, &xs[0])]);
        out.swap_remove(0)
    }

    /// The layer on full sequences (`ctx`: their rotary tables and mask).
    pub(super) fn forward(&self, x: &Tensor, ctx: &Context) -> Tensor {
        self.forward_with(x, |attn, h| attn.forward(h, ctx))
    }

    /// Lay out the projections that read one input (q/k/v, gate/up) as one each, for weights
    /// that do not train (an inference engine's).
    pub(super) fn fuse(&mut self) {
        self.self_attn.fuse();
        self.mlp.fused = Fused::new(&[&self.mlp.gate_proj, &self.mlp.up_proj]);
    }

    /// The layer's parameters, in a fixed order (the unit order of ZeRO-3).
    pub(super) fn parameters(&self) -> Vec<Tensor> {
        let mut params = vec![self.attn_norm.weight.shallow_clone()];
        params.extend(self.self_attn.parameters());
        params.push(self.mlp_norm.weight.shallow_clone());
        params.extend(self.mlp.parameters());
        params
    }
}

#[cfg(test)]
mod tests {
    use super::Rope;
    use tch::{Device, Kind, Tensor};

    /// Queries and keys rotated together equal transformers' `apply_rotary_pos_emb` (tables
    /// `cat(freqs, freqs)`'s cos and sin, `x · cos + rotate_half(x) · sin`) to the bit, in f32
    /// and in bf16.
    #[test]
    fn rotating_together_is_transformers_rotation_to_the_bit() {
        let inv_freq = Tensor::from_slice(&[1.0f32, 0.3, 0.05, 0.001]);
        let positions = Tensor::from_slice(&[0i64, 5, 17, 4000, 3, 9]).view([2, 3]);
        for kind in [Kind::Float, Kind::BFloat16] {
            let rope = Rope::at(&inv_freq, &positions, kind);
            let q = Tensor::randn([2, 4, 3, 8], (Kind::Float, Device::Cpu)).to_kind(kind);
            let k = Tensor::randn([2, 2, 3, 8], (Kind::Float, Device::Cpu)).to_kind(kind);
            let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq.view([1, 1, -1]);
            let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
            let (cos, sin) = (emb.cos().to_kind(kind), emb.sin().to_kind(kind));
            let transformers = |x: &Tensor| {
                let rotated = Tensor::cat(&[x.narrow(3, 4, 4).neg(), x.narrow(3, 0, 4)], -1);
                x * &cos + rotated * &sin
            };
            let both = rope.rotate(&q, &k);
            assert!(both.narrow(1, 0, 4).equal(&transformers(&q)), "{kind:?} queries");
            assert!(both.narrow(1, 4, 2).equal(&transformers(&k)), "{kind:?} keys");
        }
    }
}
