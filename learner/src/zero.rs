//! ZeRO stage 3 (Rajbhandari et al., 2020): parameters, gradients and AdamW state partitioned
//! over the ranks of a process group.
//!
//! Each parameter unit of a model ([`CausalLm::unit`](crate::model::CausalLm::unit): the embedding, a decoder layer, the
//! head) is one flat buffer, padded to a multiple of the world size; rank `r` keeps slice `r`
//! of it, with that slice's gradient and optimiser state. A unit is all-gathered just before it
//! runs and released after ([`Units`]); its gradients are reduce-scattered into the slices as
//! they are made and averaged over the ranks; each rank steps AdamW on its own slices. Between
//! passes a rank holds 1/N of the parameters, gradients and moments, plus the padding. One
//! [`Zero3`] shards one model; RL shards several over the same ranks (the policy, its frozen
//! reference, the value model, a frozen reward model), each with its own [`Zero3`] on the
//! shared group. A frozen model keeps slices of its parameters only.
//!
//! With the optimiser offloaded ([`Training::offload`], DeepSpeed's ZeRO-Offload) the f32
//! master slices, the gradient slices and the moments live in host memory (pinned beside a
//! GPU) and AdamW steps there; the device keeps the parameter slices, and each step copies the
//! updated masters into them.

use std::sync::Arc;

use rlvr_dist::{ProcessGroup, ReduceOp};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::ShardedWriter;
use crate::error::{LearnerError, Result};
use crate::model::Units;
use crate::optim::{self, wide, AdamWConfig};

/// One unit's partition on this rank.
struct Unit {
    /// The model's tensors (empty while the unit is released).
    params: Vec<Tensor>,
    /// Their checkpoint names.
    names: Vec<String>,
    /// Their shapes.
    shapes: Vec<Vec<i64>>,
    /// Whether the parameters are whole now.
    whole: bool,
    /// Elements of the unit, padding excluded.
    numel: i64,
    /// Elements of each rank's slice.
    shard_len: i64,
    /// This rank's slice of the flat parameters, in the model's kind.
    shard: Tensor,
    /// The accumulated, rank-averaged gradient of the slice (f32 for 16-bit parameters).
    grad: Tensor,
    /// An f32 copy of a 16-bit slice.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// How a sharded model trains.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Training {
    /// AdamW's settings.
    pub adamw: AdamWConfig,
    /// Keep the optimiser state (masters, gradients, moments) in host memory and step there.
    pub offload: bool,
}

/// A model's parameters, gradients and AdamW state sharded over `group` (its parameters only,
/// when it is frozen).
pub(crate) struct Zero3 {
    group: Arc<ProcessGroup>,
    units: Vec<Unit>,
    /// How it trains; `None` for a frozen model.
    training: Option<Training>,
    step: u64,
    /// Bytes of whole units gathered now, and the most there have been at once.
    gathered: u64,
    peak_gathered: u64,
}

/// What one rank of a ZeRO-3 learner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMemory {
    /// Bytes held between steps: this rank's slices of the parameters, gradients and AdamW
    /// state (f32 masters of 16-bit parameters included).
    pub held: u64,
    /// Of `held`, the optimiser state's bytes kept in host memory (offloaded).
    pub offloaded: u64,
    /// What an unsharded learner holds for the same.
    pub unsharded: u64,
    /// The most bytes of whole, gathered parameters alive at once during a pass.
    pub peak_gathered: u64,
}

/// Bytes of `t`'s elements.
fn bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

impl Zero3 {
    /// Shard a model whose parameter units are `units` (each a list of tensors, as
    /// [`CausalLm::units`](crate::model::CausalLm::units) gives them) and whose named
    /// parameters are `vars`, equal on every rank, over `group`: trained as `training` says,
    /// or frozen (`None`: slices of the parameters only). Afterwards the parameters are
    /// released until gathered.
    pub fn new(
        units: Vec<Vec<Tensor>>,
        vars: &[(String, Tensor)],
        group: Arc<ProcessGroup>,
        training: Option<Training>,
    ) -> Result<Self> {
        Self::loading(units, vars, group, training, |_, _| Ok(()))
    }

