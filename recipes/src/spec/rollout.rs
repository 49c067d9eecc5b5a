//! The `[rollout]` table: an RLVR stage's rollout and verifier workers, where the engines run
//! and in what element type.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Dtype;

/// Workers of an RLVR stage's actor graph: `rollout.workers` engines generate, verifier workers
/// score. Independent of the learner, so either side scales alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSpec {
    /// Rollout workers, each with its own inference engine.
    pub workers: u64,
    /// Sequences each engine decodes at once.
    pub engine_batch: u64,
    /// Size of each engine's paged KV cache in GiB; admission waits for free blocks when it is
    /// full. Unset: enough for `engine_batch` sequences of a job's longest prompt and
    /// `response_length` (a sample's prompt blocks are shared with its prompt's other samples
    /// either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_gib: Option<f64>,
    /// Replay each decode step of a GPU engine from a CUDA graph captured once per batch shape
    /// (vLLM's `enforce_eager = false`); false runs every step op by op. CPU engines and
    /// tensor-parallel ranks always run op by op.
    pub cuda_graphs: bool,
    /// Verifier workers.
    pub verifier_workers: u64,
    /// Longest one verifier call may take before the response is scored as failed.
    pub verifier_timeout_s: f64,
    /// Devices the rollout engines run on, worker `i` on entry `i` modulo their number: `cpu`,
    /// `cuda` or `cuda:N`. Empty: the learner's device (colocated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Element type of the engines' weights and KV cache. Unset: `model.dtype`. In `f32` the
    /// engines' log-probs equal the learner's; in `bf16` they differ by bf16 rounding (the
    /// train/rollout mismatch the run logs and `rlvr.*` corrections handle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            workers: 1,
            engine_batch: 64,
            kv_cache_gib: None,
            cuda_graphs: true,
            verifier_workers: 2,
            verifier_timeout_s: 10.0,
            devices: Vec::new(),
            dtype: None,
        }
    }
}

/// Whether `device` names a device as `rollout.devices` takes them: `cpu`, `cuda` or `cuda:N`.
pub fn is_device_name(device: &str) -> bool {
    matches!(device, "cpu" | "cuda")
        || device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

impl RolloutSpec {
    /// Whether every value is the default (then `rlvr show` leaves the table out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// `kv_cache_gib` in bytes.
    pub fn kv_cache_bytes(&self) -> Option<u64> {
        self.kv_cache_gib.map(|g| (g * (1u64 << 30) as f64) as u64)
    }
}
