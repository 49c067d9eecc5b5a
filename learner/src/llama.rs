//! The Llama architecture (Llama 3.x and SmolLM2) on libtorch, with Hugging Face tensor names so
//! checkpoints load and save as `model.safetensors` that `transformers` reads.
//!
//! Shape follows candle's `models/llama.rs`: a [`Config`] (in `config.rs`) read from
//! `config.json`, RMSNorm, rotary embeddings (with Llama 3.1's `llama3` frequency scaling),
//! grouped-query attention through `scaled_dot_product_attention`, and a SwiGLU MLP. [`Llama::hidden_shared`] (in
//! `prefix.rs`) runs RL batches whose responses share prompts; [`Llama::backward_by_unit`] (in
//! `units.rs`) runs one parameter unit at a time for ZeRO-3.
//! Its projections (`linear.rs`) run a CPU decode step as `W · xᵀ`, kept transposed where the
//! next operation allows, and in f32 through an AVX2 kernel of their own (`skinny.rs`).

mod config;
mod linear;
mod prefix;
mod skinny;
mod units;

pub use config::{Config, RopeScaling};
use linear::{few_rows, project, project_all_t, times, untranspose, Linear};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};
pub use units::Units;

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        // libtorch's fused RMSNorm (one kernel on CUDA instead of eight): accumulated in f32
        // like transformers' LlamaRMSNorm, which casts to the input type before the weight.
        let dim = self.weight.size()[0];
        x.rms_norm([dim], Some(&self.weight), self.eps)
    }
}

/// Rotary embedding tables for positions `start..start+len`: `(cos, sin)`, each `[len, head_dim]`,
/// computed in f32 and stored in the model's `kind`, as transformers does.
fn rope_tables(inv_freq: &Tensor, start: i64, len: i64, kind: Kind) -> (Tensor, Tensor) {
    let pos = Tensor::arange_start(start, start + len, (Kind::Float, inv_freq.device()));
    let freqs = pos.unsqueeze(1) * inv_freq.unsqueeze(0);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
}

/// Rotary tables for per-row positions `[B, T]`: `(cos, sin)`, each `[B, 1, T, head_dim]` in
/// `kind`.
fn rope_at(inv_freq: &Tensor, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
    let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq.view([1, 1, -1]);
    let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
    (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
}

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
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Rotate `x` by tables of its own kind (transformers' `apply_rotary_pos_emb`).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_head: i64,
    n_kv: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: Path, c: &Config) -> Self {
        let (h, hd) = (c.hidden_size, c.head_dim());
        Self {
            q_proj: Linear::new(&p / "q_proj", h, c.num_attention_heads * hd),
            k_proj: Linear::new(&p / "k_proj", h, c.kv_heads() * hd),
            v_proj: Linear::new(&p / "v_proj", h, c.kv_heads() * hd),
            o_proj: Linear::new(&p / "o_proj", c.num_attention_heads * hd, h),
            n_head: c.num_attention_heads,
            n_kv: c.kv_heads(),
            head_dim: hd,
        }
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let shape = |y: Tensor, heads: i64| y.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let q = apply_rope(&shape(self.q_proj.forward(x), self.n_head), &ctx.cos, &ctx.sin);
        let k = apply_rope(&shape(self.k_proj.forward(x), self.n_kv), &ctx.cos, &ctx.sin);
        let v = shape(self.v_proj.forward(x), self.n_kv);
        let rep = self.n_head / self.n_kv;
        let (k, v) = if rep > 1 {
            (
                k.repeat_interleave_self_int(rep, 1, None),
                v.repeat_interleave_self_int(rep, 1, None),
            )
        } else {
            (k, v)
        };
        let y = match &ctx.mask {
            Some(mask) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false)
            }
            None => Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None, false),
        };
        let y = y
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.n_head * self.head_dim]);
        self.o_proj.forward(&y)
    }
}