    /// [`Zero3::new`] for a model whose parameters are allocated but unset: `fill` makes unit
    /// `u`'s named parameters whole (reads them from a checkpoint, or copies another sharded
    /// model's unit) just before the unit is sliced and released, so a rank never holds more
    /// than its slices and one whole unit.
    pub fn loading(
        units: Vec<Vec<Tensor>>,
        vars: &[(String, Tensor)],
        group: Arc<ProcessGroup>,
        training: Option<Training>,
        mut fill: impl FnMut(usize, &[(String, Tensor)]) -> Result<()>,
    ) -> Result<Self> {
        let units = shard_units(units, vars, &group, training, &mut fill)?;
        Ok(Self {
            group,
            units,
            training,
            step: 0,
            gathered: 0,
            peak_gathered: 0,
        })
    }

    /// The group the shards live on.
    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// The group, for another model sharded over the same ranks.
    pub fn shared_group(&self) -> Arc<ProcessGroup> {
        Arc::clone(&self.group)
    }

    /// Whether the optimiser state is kept in host memory.
    pub fn offloads(&self) -> bool {
        self.training.is_some_and(|t| t.offload)
    }

    /// Where the parameter slices live (and the collectives run).
    fn device(&self) -> Device {
        self.units.first().map_or(Device::Cpu, |u| u.shard.device())
    }

