//! `rlvr run RECIPE --rehearse`: the recipe's real topology on this machine's CPU over Gloo
//! ([`rlvr_recipes::rehearse`] rewrites the stages: a tiny model of the same family, a few
//! steps of built-in data, one local rank per learner GPU), then a report of what the real run
//! would hold per GPU (`rlvr plan`) beside what each rehearsal rank held, and how long it took.
//! Runs that need a reward model from outside the pipeline (Tülu 3 70B's value model starts
//! from the 8B reward model) get a tiny random one of its shape.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_recipes::plan::{plan_stage, PlanRequest, StagePlan};
use rlvr_recipes::rehearse::{rehearsal, tiny_config, Rehearsed};
use rlvr_recipes::spec::{ModelConfig, RlAlgorithm, StageKind};
use rlvr_recipes::{Recipe, Resolved};
use serde_json::{json, Value};

/// Memory one local rank of a rehearsal takes (libtorch, the tiny model, the data): learner
/// ranks peaked at 170-300 MiB resident in `tulu3-8b --rehearse`, the RLVR rank 0 that also
/// runs the actor graph at 400, and the shared libraries count in each. What decides how
/// many ranks this machine holds.
const RANK_BUDGET_BYTES: u64 = 350 << 20;

/// GPU memory the plan beside the rehearsal assumes (an 80 GiB H100/A100).
const PLAN_GPU_GIB: f64 = 80.0;

/// A recipe made ready to rehearse, and what the report needs.
pub struct Rehearsal {
    /// The rewritten recipe that runs.
    pub resolved: Resolved,
    /// Per stage: what was kept and changed.
    stages: Vec<Rehearsed>,
    /// Per stage: the real run's plan.
    plans: Vec<StagePlan>,
    /// Stand-in reward models to make before the run: (stage, directory, shape).
    stand_ins: Vec<(String, PathBuf, ModelConfig)>,
    /// The most local ranks this machine holds.
    max_ranks: u64,
}

/// The most local ranks this machine's available memory holds (at least 1).
fn machine_ranks() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024);
    (available / RANK_BUDGET_BYTES).max(1)
}

/// Rewrite `resolved` for its rehearsal into `out`, on at most `max_ranks` local ranks
/// (default: what this machine's memory holds).
pub fn prepare(resolved: &Resolved, out: &Path, max_ranks: Option<u64>) -> Rehearsal {
    let max_ranks = max_ranks.unwrap_or_else(machine_ranks);
    let plans = resolved
        .stages()
        .iter()
        .map(|s| {
            let req = PlanRequest {
                gpus: s.launch.gpus.max(1),
                gpu_mem_gib: PLAN_GPU_GIB,
                nodes: s.launch.nodes.max(1),
            };
            plan_stage(s, &req)
        })
        .collect();
    let (mut rewritten, stages) = rehearsal(resolved, max_ranks);
    let mut stand_ins = Vec::new();
    let pipeline: Vec<&mut Recipe> = match &mut rewritten {
        Resolved::Stage(r) => vec![r.as_mut()],
        Resolved::Pipeline(p) => p.stages.iter_mut().collect(),
    };
    let mut reward_stage_before = false;
    for stage in pipeline {
        reward_stage_before |= stage.kind == Some(StageKind::Rm);
        let Some(rl) = stage.rlvr.as_mut() else { continue };
        let needs_reward_model = rl.reward_model_multiplier != 0.0 || rl.algorithm == RlAlgorithm::Ppo;
        if reward_stage_before || rl.reward_model_path.is_empty() || !needs_reward_model {
            continue;
        }
        let dir = out.join("rehearsal").join(format!("{}-reward-model", stage.name));
        let shape = rl
            .value_model_config
            .clone()
            .unwrap_or_else(|| stage.model.config.clone());
        rl.reward_model_path = dir.display().to_string();
        stand_ins.push((stage.name.clone(), dir, tiny_config(&shape)));
    }
    Rehearsal {
        resolved: rewritten,
        stages,
        plans,
        stand_ins,
        max_ranks,
    }
}

impl Rehearsal {
    /// Say what the rehearsal keeps and changes, and make the stand-in reward models.
    pub fn start(&self) -> Result<()> {
        tracing::info!(
            "rehearsal: this machine holds {} local ranks; each learner GPU of the real run is one rank, on the CPU over Gloo",
            self.max_ranks
        );
        for s in &self.stages {
            let shrunk = if s.shrunk {
                " (SHRUNK: this machine holds fewer)"
            } else {
                ""
            };
            tracing::info!(
                "rehearsal {}: {} GPUs on {} node(s), {} learning -> {} local ranks{shrunk}; {}",
                s.stage,
                s.gpus,
                s.nodes,
                s.learner_gpus,
                s.ranks,
                s.notes.join("; ")
            );
        }
        for (stage, dir, shape) in &self.stand_ins {
            let config = LearnerConfig::constant(1e-5, tch::Device::Cpu);
            let mut model = Learner::new(&crate::stages::llama_config(shape), config, 0);
            model.attach_critic()?;
            model
                .save_reward_model(dir)
                .with_context(|| format!("writing the stand-in reward model {}", dir.display()))?;
            tracing::info!(
                "rehearsal {stage}: a tiny random reward model ({} layers of width {}) stands in for the recipe's rlvr.reward_model_path",
                shape.num_hidden_layers,
                shape.hidden_size
            );
        }
        Ok(())
    }

