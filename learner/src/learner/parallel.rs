//! The learner over several ranks of a process group: data parallelism (every rank the whole
//! model, gradients averaged) and what both it and ZeRO-3 ([`super::sharded`]) share — the
//! group, and losses, token counts and preference metrics reduced over it.

use rlvr_dist::{ProcessGroup, ReduceOp};
use tch::{Device, Tensor};

use super::Learner;
use crate::error::Result;
use crate::preference::PreferenceMetrics;

/// The sums of `values` over `group`'s ranks (the values themselves without one).
pub(super) fn sums_over(group: Option<&ProcessGroup>, device: Device, values: &[f64]) -> Result<Vec<f64>> {
    let Some(group) = group else {
        return Ok(values.to_vec());
    };
    let mut t = Tensor::from_slice(values).to_device(device);
    group.all_reduce(&mut t, ReduceOp::Sum)?;
    Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu)).unwrap_or_else(|_| values.to_vec()))
}

/// The mean of `loss` and the sum of `tokens` over `group`'s ranks (the values themselves
/// without one).
pub(super) fn mean_over(
    group: Option<&ProcessGroup>,
    device: Device,
    loss: f64,
    tokens: f64,
) -> Result<(f64, f64)> {
    let world = group.map_or(1, ProcessGroup::world_size) as f64;
    let sums = sums_over(group, device, &[loss, tokens])?;
    Ok((sums[0] / world, sums[1]))
}

/// A preference step's metrics over `group`'s ranks: each mean averaged, tokens summed.
pub(super) fn preference_over(
    group: Option<&ProcessGroup>,
    device: Device,
    m: PreferenceMetrics,
) -> Result<PreferenceMetrics> {
    let world = group.map_or(1, ProcessGroup::world_size) as f64;
    let values = [
        m.loss,
        m.accuracy,
        m.chosen_reward,
        m.rejected_reward,
        m.chosen_logp,
        m.rejected_logp,
        m.tokens as f64,
    ];
    let s = sums_over(group, device, &values)?;
    Ok(PreferenceMetrics {
        loss: s[0] / world,
        accuracy: s[1] / world,
        chosen_reward: s[2] / world,
        rejected_reward: s[3] / world,
        chosen_logp: s[4] / world,
        rejected_logp: s[5] / world,
        tokens: s[6] as u64,
        ..m
    })
}

impl Learner {
    /// Train data-parallel over `group`: every rank holds the whole model, steps on its own
    /// share of the batch, and the gradients (of the policy and, in PPO, the value model) are
    /// averaged over the ranks before each update, so all ranks stay equal. LM steps also
    /// report the mean loss and the total tokens of all ranks; other steps report their own.
    /// Ranks must start from the same weights.
    pub fn set_data_parallel(&mut self, group: ProcessGroup) -> Result<()> {
        self.unsharded("data parallelism and ZeRO-3 do not combine: ZeRO-3 already averages over its ranks")?;
        self.group = Some(group);
        Ok(())
    }

    /// Run `f` with the process group the learner trains over (data-parallel or ZeRO-3), if
    /// it has one.
    pub fn with_group<T>(&self, f: impl FnOnce(&ProcessGroup) -> T) -> Option<T> {
        if let Some(g) = &self.group {
            return Some(f(g));
        }
        self.zero.as_ref().map(|z| f(z.borrow().group()))
    }

    /// Average gradients over the data-parallel ranks, when there are any.
    pub(super) fn average_grads(&self) -> Result<()> {
        if let Some(group) = &self.group {
            self.opt.average_grads(group)?;
            if let Some(c) = &self.critic {
                c.opt.average_grads(group)?;
            }
        }
        Ok(())
    }

    /// The mean of `loss` and the sum of `tokens` over the data-parallel ranks (the values
    /// themselves without them).
    pub(super) fn across_ranks(&self, loss: f64, tokens: f64) -> Result<(f64, f64)> {
        mean_over(self.group.as_ref(), self.config.device, loss, tokens)
    }
}
