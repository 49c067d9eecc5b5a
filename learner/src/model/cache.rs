//! Generation's cached pass: a key/value cache allocated once per engine, and the forward pass
//! of new tokens (a prefill, or one decode token per sequence) that writes their keys and values
//! into it and attends over every cached position (a CPU decode step in f32 over each
//! sequence's own positions, `decode_attention.rs`).

use tch::{Kind, Tensor};

use super::attention::Attention;
use super::config::Config;
use super::CausalLm;

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
        let shape = [slots, config.kv_heads(), capacity, config.head_dim];
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
    /// prompt share its prefill; a sequence moves into a lower free slot).
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
        let b = x.size()[0];
        let t = x.size()[1];
        let (q, k, v) = self.qkv(x, rope);
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
        if t == 1 {
            let lens: Vec<i64> = step.starts.iter().map(|s| s + 1).collect();
            if let Some(y) = super::decode_attention::attend(&q, ck, cv, step.first_slot, &lens) {
                return self.output(&y);
            }
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
        self.output(&y)
    }
}

impl CausalLm {
    /// Final hidden states `[B, T, hidden]` (feed [`CausalLm::logits`] the positions you need)
    /// of new tokens `[B, T]` that continue sequences held in cache
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
        let rope = super::layers::rope_at(&self.inv_freq, &positions, self.embed_tokens.kind());
        let step = CacheStep {
            first_slot,
            same_start,
            starts: starts.to_vec(),
            rows: Tensor::arange_start(first_slot, first_slot + b, (Kind::Int64, device)),
            start_tensor,
            mask,
            span,
        };
        let mut x = self.embed(input_ids);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_with(&x, |attn, h| {
                attn.forward_cached(h, &rope, &step, &cache.k[i], &cache.v[i])
            });
        }
        Ok(self.norm.forward(&x))
    }
}