    /// Copy unit `unit`, whole for the moment (a collective), into `dst`, another model's
    /// named parameters of the same unit (the [`Zero3::loading`] fill of a model made from
    /// this one): each by name, the names in `except` left as they are.
    pub fn copy_unit_into(&mut self, unit: usize, dst: &[(String, Tensor)], except: &[&str]) -> Result<()> {
        self.gather(unit)?;
        let u = &self.units[unit];
        let copied = dst
            .iter()
            .filter(|(name, _)| !except.contains(&name.as_str()))
            .try_for_each(|(name, t)| {
                let src = u
                    .names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| LearnerError::Checkpoint {
                        path: "ZeRO-3 shards".into(),
                        message: format!("`{name}` has no counterpart in the model it is copied from"),
                    })?;
                tch::no_grad(|| t.shallow_clone().copy_(&u.params[src]));
                Ok(())
            });
        self.release(unit);
        copied
    }

    /// Optimiser steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Parameters of the model, all shards together.
    pub fn num_params(&self) -> i64 {
        self.units.iter().map(|u| u.numel).sum()
    }

    /// Forget the accumulated gradients.
    pub fn zero_grad(&mut self) {
        for u in &mut self.units {
            let _ = u.grad.zero_();
        }
    }

    /// Scale the gradient slices so the global L2 norm (over all ranks) is at most `max_norm`;
    /// returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> Result<f64> {
        let mut sq = tch::no_grad(|| {
            let parts: Vec<Tensor> = self
                .units
                .iter()
                .map(|u| u.grad.square().sum(Kind::Double))
                .collect();
            Tensor::stack(&parts, 0)
                .sum(Kind::Double)
                .reshape([1])
                .to_device(self.device())
        });
        self.group.all_reduce(&mut sq, ReduceOp::Sum)?;
        let total = sq.double_value(&[0]).sqrt();
        if let Some(max) = max_norm {
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for u in &mut self.units {
                    let _ = u.grad.g_mul_scalar_(coef);
                }
            }
        }
        Ok(total)
    }

    /// One AdamW update of this rank's slices at rate `lr` (an error for a frozen model).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let Training { adamw: config, .. } = self
            .training
            .ok_or(LearnerError::Order("a frozen model takes no optimiser steps"))?;
        self.step += 1;
        tch::no_grad(|| {
            for u in &mut self.units {
                let mut w = match &u.master {
                    Some(m) => m.shallow_clone(),
                    None => u.shard.shallow_clone(),
                };
                optim::update(
                    &config,
                    self.step,
                    lr,
                    &mut w,
                    &u.grad,
                    &mut u.exp_avg,
                    &mut u.exp_avg_sq,
                );
                if u.master.is_some() {
                    u.shard.copy_(&w);
                }
            }
        });
        Ok(())
    }

    /// Run `f` on each unit's named parameters in turn, each whole only while `f` runs (a
    /// collective: every rank calls it): saving and exporting without the whole model on any
    /// rank. Every unit is visited even after `f` fails, so the ranks' collectives stay
    /// paired; the first failure is returned.
    pub fn visit_units(
        &mut self,
        mut f: impl FnMut(usize, &[String], &[Tensor]) -> Result<()>,
    ) -> Result<()> {
        let mut failed = None;
        for unit in 0..self.units.len() {
            self.gather(unit)?;
            if failed.is_none() {
                let u = &self.units[unit];
                failed = f(unit, &u.names, &u.params).err();
            }
            self.release(unit);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Every parameter's checkpoint name and whole shape, unit by unit in the order
    /// [`Zero3::visit_units`] gathers them.
    pub fn tensors(&self) -> Vec<(String, Vec<i64>)> {
        self.units
            .iter()
            .flat_map(|u| u.names.iter().cloned().zip(u.shapes.iter().cloned()))
            .collect()
    }

    /// Bytes of each unit's parameters, whole.
    pub fn unit_bytes(&self) -> Vec<u64> {
        self.units
            .iter()
            .map(|u| u.numel as u64 * u.shard.kind().elt_size_in_bytes() as u64)
            .collect()
    }

    /// Write the model into `dir` in Hugging Face's layout (`config` as its `config.json`),
    /// unit by unit (a collective: every rank gathers each unit, rank 0 writes it), so no rank
    /// holds more than one unit and one safetensors file's tensors.
    pub fn save(&mut self, dir: &std::path::Path, config: &serde_json::Value) -> Result<()> {
        let mut writer = match self.group.rank() {
            0 => Some(ShardedWriter::new(dir, config, &self.unit_bytes())?),
            _ => None,
        };
        self.visit_units(|unit, names, params| match &mut writer {
            Some(w) => w.add_unit(unit, names, params),
            None => Ok(()),
        })?;
        writer.map_or(Ok(()), ShardedWriter::finish)
    }

    /// This rank's slice of each unit's flat parameters, in the model's kind.
    pub fn shards(&self) -> Vec<Tensor> {
        self.units.iter().map(|u| u.shard.shallow_clone()).collect()
    }

    /// The parameters' element type.
    pub fn kind(&self) -> Kind {
        self.units.first().map_or(Kind::Float, |u| u.shard.kind())
    }

    /// This rank's optimiser state as named tensors: per unit, its slices (`shard`, `master`,
    /// `exp_avg`, `exp_avg_sq`) under the unit's first parameter's name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for u in &self.units {
            let key = &u.names[0];
            out.push((format!("shard.{key}"), u.shard.shallow_clone()));
            out.push((format!("exp_avg.{key}"), u.exp_avg.shallow_clone()));
            out.push((format!("exp_avg_sq.{key}"), u.exp_avg_sq.shallow_clone()));
            if let Some(m) = &u.master {
                out.push((format!("master.{key}"), m.shallow_clone()));
            }
        }
        out
    }

    /// Restore state written by [`Zero3::state`] on this rank after `steps` optimiser steps.
    /// Returns the names of units with no (or misshapen) saved state.
    pub fn load_state(&mut self, state: &[(String, Tensor)], steps: u64) -> Vec<String> {
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for u in &mut self.units {
                let key = u.names[0].clone();
                let find = |prefix: &str| {
                    let name = format!("{prefix}.{key}");
                    state
                        .iter()
                        .find(|(n, t)| *n == name && t.size() == [u.shard_len])
                        .map(|(_, t)| t)
                };
                let mut targets: Vec<(&str, &mut Tensor)> = vec![
                    ("shard", &mut u.shard),
                    ("exp_avg", &mut u.exp_avg),
                    ("exp_avg_sq", &mut u.exp_avg_sq),
                ];
                if let Some(m) = &mut u.master {
                    targets.push(("master", m));
                }
                for (prefix, t) in targets {
                    match find(prefix) {
                        Some(saved) => t.copy_(saved),
                        None => missing.push(format!("{prefix}.{key}")),
                    }
                }
            }
        });
        self.step = steps;
        missing
    }

    /// What this rank holds, and what it gathers at most.
    pub fn memory(&self) -> ShardMemory {
        let (mut held, mut offloaded, mut unsharded) = (0, 0, 0);
        for u in &self.units {
            if self.offloads() {
                let state = [
                    Some(&u.grad),
                    u.master.as_ref(),
                    Some(&u.exp_avg),
                    Some(&u.exp_avg_sq),
                ];
                offloaded += state.into_iter().flatten().map(bytes).sum::<u64>();
            }
            let slices = [
                Some(&u.shard),
                Some(&u.grad),
                u.master.as_ref(),
                Some(&u.exp_avg),
                Some(&u.exp_avg_sq),
            ];
            let per_slice: u64 = slices.into_iter().flatten().map(bytes).sum();
            held += per_slice;
            unsharded += per_slice * u.numel as u64 / u.shard_len.max(1) as u64;
        }
        ShardMemory {
            held,
            offloaded,
            unsharded,
            peak_gathered: self.peak_gathered,
        }
    }
}

