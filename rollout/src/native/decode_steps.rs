//! How the native engine runs a decode step: as its batch is, op by op ([`DecodeMode::Eager`]),
//! or padded to a fixed shape ([`FixedDecode`]) whose step a CUDA graph captures once and
//! replays ([`DecodeMode::CudaGraphs`]). On a GPU a small model's eager step is bound by
//! launching its few hundred kernels from the host, not by the GPU; a replay is one launch.
//! Shapes come in buckets, four per doubling of the active sequences and of the blocks they
//! attend over, so a call's shrinking batch and growing sequences capture a few dozen graphs,
//! each once per KV cache. [`DecodeMode::Padded`] runs the same padded steps without a capture:
//! the layout the graphs replay, checked on a CPU.

use std::collections::HashMap;

use rlvr_dist::{CudaGraph, GraphPool};
use rlvr_learner::model::{CachedRow, CausalLm, FixedDecode, KvCache};
use tch::Tensor;

use crate::error::{Result, RolloutError};

/// How the native engine runs its decode steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Each step as its batch is, op by op (on the CPU, attention reads each sequence's own
    /// positions in place).
    Eager,
    /// Padded to fixed shapes, each shape's step captured into a CUDA graph once and replayed
    /// (a CUDA device, a build with CUDA graphs, and not a tensor-parallel rank).
    CudaGraphs,
    /// Padded to the fixed shapes of `CudaGraphs` and run op by op, without a capture.
    Padded,
}

/// One engine's fixed-shape steps for one KV cache: they hold the cache's addresses, so a new
/// cache needs new ones.
pub(super) struct DecodeSteps {
    mode: DecodeMode,
    pool: Option<GraphPool>,
    shapes: HashMap<(i64, i64), Shape>,
}

/// One shape's inputs and, under CUDA graphs, its graph and the hidden states it writes.
struct Shape {
    inputs: FixedDecode,
    graph: Option<(CudaGraph, Tensor)>,
}

impl DecodeSteps {
    pub(super) fn new(mode: DecodeMode) -> Self {
        Self {
            mode,
            pool: None,
            shapes: HashMap::new(),
        }
    }

    /// Final hidden states `[rows.len(), hidden]` of one decode step: `tokens[i]` continues
    /// `rows[i]` (one token each).
    pub(super) fn hidden(
        &mut self,
        model: &CausalLm,
        cache: &mut KvCache,
        tokens: &[i64],
        rows: &[CachedRow],
        max_batch: usize,
    ) -> Result<Tensor> {
        let n = rows.len() as i64;
        if self.mode == DecodeMode::Eager {
            let input = Tensor::from_slice(tokens).view([n, 1]).to_device(model.device());
            return Ok(model.forward_cached(&input, rows, cache)?.view([n, -1]));
        }
        let size = cache.block_size();
        let blocks = rows.iter().map(|r| r.start / size + 1).max().unwrap_or(1);
        let key = (bucket(n).min(max_batch.max(rows.len()) as i64), bucket(blocks));
        let shape = self.shapes.entry(key).or_insert_with(|| Shape {
            inputs: FixedDecode::new(key.0, key.1, model.device()),
            graph: None,
        });
        shape.inputs.set(tokens, rows, cache)?;
        let hidden = match (self.mode, &shape.graph) {
            (DecodeMode::CudaGraphs, Some((graph, hidden))) => {
                graph.replay().map_err(decode_error)?;
                hidden.shallow_clone()
            }
            (DecodeMode::CudaGraphs, None) => {
                let pool = match self.pool {
                    Some(pool) => pool,
                    None => *self.pool.insert(GraphPool::new().map_err(decode_error)?),
                };
                let inputs = &shape.inputs;
                let (graph, hidden) =
                    CudaGraph::capture(model.device(), pool, || inputs.hidden(model, cache))
                        .map_err(decode_error)?;
                graph.replay().map_err(decode_error)?;
                shape.graph.insert((graph, hidden)).1.shallow_clone()
            }
            _ => shape.inputs.hidden(model, cache),
        };
        Ok(hidden.narrow(0, 0, n))
    }

    /// Shapes held (captured graphs under [`DecodeMode::CudaGraphs`]).
    pub(super) fn shapes(&self) -> usize {
        self.shapes.len()
    }
}

/// The fixed size that `n` (rows or blocks) rounds up to: exact up to 8, then four sizes per
/// doubling (9..=16 → 10, 12, 14, 16; 65..=128 → 80, 96, 112, 128), so padding adds less than
/// a quarter.
fn bucket(n: i64) -> i64 {
    let step = ((n.max(1) as u64).next_power_of_two() / 8).max(1) as i64;
    (n.max(1) + step - 1) / step * step
}

fn decode_error(e: impl std::fmt::Display) -> RolloutError {
    RolloutError::Decode(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_round_up_by_less_than_a_quarter_and_are_few() {
        for n in 1..=4096 {
            let b = bucket(n);
            assert!(b >= n && 4 * b < 5 * n, "{n} -> {b}");
        }
        let sizes: std::collections::BTreeSet<i64> = (1..=512).map(bucket).collect();
        assert_eq!(sizes.len(), 8 + 4 * 6, "{sizes:?}");
        assert_eq!(
            [5, 8, 9, 11, 96, 97, 500].map(bucket),
            [5, 8, 10, 12, 96, 112, 512]
        );
    }
}
