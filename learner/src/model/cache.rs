//! Generation's cached pass: a paged key/value cache allocated once per engine, and the forward
//! pass of new tokens (a prefill, or one decode token per sequence) that writes their keys and
//! values into it and attends over every cached position of its own sequence.
//!
//! The cache is a pool of fixed-size blocks; a sequence is a list of blocks (its block table),
//! so sequences that share a prompt share the blocks that hold it and a block holds the same
//! positions whichever sequences read it. Which blocks a sequence owns is the caller's business
//! (the rollout engine's allocator): the pass only reads and writes where the tables say. A CPU
//! decode step in f32 reads each sequence's blocks in place (`decode_attention.rs`); other
//! passes gather a batch's blocks into one tensor for `scaled_dot_product_attention`.

use tch::{Kind, Tensor};

use super::attention::Attention;
use super::config::Config;
use super::layers::Rope;
use super::CausalLm;

/// Keys and values of past positions for generation: per layer `[blocks + 1, kv_heads,
/// block_size, head_dim]`, allocated once and written in place. The last block is scratch: no
/// sequence owns it; the padding rows of a fixed-shape decode step (`fixed_decode.rs`) write
/// and read only there.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    blocks: i64,
    block_size: i64,
}

impl KvCache {
    /// A cache of `blocks` blocks of `block_size` positions each.
    pub fn new(config: &Config, blocks: i64, block_size: i64, kind: Kind, device: tch::Device) -> Self {
        let shape = [blocks + 1, config.kv_heads(), block_size, config.head_dim];
        let make = || {
            (0..config.num_hidden_layers)
                .map(|_| Tensor::zeros(shape, (kind, device)))
                .collect()
        };
        Self {
            k: make(),
            v: make(),
            blocks,
            block_size,
        }
    }

    /// Bytes one block takes: keys and values of `block_size` positions in every layer.
    pub fn block_bytes(config: &Config, block_size: i64, kind: Kind) -> u64 {
        let elements = 2 * config.num_hidden_layers * config.kv_heads() * block_size * config.head_dim;
        elements.max(0) as u64 * kind.elt_size_in_bytes() as u64
    }

    /// Blocks it holds for sequences (the scratch block not counted).
    pub fn blocks(&self) -> i64 {
        self.blocks
    }

    /// The block no sequence owns, where padding rows write.
    pub(super) fn scratch_block(&self) -> i64 {
        self.blocks
    }

    /// Keys and values of layer `layer`.
    fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    /// Positions per block.
    pub fn block_size(&self) -> i64 {
        self.block_size
    }

    /// Copy block `from` into block `to` in every layer (a sequence's private copy of a shared
    /// block it is about to write into).
    pub fn copy_block(&mut self, from: i64, to: i64) {
        for c in self.k.iter().chain(self.v.iter()) {
            c.narrow(0, to, 1).copy_(&c.narrow(0, from, 1));
        }
    }
}

/// One row of a cached forward pass: the sequence's block table, the position its new tokens
/// start at, and how many of the row's tokens are real (the rest is right-padding).
#[derive(Debug, Clone, Copy)]
pub struct CachedRow<'a> {
    /// The sequence's blocks, position `p` in block `blocks[p / block_size]`.
    pub blocks: &'a [i64],
    /// Position of the row's first new token (positions before it are cached).
    pub start: i64,
    /// Real tokens in the row; the rest of the row is padding, neither written nor used.
    pub len: i64,
}

/// Where the tokens of one cached forward pass go and what they read: tensors on the model's
/// device (and, for the CPU decode kernel, the host's view of the block tables).
pub(super) struct CacheStep<'a> {
    /// Index of each real token in the flattened `[B * T]` batch, unless every token is real.
    pub(super) real: Option<Tensor>,
    /// `[B]`: the position of each row's first token.
    pub(super) starts: Tensor,
    /// Block and offset within it of each real token.
    pub(super) write_block: Tensor,
    pub(super) write_offset: Tensor,
    /// CPU f32 decode kernel's view: each row's blocks and cached length after the step (empty
    /// where the pass reads only device tensors).
    pub(super) tables: Vec<&'a [i64]>,
    pub(super) lens: Vec<i64>,
    /// `[B * M]`: each row's first `M` blocks (padded with block 0) for the gathered pass.
    pub(super) gather: Tensor,
    /// `M`.
    pub(super) gathered_blocks: i64,
}