fn p_device(params: &[Tensor]) -> Device {
    params.first().map_or(Device::Cpu, Tensor::device)
}

/// What makes a unit's named parameters whole before it is sliced.
type UnitFill<'a> = dyn FnMut(usize, &[(String, Tensor)]) -> Result<()> + 'a;

/// Shard each unit (`units`, parameters named in `vars`) over `group`, with gradient and AdamW
/// slices (in host memory when offloaded) when it trains. Each unit is first made whole by `fill` (given its index and named
/// parameters: a checkpoint read into them, or nothing when they already hold the weights),
/// sliced, then released, so at most one unit is whole at a time beyond what the caller held.
fn shard_units(
    units: Vec<Vec<Tensor>>,
    vars: &[(String, Tensor)],
    group: &ProcessGroup,
    training: Option<Training>,
    fill: &mut UnitFill<'_>,
) -> Result<Vec<Unit>> {
    let trains = training.is_some();
    let offload = training.is_some_and(|t| t.offload);
    let (world, rank) = (group.world_size() as i64, group.rank() as i64);
    // Every unit's names first: a released parameter no longer has its own storage to match.
    let named: Vec<Vec<(String, Tensor)>> = units
        .into_iter()
        .map(|params| {
            params
                .into_iter()
                .map(|p| {
                    vars.iter()
                        .find(|(_, v)| v.data_ptr() == p.data_ptr())
                        .map(|(n, _)| (n.clone(), p))
                        .ok_or(LearnerError::Order(
                            "ZeRO-3: a model parameter is not in the variable store",
                        ))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let mut units = Vec::with_capacity(named.len());
    let mut gathered = 0;
    for (index, named) in named.into_iter().enumerate() {
        fill(index, &named)?;
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let kind = params[0].kind();
        if params.iter().any(|p| p.kind() != kind) {
            return Err(LearnerError::Order("ZeRO-3: a unit mixes element types"));
        }
        let mut unit = tch::no_grad(|| {
            let numel: i64 = params.iter().map(|p| p.numel() as i64).sum();
            let shard_len = (numel + world - 1) / world;
            let mut flat: Vec<Tensor> = params.iter().map(|p| p.detach().reshape([-1])).collect();
            flat.push(Tensor::zeros(
                [shard_len * world - numel],
                (kind, p_device(&params)),
            ));
            let shard = Tensor::cat(&flat, 0)
                .narrow(0, rank * shard_len, shard_len)
                .copy();
            let w = wide(kind);
            // The optimiser state's home: beside the parameters, or pinned host memory.
            let on_host = |t: Tensor| match shard.device().is_cuda() {
                true => t.pin_memory(shard.device()),
                false => t,
            };
            let state_device = if offload { Device::Cpu } else { shard.device() };
            let slice = |len: i64| {
                let t = Tensor::zeros([len], (w, state_device));
                if offload {
                    on_host(t)
                } else {
                    t
                }
            };
            let state_len = if trains { shard_len } else { 0 };
            // Offloaded f32 parameters keep an f32 master on the host too: AdamW steps there.
            let master = (trains && (w != kind || offload)).then(|| {
                let m = shard.to_device(state_device).to_kind(Kind::Float);
                if offload {
                    on_host(m)
                } else {
                    m
                }
            });
            Unit {
                names,
                shapes: params.iter().map(Tensor::size).collect(),
                whole: true,
                numel,
                shard_len,
                grad: slice(state_len),
                master,
                exp_avg: slice(state_len),
                exp_avg_sq: slice(state_len),
                shard,
                params,
            }
        });
        release_unit(&mut unit, group, &mut gathered);
        units.push(unit);
    }
    Ok(units)
}

/// Make `u` whole from every rank's slice (a collective).
fn gather_unit(u: &mut Unit, group: &ProcessGroup, gathered: &mut u64, peak: &mut u64) -> Result<()> {
    if u.whole {
        return Ok(());
    }
    let world = group.world_size() as i64;
    let mut full = Tensor::empty([u.shard_len * world], (u.shard.kind(), u.shard.device()));
    group.all_gather(&mut full, &u.shard)?;
    let mut offset = 0;
    for (p, shape) in u.params.iter_mut().zip(&u.shapes) {
        let n: i64 = shape.iter().product();
        let view = full.narrow(0, offset, n).view(shape.as_slice());
        tch::no_grad(|| p.set_data(&view));
        offset += n;
    }
    u.whole = true;
    *gathered += bytes(&full);
    *peak = (*peak).max(*gathered);
    Ok(())
}

/// Let `u`'s whole parameters go.
fn release_unit(u: &mut Unit, group: &ProcessGroup, gathered: &mut u64) {
    if u.whole {
        let world = group.world_size() as u64;
        let whole = u.shard_len as u64 * world * u.shard.kind().elt_size_in_bytes() as u64;
        *gathered = gathered.saturating_sub(whole);
    }
    for p in &mut u.params {
        let empty = Tensor::empty([0], (p.kind(), p.device()));
        tch::no_grad(|| p.set_data(&empty));
    }
    u.whole = false;
}

impl Units for Zero3 {
    type Error = LearnerError;

    fn gather(&mut self, unit: usize) -> Result<()> {
        gather_unit(
            &mut self.units[unit],
            &self.group,
            &mut self.gathered,
            &mut self.peak_gathered,
        )
    }

    fn release(&mut self, unit: usize) {
        release_unit(&mut self.units[unit], &self.group, &mut self.gathered);
    }

    fn gradients(&mut self, unit: usize, grads: Vec<Tensor>) -> Result<()> {
        if self.training.is_none() {
            return Err(LearnerError::Order("a frozen model takes no gradients"));
        }
        let world = self.group.world_size() as i64;
        let u = &mut self.units[unit];
        let kind = u.grad.kind();
        // Reduced where the parameters live, then added to the slice wherever it is kept.
        let device = u.shard.device();
        // A unit's gradient is the largest buffer of a pass (the embedding's): reduced from
        // where autograd left it when it is the unit's one parameter and needs no padding,
        // otherwise copied into its place in one padded buffer (no concatenated copy).
        let whole = u.shard_len * world;
        let flat = match grads.as_slice() {
            [g] if g.defined()
                && g.numel() as i64 == whole
                && g.is_contiguous()
                && g.kind() == kind
                && g.device() == device =>
            {
                g.view([-1])
            }
            _ => {
                let flat = Tensor::zeros([whole], (kind, device));
                let mut offset = 0;
                for (g, shape) in grads.iter().zip(&u.shapes) {
                    let n: i64 = shape.iter().product();
                    if g.defined() {
                        tch::no_grad(|| flat.narrow(0, offset, n).copy_(&g.reshape([-1])));
                    }
                    offset += n;
                }
                flat
            }
        };
        drop(grads);
        let mut mine = Tensor::empty([u.shard_len], (kind, device));
        self.group.reduce_scatter(&mut mine, &flat, ReduceOp::Sum)?;
        drop(flat);
        let _ = mine.g_div_scalar_(world as f64);
        let _ = u.grad.g_add_(&mine.to_device(u.grad.device()));
        Ok(())
    }
}
