//! Sequence packing for SFT and pretraining: examples are grouped into rows of at most
//! `max_len` tokens by best-fit decreasing (each example, longest first, goes to the row it
//! fills most tightly), so rows carry little padding; the learner keeps attention inside each
//! example ([`rlvr_core::TrainBatch::from_packed`]). [`Waste`] measures the padding either way.

use std::collections::BTreeMap;

/// Groups of example indices, each group's lengths summing to at most `max_len` (an example
/// longer than `max_len` gets a row of its own). Deterministic: ties keep index order.
pub fn pack(lengths: &[usize], max_len: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // Free space → rows with that much left, oldest first.
    let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i].min(max_len);
        let fit = free.range(len..).next().map(|(&space, _)| space);
        let (row, space) = match fit {
            Some(space) => {
                let list = free.get_mut(&space).expect("the key was just found");
                let row = list.remove(0);
                if list.is_empty() {
                    free.remove(&space);
                }
                (row, space)
            }
            None => {
                rows.push(Vec::new());
                (rows.len() - 1, max_len)
            }
        };
        rows[row].push(i);
        let left = space - len;
        if left > 0 {
            free.entry(left).or_default().push(row);
        }
    }
    rows
}

/// Padding of a data set in batches, without and with packing.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Waste {
    /// Tokens of the examples.
    pub tokens: u64,
    /// Without packing: the fraction of positions that are padding when batches of
    /// `batch_size` examples (in data order) are padded to their longest.
    pub unpacked: f64,
    /// Rows after packing.
    pub packed_rows: u64,
    /// With packing: the fraction of the packed rows' `max_len` positions that are padding.
    pub packed: f64,
}

impl Waste {
    /// The padding of examples of `lengths` (each at most `max_len`) in batches of
    /// `batch_size`, and in the rows of `packed`.
    pub fn measure(lengths: &[usize], batch_size: usize, max_len: usize, packed: &[Vec<usize>]) -> Self {
        let tokens: usize = lengths.iter().sum();
        let padded: usize = lengths
            .chunks(batch_size.max(1))
            .map(|b| b.len() * b.iter().max().copied().unwrap_or(0))
            .sum();
        let slots = packed.len() * max_len;
        let frac = |used: usize, total: usize| {
            if total == 0 {
                0.0
            } else {
                1.0 - used as f64 / total as f64
            }
        };
        Self {
            tokens: tokens as u64,
            unpacked: frac(tokens, padded),
            packed_rows: packed.len() as u64,
            packed: frac(tokens, slots),
        }
    }
}
