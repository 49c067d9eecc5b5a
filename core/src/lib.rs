//! # rlvr-core
//!
//! Plain data types every role shares — what flows between the data, learner, rollout and
//! verifier roles — with no dependency but `serde`, so any crate can speak them.

use serde::{Deserialize, Serialize};

/// A batch of token sequences for one learner micro-step, row-major `[rows, cols]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainBatch {
    /// Token ids, `rows * cols` of them; padding is any id whose label is [`IGNORE`].
    pub input_ids: Vec<i64>,
    /// Target of each position (the token itself; the learner shifts), or [`IGNORE`].
    pub labels: Vec<i64>,
    /// Sequences.
    pub rows: usize,
    /// Positions per sequence.
    pub cols: usize,
}

/// Label of positions that carry no loss (padding, prompts), as in PyTorch's `ignore_index`.
pub const IGNORE: i64 = -100;

impl TrainBatch {
    /// Right-pad `seqs` to the longest with `pad_id`; each label is the token, padding ignored.
    pub fn from_sequences(seqs: &[Vec<i64>], pad_id: i64) -> Self {
        let cols = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(seqs.len() * cols);
        let mut labels = Vec::with_capacity(seqs.len() * cols);
        for s in seqs {
            input_ids.extend_from_slice(s);
            labels.extend_from_slice(s);
            input_ids.extend(std::iter::repeat_n(pad_id, cols - s.len()));
            labels.extend(std::iter::repeat_n(IGNORE, cols - s.len()));
        }
        Self {
            input_ids,
            labels,
            rows: seqs.len(),
            cols,
        }
    }

    /// Positions that carry loss after the one-token shift (labels of positions 1..cols).
    pub fn loss_tokens(&self) -> usize {
        (0..self.rows)
            .flat_map(|r| &self.labels[r * self.cols + 1.min(self.cols)..(r + 1) * self.cols])
            .filter(|&&l| l != IGNORE)
            .count()
    }
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimiser steps taken so far (1 after the first).
    pub step: u64,
    /// Loss averaged over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Tokens that carried loss.
    pub tokens: u64,
}
