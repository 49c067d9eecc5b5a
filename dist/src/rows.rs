//! Gathering rows of different lengths from every rank: what each rank computed for its share
//! of a batch (log-probs, values, scores per response), put back together in rank order.

use tch::{Device, Kind, Tensor};

use crate::error::{DistError, Result};
use crate::group::ProcessGroup;

impl ProcessGroup {
    /// Every rank's `rows`, concatenated in rank order (a collective: every rank calls it, each
    /// with any number of rows of any length). The rows travel as tensors on `device`, where
    /// the group's collectives run (the CPU for Gloo, the rank's GPU for NCCL).
    pub fn all_gather_rows(&self, rows: &[Vec<f32>], device: Device) -> Result<Vec<Vec<f32>>> {
        let world = self.world_size();
        let counts = self.all_gather_i64s(&[rows.len() as i64], device)?;
        let most_rows = counts.iter().copied().max().unwrap_or(0) as usize;
        // Each rank's row lengths, padded to the longest list with zeros.
        let mut lens: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
        lens.resize(most_rows, 0);
        let lens = self.all_gather_i64s(&lens, device)?;
        let totals: Vec<usize> = lens
            .chunks(most_rows.max(1))
            .map(|l| l.iter().sum::<i64>() as usize)
            .collect();
        let longest = totals.iter().copied().max().unwrap_or(0);
        let mut values: Vec<f32> = rows.iter().flatten().copied().collect();
        values.resize(longest, 0.0);
        let mut all = Tensor::zeros([(longest * world) as i64], (Kind::Float, device));
        self.all_gather(&mut all, &Tensor::from_slice(&values).to_device(device))?;
        let all = Vec::<f32>::try_from(&all.to_device(Device::Cpu)).map_err(|e| DistError::Shape {
            op: "all_gather_rows",
            message: format!("reading the gathered rows: {e}"),
        })?;
        let mut out = Vec::with_capacity(counts.iter().sum::<i64>() as usize);
        for (rank, &count) in counts.iter().enumerate() {
            let mut at = rank * longest;
            for &len in &lens[rank * most_rows..rank * most_rows + count as usize] {
                out.push(all[at..at + len as usize].to_vec());
                at += len as usize;
            }
        }
        Ok(out)
    }

    /// Every rank's `values` (the same number on every rank), in rank order.
    fn all_gather_i64s(&self, values: &[i64], device: Device) -> Result<Vec<i64>> {
        let mut all = Tensor::zeros([(values.len() * self.world_size()) as i64], (Kind::Int64, device));
        self.all_gather(&mut all, &Tensor::from_slice(values).to_device(device))?;
        Vec::<i64>::try_from(&all.to_device(Device::Cpu)).map_err(|e| DistError::Shape {
            op: "all_gather_rows",
            message: format!("reading the gathered lengths: {e}"),
        })
    }
}