/// What every layer's gathered attention reads, laid out once per pass.
struct Reads {
    /// `[B, 1, T, M * block_size]`: a key is visible to a query at or after its position.
    mask: Tensor,
    /// The mask's complement: the keys a query does not see.
    hidden: Tensor,
    /// `[B * kv * M]`: row `block * kv + head` of the cache seen as `[blocks * kv, block_size,
    /// d]`, for each row's key/value heads and gathered blocks.
    head_blocks: Tensor,
}

impl Attention {
    /// Attention of new tokens over the cache: writes the real tokens' keys and values at their
    /// positions, then attends each query to its own sequence's positions up to its own.
    fn forward_cached(
        &self,
        x: &Tensor,
        rope: &Rope,
        step: &CacheStep,
        reads: &Reads,
        (ck, cv): (&Tensor, &Tensor),
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (q, k, v) = self.qkv(x, rope);
        // `[B, kv, T, d]` to one `[kv, d]` row per real token.
        let rows = |y: &Tensor| {
            let all = y.transpose(1, 2).reshape([b * t, self.n_kv, self.head_dim]);
            match &step.real {
                Some(real) => all.index_select(0, real),
                None => all,
            }
        };
        let index = [Some(&step.write_block), None, Some(&step.write_offset)];
        let (mut ck, mut cv) = (ck.shallow_clone(), cv.shallow_clone());
        let _ = ck.index_put_(&index, &rows(&k), false);
        let _ = cv.index_put_(&index, &rows(&v), false);
        if t == 1 && !step.tables.is_empty() {
            if let Some(y) = super::decode_attention::attend(&q, &ck, &cv, &step.tables, &step.lens) {
                return self.output(&y);
            }
        }
        // The cache seen as `[blocks * kv, block_size, d]`: one row per (block, key/value head),
        // gathered straight into `[B, kv, M * block_size, d]`, with no copy to reorder it.
        let gathered = |c: &Tensor| {
            let (bs, d) = (c.size()[2], self.head_dim);
            c.view([-1, bs, d]).index_select(0, &reads.head_blocks).view([
                b,
                self.n_kv,
                step.gathered_blocks * bs,
                d,
            ])
        };
        let (keys, values) = (gathered(&ck), gathered(&cv));
        let y = if t == 1 {
            // One query per sequence: the query heads that share a key/value head attend as that
            // head's queries, so keys and values are read once, not copied per query head. Two
            // batched products and a softmax, whatever attention kernels the device has. The
            // softmax of bf16 scores sums in f32 and rounds once, as casting to f32 and back
            // did, in one kernel where that took three.
            let (group, d) = (self.n_head / self.n_kv, self.head_dim);
            let grouped = q.reshape([b, self.n_kv, group, d]) * (1.0 / (d as f64).sqrt());
            let scores = grouped
                .matmul(&keys.transpose(-2, -1))
                .masked_fill(&reads.hidden, f64::NEG_INFINITY);
            let weights = scores.softmax(-1, scores.kind());
            weights.matmul(&values).reshape([b, self.n_head, 1, d])
        } else {
            Tensor::scaled_dot_product_attention(
                &q,
                &keys,
                &values,
                Some(&reads.mask),
                0.0,
                false,
                None,
                true,
            )
        };
        self.output(&y)
    }
}

