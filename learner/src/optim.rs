//! AdamW with decoupled weight decay (Loshchilov & Hutter), written on tensors so its state can
//! be checkpointed, resumed and later sharded. Same update as `torch.optim.AdamW`. Parameters
//! held in a lower precision (bf16) get an f32 master copy: moments and update happen in f32
//! and the parameter receives the rounded result, so small updates are not lost to bf16's
//! 8-bit mantissa.

use rlvr_dist::{ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// The kind the optimiser works in for a parameter of `kind`: f32 for the 16-bit kinds, the
/// parameter's own otherwise.
pub(crate) fn wide(kind: Kind) -> Kind {
    match kind {
        Kind::BFloat16 | Kind::Half => Kind::Float,
        other => other,
    }
}

/// The AdamW update of weights `w` (in the optimiser's kind) with gradient `g` and moments `m`,
/// `v`, in place, at step `step` (1-based) and rate `lr`: `torch.optim.AdamW`'s arithmetic.
pub(crate) fn update(
    c: &AdamWConfig,
    step: u64,
    lr: f64,
    w: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
) {
    let bc1 = 1.0 - c.beta1.powi(step as i32);
    let bc2 = 1.0 - c.beta2.powi(step as i32);
    let _ = m.g_mul_scalar_(c.beta1).g_add_(&(g * (1.0 - c.beta1)));
    let _ = v.g_mul_scalar_(c.beta2).g_add_(&(g * g * (1.0 - c.beta2)));
    let _ = w.g_mul_scalar_(1.0 - lr * c.weight_decay);
    let denom = (v.sqrt() / bc2.sqrt()) + c.eps;
    let _ = w.g_add_(&(m.g_div(&denom) * (-lr / bc1)));
}

/// AdamW over a list of parameters.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<(String, Tensor)>,
    /// f32 copies of the 16-bit parameters.
    master: Vec<Option<Tensor>>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// Optimiser for `params` (name, trainable tensor); state starts at zero, in f32 with an
    /// f32 master copy for 16-bit parameters.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let master: Vec<Option<Tensor>> = params
            .iter()
            .map(|(_, p)| (wide(p.kind()) != p.kind()).then(|| p.detach().to_kind(Kind::Float)))
            .collect();
        let zeros = |p: &(String, Tensor)| p.1.detach().to_kind(wide(p.1.kind())).zeros_like();
        Self {
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            master,
            params,
            config,
            step: 0,
        }
    }

    /// Optimiser steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Zero every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// The gradients the last backward pass left (parameters without one skipped).
    fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// Scale gradients so their global L2 norm is at most `max_norm`; returns the norm before
    /// clipping (as `torch.nn.utils.clip_grad_norm_`).
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        tch::no_grad(|| {
            let grads = self.grads();
            if grads.is_empty() {
                return 0.0;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(wide(g.kind())).norm()).collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            if let Some(max) = max_norm {
                let coef = max / (total + 1e-6);
                if coef < 1.0 {
                    for mut g in grads {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// Average the gradients over the ranks of `group` (data parallelism): the gradients of
    /// each element type packed into one flat buffer, one all-reduce per buffer — not one call
    /// per tensor — then divided by the world size and copied back.
    pub fn average_grads(&self, group: &ProcessGroup) -> rlvr_dist::Result<()> {
        tch::no_grad(|| {
            let grads = self.grads();
            let mut kinds: Vec<Kind> = Vec::new();
            for g in &grads {
                if !kinds.contains(&g.kind()) {
                    kinds.push(g.kind());
                }
            }
            for kind in kinds {
                let same: Vec<&Tensor> = grads.iter().filter(|g| g.kind() == kind).collect();
                let flat: Vec<Tensor> = same.iter().map(|g| g.reshape([-1])).collect();
                let mut flat = Tensor::cat(&flat, 0);
                group.all_reduce(&mut flat, ReduceOp::Sum)?;
                let _ = flat.g_div_scalar_(group.world_size() as f64);
                let mut offset = 0;
                for g in same {
                    let n = g.numel() as i64;
                    g.shallow_clone().copy_(&flat.narrow(0, offset, n).view_as(g));
                    offset += n;
                }
            }
            Ok(())
        })
    }

    /// One AdamW update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(wide(g.kind()));
                let mut w = match &self.master[i] {
                    Some(master) => master.shallow_clone(),
                    None => p.shallow_clone(),
                };
                update(
                    &self.config,
                    self.step,
                    lr,
                    &mut w,
                    &g,
                    &mut self.exp_avg[i],
                    &mut self.exp_avg_sq[i],
                );
                if self.master[i].is_some() {
                    p.copy_(&w);
                }
            }
        });
    }

    /// Optimiser state as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`, and `master.NAME`
    /// for parameters with an f32 master copy).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            out.push((format!("exp_avg_sq.{name}"), self.exp_avg_sq[i].shallow_clone()));
            if let Some(m) = &self.master[i] {
                out.push((format!("master.{name}"), m.shallow_clone()));
            }
        }
        out
    }

    /// Restore state written by [`AdamW::state`] after `steps` optimiser steps. Returns the
    /// names of parameters that had no saved state.
    pub fn load_state(&mut self, state: &[(String, Tensor)], steps: u64) -> Vec<String> {
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for (i, (name, _)) in self.params.iter().enumerate() {
                let find = |prefix: &str| {
                    let key = format!("{prefix}.{name}");
                    state.iter().find(|(n, _)| *n == key).map(|(_, t)| t)
                };
                match (find("exp_avg"), find("exp_avg_sq")) {
                    (Some(m), Some(v)) => {
                        self.exp_avg[i].copy_(m);
                        self.exp_avg_sq[i].copy_(v);
                    }
                    _ => missing.push(name.clone()),
                }
                if let Some(master) = &mut self.master[i] {
                    match find("master") {
                        Some(saved) => master.copy_(saved),
                        None => missing.push(name.clone()),
                    }
                }
            }
        });
        self.step = steps;
        missing
    }
}
