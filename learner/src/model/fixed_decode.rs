//! A decode step of fixed shape, the one a CUDA graph captures: `rows` sequences (the batch
//! padded with rows that write and read only the cache's scratch block), each attending over
//! its first `blocks` blocks, its inputs in one int64 buffer on the device that one copy
//! refills each step. The pass reads nothing from the host, so its kernels can be captured
//! once and replayed for every step of that shape.

use tch::{Device, Kind, Tensor};

use super::cache::{CacheStep, CachedRow, KvCache};
use super::CausalLm;
use crate::{LearnerError, Result};

/// The inputs of one fixed-shape decode step, on the model's device.
#[derive(Debug)]
pub struct FixedDecode {
    rows: i64,
    blocks: i64,
    /// `[rows * (4 + blocks)]`: each row's token, start position, the block and offset its key
    /// and value go to, then each row's `blocks` blocks to gather.
    inputs: Tensor,
}

impl FixedDecode {
    /// Inputs for steps of up to `rows` sequences of up to `blocks` blocks each.
    pub fn new(rows: i64, blocks: i64, device: Device) -> Self {
        Self {
            rows,
            blocks,
            inputs: Tensor::zeros([rows * (4 + blocks)], (Kind::Int64, device)),
        }
    }

    /// Write the next step into the inputs: `tokens[i]` continues `rows[i]`, which brings one
    /// token (`len` 1) at position `start`; the rows past `rows.len()` are padding.
    pub fn set(&self, tokens: &[i64], rows: &[CachedRow], cache: &KvCache) -> Result<()> {
        let (n, m, bs) = (self.rows as usize, self.blocks as usize, cache.block_size());
        let bad = |message: String| Err(LearnerError::Batch(message));
        if rows.len() > n || tokens.len() != rows.len() {
            return bad(format!(
                "a fixed decode step of {n} rows given {} rows and {} tokens",
                rows.len(),
                tokens.len()
            ));
        }
        let scratch = cache.scratch_block();
        let mut host = vec![0i64; n * (4 + m)];
        let (head, gather) = host.split_at_mut(4 * n);
        for (i, r) in rows.iter().enumerate() {
            let block = r.start / bs;
            if r.len != 1 || r.start < 0 || block as usize >= r.blocks.len().min(m) {
                return bad(format!(
                    "row {i}: {} tokens at position {} of {} blocks of {bs}, where a fixed decode step takes one token within {m} blocks",
                    r.len,
                    r.start,
                    r.blocks.len()
                ));
            }
            if let Some(x) = r.blocks.iter().find(|&&x| !(0..cache.blocks()).contains(&x)) {
                return bad(format!(
                    "row {i}: block {x} outside the cache's {}",
                    cache.blocks()
                ));
            }
            head[i] = tokens[i];
            head[n + i] = r.start;
            head[2 * n + i] = r.blocks[block as usize];
            head[3 * n + i] = r.start % bs;
            for (j, slot) in gather[i * m..(i + 1) * m].iter_mut().enumerate() {
                *slot = r.blocks.get(j).copied().unwrap_or(scratch);
            }
        }
        // Padding: token 0 at position 0 of the scratch block, attending to it alone.
        head[2 * n + rows.len()..3 * n].fill(scratch);
        gather[rows.len() * m..].fill(scratch);
        self.inputs.shallow_clone().copy_(&Tensor::from_slice(&host));
        Ok(())
    }

    /// Final hidden states `[rows, hidden]` of the step the inputs hold (padding rows'
    /// included): device work only, the same kernels for every step of this shape.
    pub fn hidden(&self, model: &CausalLm, cache: &KvCache) -> Tensor {
        let (n, m) = (self.rows, self.blocks);
        let part = |i: i64| self.inputs.narrow(0, i * n, n);
        let step = CacheStep {
            real: None,
            starts: part(1),
            write_block: part(2),
            write_offset: part(3),
            tables: Vec::new(),
            lens: Vec::new(),
            gather: self.inputs.narrow(0, 4 * n, n * m),
            gathered_blocks: m,
        };
        model
            .forward_laid_out(&part(0).view([n, 1]), &step, cache)
            .view([n, -1])
    }
}