impl CausalLm {
    /// Final hidden states `[B, T, hidden]` (feed [`CausalLm::logits`] the positions you need)
    /// of new tokens `[B, T]` continuing the sequences `rows` describe: row `b`'s first
    /// `rows[b].len` tokens take positions `rows[b].start..`, their keys and values written
    /// into its blocks, and attend to its cached positions before them. Rows may start at
    /// different positions and bring different numbers of tokens (a prefill after a shared
    /// prefix, a decode step's one token each); padding is neither written nor attended to.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        rows: &[CachedRow],
        cache: &mut KvCache,
    ) -> crate::Result<Tensor> {
        let step = self.cache_step(input_ids, rows, cache)?;
        Ok(self.forward_laid_out(input_ids, &step, cache))
    }

    /// [`CausalLm::forward_cached`] of a pass laid out already: reads nothing from the host, so
    /// a fixed-shape decode step can be captured into a CUDA graph.
    pub(super) fn forward_laid_out(&self, input_ids: &Tensor, step: &CacheStep, cache: &KvCache) -> Tensor {
        let device = input_ids.device();
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let steps = Tensor::arange(t, (Kind::Int64, device));
        let positions = step.starts.unsqueeze(1) + steps.unsqueeze(0);
        let rope = Rope::at(&self.inv_freq, &positions.view([b, t]), self.embed_tokens.kind());
        let span = step.gathered_blocks * cache.block_size;
        let kv = self.layers.first().map_or(1, |l| l.self_attn.n_kv);
        let mask = Tensor::arange(span, (Kind::Int64, device))
            .view([1, 1, 1, span])
            .le_tensor(&positions.view([b, 1, t, 1]));
        let reads = Reads {
            hidden: mask.logical_not(),
            mask,
            head_blocks: (step.gather.view([b, 1, -1]) * kv
                + Tensor::arange(kv, (Kind::Int64, device)).view([1, kv, 1]))
            .view([-1]),
        };
        let mut x = self.embed(input_ids);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_with(&x, |attn, h| {
                attn.forward_cached(h, &rope, step, &reads, cache.layer(i))
            });
        }
        self.norm.forward(&x)
    }

    /// Check `rows` against the batch and the cache and lay out where the pass writes and
    /// reads.
    fn cache_step<'a>(
        &self,
        input_ids: &Tensor,
        rows: &[CachedRow<'a>],
        cache: &KvCache,
    ) -> crate::Result<CacheStep<'a>> {
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let bs = cache.block_size;
        let bad = |m: String| Err(crate::LearnerError::Batch(m));
        if rows.len() as i64 != b {
            return bad(format!(
                "cached forward of {b} rows given {} block tables",
                rows.len()
            ));
        }
        let (mut real, mut write_block, mut write_offset) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in rows.iter().enumerate() {
            let end = r.start + r.len;
            if !(1..=t).contains(&r.len) || r.start < 0 || end > r.blocks.len() as i64 * bs {
                return bad(format!(
                    "row {i}: {} tokens from position {} in a batch of {t} need more than its {} blocks of {bs}",
                    r.len,
                    r.start,
                    r.blocks.len()
                ));
            }
            if let Some(x) = r.blocks.iter().find(|&&x| !(0..cache.blocks).contains(&x)) {
                return bad(format!("row {i}: block {x} outside the cache's {}", cache.blocks));
            }
            for p in r.start..end {
                real.push(i as i64 * t + p - r.start);
                write_block.push(r.blocks[(p / bs) as usize]);
                write_offset.push(p % bs);
            }
        }
        let device = input_ids.device();
        let lens: Vec<i64> = rows.iter().map(|r| r.start + r.len).collect();
        let span = lens.iter().copied().max().unwrap_or(1);
        let m = (span + bs - 1) / bs;
        let gather: Vec<i64> = rows
            .iter()
            .flat_map(|r| (0..m as usize).map(|j| r.blocks.get(j).copied().unwrap_or(0)))
            .collect();
        let on = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        Ok(CacheStep {
            real: (real.len() as i64 != b * t).then(|| on(&real)),
            starts: on(&rows.iter().map(|r| r.start).collect::<Vec<_>>()),
            write_block: on(&write_block),
            write_offset: on(&write_offset),
            tables: rows.iter().map(|r| r.blocks).collect(),
            lens,
            gather: on(&gather),
            gathered_blocks: m,
        })
    }
}
