//! The learner over several ranks of a process group: data parallelism (every rank the whole
//! model, gradients averaged) and what both it and ZeRO-3 ([`super::sharded`]) share — the
//! group, and losses and token counts reduced over it.

use rlvr_dist::{ProcessGroup, ReduceOp};
use tch::{Device, Tensor};

use super::Learner;
use crate::error::Result;

/// The mean of `loss` and the sum of `tokens` over `group`'s ranks (the values themselves
/// without one).
pub(super) fn mean_over(
    group: Option<&ProcessGroup>,
    device: Device,
    loss: f64,
    tokens: f64,
) -> Result<(f64, f64)> {
    let Some(group) = group else {
        return Ok((loss, tokens));
    };
    let mut both = Tensor::from_slice(&[loss, tokens]).to_device(device);
    group.all_reduce(&mut both, ReduceOp::Sum)?;
    let both = Vec::<f64>::try_from(both.to_device(Device::Cpu)).unwrap_or_default();
    Ok((both[0] / group.world_size() as f64, both[1]))
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
