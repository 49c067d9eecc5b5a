//! The one attention of every family: grouped-query attention through
//! `scaled_dot_product_attention`, with the family's projection biases and query/key norms
//! ([`QkNorm`]). [`Attention::qkv`] makes rotated queries, keys and values for every pass —
//! the full-sequence forward here, the cached decode (`cache.rs`) and the shared-prompt RL
//! forward (`prefix.rs`) — which differ only in where keys and values come from.

use tch::nn::Path;
use tch::Tensor;

use super::config::{Config, QkNorm};
use super::layers::{Fill, RmsNorm, Rope};
use super::linear::{few_rows, project_all_t, untranspose, Fused, Linear};
use super::Context;

#[derive(Debug)]
pub(super) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// q, k and v as one product, in an inference engine ([`Attention::fuse`]).
    fused: Option<Fused>,
    /// Query and key norms (Qwen3 per head, OLMo 2 over the whole projection).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    per_head_norm: bool,
    pub(super) n_head: i64,
    pub(super) n_kv: i64,
    pub(super) head_dim: i64,
}

impl Attention {
    pub(super) fn new(p: Path, c: &Config, fill: Fill) -> Self {
        let (h, hd, n_head, n_kv) = (c.hidden_size, c.head_dim, c.num_attention_heads, c.kv_heads());
        let layers = c.layers();
        let qk_norm = match layers.qk_norm {
            QkNorm::None => None,
            QkNorm::PerHead => Some((
                RmsNorm::new(&p / "q_norm", hd, c, fill),
                RmsNorm::new(&p / "k_norm", hd, c, fill),
            )),
            QkNorm::Whole => Some((
                RmsNorm::new(&p / "q_norm", n_head * hd, c, fill),
                RmsNorm::new(&p / "k_norm", n_kv * hd, c, fill),
            )),
        };
        Self {
            q_proj: Linear::new(&p / "q_proj", h, n_head * hd, layers.qkv_bias, fill),
            k_proj: Linear::new(&p / "k_proj", h, n_kv * hd, layers.qkv_bias, fill),
            v_proj: Linear::new(&p / "v_proj", h, n_kv * hd, layers.qkv_bias, fill),
            o_proj: Linear::new(&p / "o_proj", n_head * hd, h, layers.o_bias, fill),
            fused: None,
            qk_norm,
            per_head_norm: layers.qk_norm == QkNorm::PerHead,
            n_head,
            n_kv,
            head_dim: hd,
        }
    }

    /// Queries `[B, heads, T, head_dim]` and keys and values `[B, kv_heads, T, head_dim]` of
    /// `x` (`[B, T, hidden]`): projected (with biases), normed where the family norms them,
    /// queries and keys rotated by `rope` together (views of one tensor). With few rows on the
    /// CPU (a decode step) the three projections are one product and stay views of `W · xᵀ`.
    pub(super) fn qkv(&self, x: &Tensor, rope: &Rope) -> (Tensor, Tensor, Tensor) {
        let (b, t) = (x.size()[0], x.size()[1]);
        let projs = [&self.q_proj, &self.k_proj, &self.v_proj];
        let [q, k, v] = if few_rows(x) {
            let ys = project_all_t(&projs.map(|p| &p.weight), x);
            let mut out = projs
                .iter()
                .zip(&ys)
                .map(|(p, y)| untranspose(&p.add_bias_t(y), x));
            // Strided views: the rotation's concatenation, the cache and the attention
            // products read them as they are.
            let mut next = || out.next().unwrap_or_default();
            [next(), next(), next()]
        } else {
            let fused = self.fused.as_ref().and_then(|f| f.forward(&projs, x));
            fused
                .and_then(|ys| <[Tensor; 3]>::try_from(ys).ok())
                .unwrap_or_else(|| projs.map(|p| p.forward(x)))
        };
        let heads = |y: &Tensor, n: i64| y.reshape([b, t, n, self.head_dim]);
        let (q, k) = match &self.qk_norm {
            None => (heads(&q, self.n_head), heads(&k, self.n_kv)),
            Some((qn, kn)) if self.per_head_norm => (
                qn.forward(&heads(&q, self.n_head)),
                kn.forward(&heads(&k, self.n_kv)),
            ),
            Some((qn, kn)) => (
                heads(&qn.forward(&q), self.n_head),
                heads(&kn.forward(&k), self.n_kv),
            ),
        };
        let v = heads(&v, self.n_kv).transpose(1, 2);
        let qk = rope.rotate(&q.transpose(1, 2), &k.transpose(1, 2));
        (
            qk.narrow(1, 0, self.n_head),
            qk.narrow(1, self.n_head, self.n_kv),
            v,
        )
    }

    /// Lay q, k and v out as one projection (weights that do not train: an inference
    /// engine's), so that every pass but a CPU decode step makes them with one product.
    pub(super) fn fuse(&mut self) {
        self.fused = Fused::new(&[&self.q_proj, &self.k_proj, &self.v_proj]);
    }

    /// Keys or values of the key/value heads repeated for every query head that reads them.
    pub(super) fn repeat_kv(&self, x: Tensor) -> Tensor {
        let rep = self.n_head / self.n_kv;
        if rep > 1 {
            x.repeat_interleave_self_int(rep, 1, None)
        } else {
            x
        }
    }

    /// The output projection of attention's result `y` (`[B, heads, T, head_dim]`): `[B, T, hidden]`.
    pub(super) fn output(&self, y: &Tensor) -> Tensor {
        let (b, t) = (y.size()[0], y.size()[2]);
        let y = y
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.n_head * self.head_dim]);
        if few_rows(&y) {
            return untranspose(&self.o_proj.forward_t(&y), &y);
        }
        self.o_proj.forward(&y)
    }

    /// Full-sequence attention of `x` over itself: causal, or under the packed rows' mask.
    pub(super) fn forward(&self, x: &Tensor, ctx: &Context) -> Tensor {
        let (q, k, v) = self.qkv(x, &ctx.rope);
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let y = match &ctx.mask {
            Some(mask) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false)
            }
            None => Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None, false),
        };
        self.output(&y)
    }

    /// The parameters in a fixed order: q, k, v, o (each weight then bias), then the norms.
    pub(super) fn parameters(&self) -> Vec<Tensor> {
        let mut params: Vec<Tensor> = [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
            .into_iter()
            .flat_map(Linear::parameters)
            .collect();
        if let Some((qn, kn)) = &self.qk_norm {
            params.extend([qn.weight.shallow_clone(), kn.weight.shallow_clone()]);
        }
        params
    }
}