impl Attention {
    /// Attention of new tokens over the cache: writes their keys and values at their positions
    /// in slots `first_slot..first_slot + B`, then attends to every cached position up to
    /// each query's own (`mask`, `[B, 1, T, L]`).
    fn forward_cached(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        step: &CacheStep,
        ck: &Tensor,
        cv: &Tensor,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let shape = |y: Tensor, heads: i64| y.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let (q, k, v) = if few_rows(x) {
            // One product for the three; keys and values only go into the cache, which a
            // strided copy fills as well: they stay views of `W · xᵀ`, `[heads · hd, B · T]`.
            let [q, k, v] = [&self.q_proj, &self.k_proj, &self.v_proj].map(|p| &p.weight);
            let qkv = project_all_t(&[q, k, v], x);
            let kv = |y: &Tensor| y.view([self.n_kv, self.head_dim, b, t]).permute([2, 0, 3, 1]);
            let q = untranspose(&qkv[0], x).contiguous();
            (shape(q, self.n_head), kv(&qkv[1]), kv(&qkv[2]))
        } else {
            (
                shape(self.q_proj.forward(x), self.n_head),
                shape(self.k_proj.forward(x), self.n_kv),
                shape(self.v_proj.forward(x), self.n_kv),
            )
        };
        let q = apply_rope(&q, &rope.0, &rope.1);
        let k = apply_rope(&k, &rope.0, &rope.1);
        if step.same_start {
            ck.narrow(0, step.first_slot, b)
                .narrow(2, step.starts[0], t)
                .copy_(&k);
            cv.narrow(0, step.first_slot, b)
                .narrow(2, step.starts[0], t)
                .copy_(&v);
        } else {
            let rows = Some(&step.rows);
            let pos = Some(&step.start_tensor);
            let (mut ck, mut cv) = (ck.shallow_clone(), cv.shallow_clone());
            let _ = ck.index_put_(&[rows, None, pos], &k.squeeze_dim(2), false);
            let _ = cv.index_put_(&[rows, None, pos], &v.squeeze_dim(2), false);
        }
        let keys = ck.narrow(0, step.first_slot, b).narrow(2, 0, step.span);
        let values = cv.narrow(0, step.first_slot, b).narrow(2, 0, step.span);
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &keys,
            &values,
            Some(&step.mask),
            0.0,
            false,
            None,
            true,
        );
        let y = y
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.n_head * self.head_dim]);
        if few_rows(&y) {
            return untranspose(&self.o_proj.forward_t(&y), &y);
        }
        self.o_proj.forward(&y)
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: Path, c: &Config) -> Self {
        Self {
            gate_proj: Linear::new(&p / "gate_proj", c.hidden_size, c.intermediate_size),
            up_proj: Linear::new(&p / "up_proj", c.hidden_size, c.intermediate_size),
            down_proj: Linear::new(&p / "down_proj", c.intermediate_size, c.hidden_size),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if few_rows(x) {
            // A decode step stays in `[features, rows]` from the gate to the down projection,
            // whose `W · a` then needs no transposed operand (measured 8% faster).
            let gate_up = project_all_t(&[&self.gate_proj.weight, &self.up_proj.weight], x);
            let a = gate_up[0].silu() * &gate_up[1];
            return untranspose(&times(&self.down_proj.weight, &a), x);
        }
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

#[derive(Debug)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: Path, c: &Config) -> Self {
        Self {
            input_layernorm: RmsNorm::new(&p / "input_layernorm", c.hidden_size, c.rms_norm_eps),
            self_attn: Attention::new(&p / "self_attn", c),
            post_attention_layernorm: RmsNorm::new(
                &p / "post_attention_layernorm",
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: Mlp::new(&p / "mlp", c),
        }
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Tensor {
        let x = x + self.self_attn.forward(&self.input_layernorm.forward(x), ctx);
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }
}

/// Keys and values of past positions for generation: per layer `[slots, kv_heads, capacity,
/// head_dim]`, allocated once and written in place.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    slots: i64,
    capacity: i64,
}

impl KvCache {
    /// A cache of `slots` sequences of up to `capacity` positions.
    pub fn new(config: &Config, slots: i64, capacity: i64, kind: Kind, device: tch::Device) -> Self {
        let shape = [slots, config.kv_heads(), capacity, config.head_dim()];
        let make = || {
            (0..config.num_hidden_layers)
                .map(|_| Tensor::zeros(shape, (kind, device)))
                .collect()
        };
        Self {
            k: make(),
            v: make(),
            slots,
            capacity,
        }
    }

    /// Sequences it holds.
    pub fn slots(&self) -> i64 {
        self.slots
    }

    /// Positions per sequence.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Copy the first `len` positions of slot `from` into slot `to` (completions that share a
    /// prompt share its prefill).
    pub fn copy_prefix(&mut self, from: i64, to: i64, len: i64) {
        for c in self.k.iter().chain(self.v.iter()) {
            let src = c.narrow(0, from, 1).narrow(2, 0, len);
            c.narrow(0, to, 1).narrow(2, 0, len).copy_(&src);
        }
    }
}

/// Where the tokens of one cached forward pass go.
struct CacheStep {
    first_slot: i64,
    same_start: bool,
    starts: Vec<i64>,
    rows: Tensor,
    start_tensor: Tensor,
    mask: Tensor,
    span: i64,
}

/// A Llama causal language model. Variables live in the `VarStore` passed to [`Llama::new`]
/// under HF names (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    inv_freq: Tensor,
    config: Config,
}