    /// Print and write (`OUT/rehearsal.json`) what the real run would hold per GPU beside
    /// what each rehearsal rank held, read from the run's `metrics.jsonl`.
    pub fn report(&self, out: &Path, seconds: f64) -> Result<()> {
        let records: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let gib = |b: f64| b / (1u64 << 30) as f64;
        let mut stages = Vec::new();
        println!("rehearsal of {} in {seconds:.0} s", self.resolved.name());
        for (s, plan) in self.stages.iter().zip(&self.plans) {
            let mine: Vec<&Value> = records
                .iter()
                .filter(|r| r["stage_name"] == s.stage.as_str())
                .collect();
            let ranks: Vec<Value> = mine
                .iter()
                .rev()
                .find_map(|r| r.get("learner_ranks").and_then(Value::as_array).cloned())
                .unwrap_or_default();
            let field = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
            let shares: Vec<f64> = ranks
                .iter()
                .map(|r| field(r, "held_bytes") / field(r, "unsharded_bytes").max(1.0))
                .collect();
            let rss = ranks.iter().map(|r| field(r, "peak_rss_mb")).fold(0.0, f64::max);
            let elapsed = mine.iter().map(|r| field(r, "elapsed_s")).fold(0.0, f64::max);
            // Under ZeRO-3 each rank holds 1/ranks of the model states (padding aside).
            let expected = match self.sharded(&s.stage) {
                true => 1.0 / s.ranks as f64,
                false => 1.0,
            };
            let agrees = !shares.is_empty()
                && shares
                    .iter()
                    .all(|x| (x - expected).abs() <= 0.02 * expected + 1e-9);
            println!(
                "  {:<16} real: {} GPUs on {} node(s), {} learning; plan per learner GPU {:.1} GiB (model states {:.1} GiB), {}",
                s.stage,
                s.gpus,
                s.nodes,
                s.learner_gpus,
                gib(plan.learner_total_bytes),
                gib(plan.states.total()),
                if plan.fits { "fits 80 GiB" } else { "DOES NOT FIT 80 GiB" }
            );
            println!(
                "  {:<16} rehearsal: {} ranks{} in {elapsed:.0} s; each held {} of its model states ({}: {expected:.4}), peak RSS at most {rss:.0} MiB",
                "",
                ranks.len(),
                if s.shrunk { " (shrunk)" } else { "" },
                fraction_range(&shares),
                if agrees { "as sharding says" } else { "NOT as sharding says" },
            );
            stages.push(json!({
                "stage": s.stage, "real": {"gpus": s.gpus, "nodes": s.nodes, "learner_gpus": s.learner_gpus,
                    "plan_learner_gib_per_gpu": gib(plan.learner_total_bytes), "plan_state_gib_per_gpu": gib(plan.states.total()),
                    "fits": plan.fits},
                "rehearsal": {"ranks": s.ranks, "shrunk": s.shrunk, "notes": s.notes, "seconds": elapsed,
                    "held_share_per_rank": shares, "expected_share": expected, "agrees": agrees, "learner_ranks": ranks},
            }));
        }
        let report = json!({"recipe": self.resolved.name(), "seconds": seconds, "max_ranks": self.max_ranks, "stages": stages});
        std::fs::write(out.join("rehearsal.json"), serde_json::to_string_pretty(&report)?)?;
        Ok(())
    }

    /// Whether the rehearsed stage `name` shards its learner with ZeRO-3 over several ranks.
    fn sharded(&self, name: &str) -> bool {
        self.resolved
            .stages()
            .iter()
            .any(|s| s.name == name && s.launch.zero_stage >= 3 && s.learner.world_size > 1)
    }
}

/// The smallest and largest of `shares` as fractions (`1/32.0`, or `1/31.9..1/32.1`).
fn fraction_range(shares: &[f64]) -> String {
    let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = shares.iter().copied().fold(0.0, f64::max);
    match shares.is_empty() {
        true => "nothing recorded".to_string(),
        false if (hi - lo) < 1e-9 => format!("1/{:.1}", 1.0 / hi.max(1e-12)),
        false => format!("1/{:.1}..1/{:.1}", 1.0 / hi.max(1e-12), 1.0 / lo.max(1e-12)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plan and runtime agree on the rehearsal: every catalogue recipe's rehearsal passes the
    /// check `rlvr run` makes before it starts, stage by stage, and each rehearsed stage keeps
    /// the real run's ZeRO stage and offload and takes one rank per learner GPU (at most 4
    /// here; outside RLVR a count that divides the GPUs, so the global batch is kept).
    #[test]
    fn every_catalogue_recipe_rehearses_with_stages_this_build_runs() {
        let out = std::env::temp_dir().join("rlvr-rehearse-catalogue");
        for name in rlvr_recipes::catalog::names() {
            let real = rlvr_recipes::load(name, &[]).unwrap();
            let r = prepare(&real, &out, Some(4));
            let rehearsed = r.resolved.stages();
            assert_eq!(rehearsed.len(), real.stages().len(), "{name}");
            for (stage, real) in rehearsed.iter().zip(real.stages()) {
                crate::stages::check_available(stage).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                assert_eq!(stage.launch.zero_stage, real.launch.zero_stage, "{name}");
                assert_eq!(
                    stage.launch.offload_optimizer, real.launch.offload_optimizer,
                    "{name}"
                );
                let (learners, world) = (real.learner_gpus(), stage.learner.world_size);
                assert!((1..=learners.min(4)).contains(&world), "{name}: {world} ranks");
                let rl = stage.kind == Some(StageKind::Rlvr);
                assert!(
                    rl || learners.is_multiple_of(world),
                    "{name}: {world} ranks for {learners}"
                );
            }
        }
    }
}