impl Llama {
    /// Build the model with freshly initialised weights (normal, σ = 0.02, as transformers).
    pub fn new(root: &Path, config: &Config) -> Self {
        let m = root / "model";
        let embed_tokens = (&m / "embed_tokens").var(
            "weight",
            &[config.vocab_size, config.hidden_size],
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::new(&m / "layers" / i, config))
            .collect();
        let norm = RmsNorm::new(&m / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = (!config.tie_word_embeddings)
            .then(|| Linear::new(root / "lm_head", config.hidden_size, config.vocab_size));
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

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> tch::Device {
        self.embed_tokens.device()
    }

    /// Final hidden states `[batch, seq, hidden]` for token ids `[batch, seq]`.
    pub fn hidden_states(&self, input_ids: &Tensor) -> Tensor {
        self.hidden_states_of(input_ids, None)
    }

    /// [`Llama::hidden_states`] of rows that hold one sequence each (`None`) or several
    /// packed documents.
    pub fn hidden_states_of(&self, input_ids: &Tensor, documents: Option<&Documents>) -> Tensor {
        let ctx = self.context(input_ids.size()[1], documents);
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        for layer in &self.layers {
            x = layer.forward(&x, &ctx);
        }
        self.norm.forward(&x)
    }

    /// Rotary tables and mask for `t` positions per row.
    fn context(&self, t: i64, documents: Option<&Documents>) -> Context {
        let kind = self.embed_tokens.kind();
        match documents {
            None => {
                let (cos, sin) = rope_tables(&self.inv_freq, 0, t, kind);
                Context { cos, sin, mask: None }
            }
            Some(d) => {
                let (cos, sin) = rope_at(&self.inv_freq, &d.position_ids, kind);
                let ids = &d.document_ids;
                let causal = Tensor::ones([t, t], (Kind::Bool, ids.device())).tril(0);
                let same = ids.unsqueeze(2).eq_tensor(&ids.unsqueeze(1));
                Context {
                    cos,
                    sin,
                    mask: Some(same.logical_and(&causal).unsqueeze(1)),
                }
            }
        }
    }

    /// Final hidden states `[B, T, hidden]` (feed [`Llama::logits`] the positions you need) of
    /// new tokens `[B, T]` that continue sequences held in cache
    /// slots `first_slot..first_slot + B`, row `b` starting at position `starts[b]`. Either all
    /// rows start at the same position (the prefill of right-padded prompts: padding only
    /// writes cache positions past a row's end, which that row's later queries never attend to
    /// before they are overwritten) or each row brings one token (`T = 1`, a decode step).
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        first_slot: i64,
        starts: &[i64],
        cache: &mut KvCache,
    ) -> crate::Result<Tensor> {
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let bad = |m: String| Err(crate::LearnerError::Batch(m));
        let same_start = starts.iter().all(|&s| Some(&s) == starts.first());
        if !(same_start || t == 1) || starts.len() as i64 != b || first_slot + b > cache.slots {
            return bad(format!(
                "cached forward of {b}x{t} tokens from slot {first_slot} with {} starts: need equal starts or one token per sequence within {} slots",
                starts.len(),
                cache.slots
            ));
        }
        let device = input_ids.device();
        let start_tensor = Tensor::from_slice(starts).to_device(device);
        let positions = start_tensor.unsqueeze(1) + Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0);
        let span = starts.iter().max().copied().unwrap_or(0) + t;
        if span > cache.capacity {
            return bad(format!(
                "sequence of {span} positions is longer than the cache ({})",
                cache.capacity
            ));
        }
        let key_pos = Tensor::arange(span, (Kind::Int64, device));
        let mask = key_pos
            .view([1, 1, 1, span])
            .le_tensor(&positions.view([b, 1, t, 1]));
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        let kind = self.embed_tokens.kind();
        let rope = (emb.cos().to_kind(kind), emb.sin().to_kind(kind));
        let step = CacheStep {
            first_slot,
            same_start,
            starts: starts.to_vec(),
            rows: Tensor::arange_start(first_slot, first_slot + b, (Kind::Int64, device)),
            start_tensor,
            mask,
            span,
        };
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x);
            let attn = layer
                .self_attn
                .forward_cached(&h, &rope, &step, &cache.k[i], &cache.v[i]);
            x = &x + attn;
            x = &x + layer.mlp.forward(&layer.post_attention_layernorm.forward(&x));
        }
        Ok(self.norm.forward(&x))
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
        let embed = |ids: &Tensor| Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = tch::no_grad(|| embed(input_ids));
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
            (layer.forward(&xi, &ctx) * &grad).sum(Kind::Float).backward();
            grad = xi.grad();
        }
        (embed(input_ids) * &grad).sum(Kind::Float).backward();
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
