//! What a run and its worker nodes say to each other through `ractor_cluster`: the one message
//! type the actors of a worker node serve, and its payloads — JSON for settings, jobs and
//! results; for weights, buckets of whole tensors (a JSON table, then the raw bytes), one
//! message per bucket rather than one per tensor.

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use rlvr_core::{Completion, DType, GenerationRequest, SamplingParams, Verdict, WeightChunk};
use rlvr_learner::model::Config;
use rlvr_rollout::{DecodeMode, NativeEngine};
use rlvr_verifiers::Mode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Process group the rollout workers of worker nodes join.
pub const ROLLOUT_GROUP: &str = "rlvr.rollout";
/// Process group the rollout workers of launched engine ranks join: they take each policy
/// version over the run's weight group.
pub const SYNCED_ROLLOUT_GROUP: &str = "rlvr.rollout.synced";
/// Process group the verifier workers of worker nodes join.
pub const VERIFIER_GROUP: &str = "rlvr.verifier";

/// Messages of a worker on a worker node. Replies are `""` (or JSON `{"Ok": ...}`) on success
/// and the error's text (or `{"Err": "..."}`) otherwise.
#[derive(RactorClusterMessage)]
pub enum RemoteMsg {
    /// Set the worker up: a JSON [`RolloutSetup`] or [`VerifierSetup`], by its role.
    #[rpc]
    Setup(Vec<u8>, RpcReplyPort<String>),
    /// One bucket of a weight update (`encode_bucket`); buckets collect until `Load`.
    Bucket(Vec<u8>),
    /// Load the buckets received since the last load as this policy version.
    #[rpc]
    Load(u64, RpcReplyPort<String>),
    /// Load this policy version (or a newer one) from what arrived over the run's weight group
    /// (a launched engine rank's worker; see `weight_group.rs`).
    #[rpc]
    LoadSynced(u64, RpcReplyPort<String>),
    /// Complete a JSON [`RolloutRequest`]; replies JSON `Result<Vec<Completion>, String>`.
    #[rpc]
    Generate(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Score a JSON [`VerifyRequest`]; replies JSON `Result<Vec<Verdict>, String>`.
    #[rpc]
    Verify(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// How a run's engines hold their KV cache and run their decode steps (`rollout.kv_cache_gib`,
/// `rollout.cuda_graphs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Size of the KV cache in bytes (unset: what the engine's batch of a job needs).
    pub kv_cache_bytes: Option<u64>,
    /// Replay decode steps from CUDA graphs where the engine can (a GPU, a build with them,
    /// not a tensor-parallel rank); false runs them op by op.
    pub cuda_graphs: bool,
}

impl EngineOptions {
    /// Set up a new engine as the options say.
    pub fn apply(&self, engine: &mut NativeEngine) -> rlvr_rollout::Result<()> {
        engine.set_kv_budget(self.kv_cache_bytes);
        if !self.cuda_graphs {
            engine.set_decode_mode(DecodeMode::Eager)?;
        }
        Ok(())
    }
}

/// What a remote rollout worker builds its engine from (the weights follow as buckets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutSetup {
    /// The policy's architecture.
    pub config: Config,
    /// Sequences in flight at once.
    pub max_batch: usize,
    /// Its KV cache and decode steps.
    pub engine: EngineOptions,
    /// Whether the engine holds its weights and KV cache in bf16 (else f32).
    pub bf16: bool,
    /// Whether the run's engines take newer weights between decode steps (`rlvr.max_staleness`),
    /// which a launched engine rank does from its weight group.
    #[serde(default)]
    pub in_flight: bool,
}

/// How a remote verifier worker scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifierSetup {
    /// The rules the run's verifiers follow.
    pub mode: Mode,
    /// Longest one verify call may take, in seconds.
    pub timeout_s: f64,
}

/// A rollout job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutRequest {
    /// The prompts, each completed `n` times.
    pub requests: Vec<GenerationRequest>,
    /// Sampling settings.
    pub params: SamplingParams,
}

/// A verify job: responses to one prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// The verifier's name.
    pub verifier: String,
    /// The ground truth as the data set wrote it.
    pub label: String,
    /// Decoded responses.
    pub responses: Vec<String>,
}

/// Results as they travel back.
pub type Reply<T> = Result<T, String>;
/// What a rollout job generated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The job's completions, in request order, then index.
    pub completions: Vec<Completion>,
    /// Most sequences one decode step of the job carried (the engine's in-flight batch).
    pub peak_sequences: usize,
}

/// A rollout job's reply.
pub type Completions = Reply<Generated>;
/// A verify job's reply.
pub type Verdicts = Reply<Vec<Verdict>>;

/// `value` as JSON bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Only maps with non-string keys fail to serialise; none of these types has one.
    serde_json::to_vec(value).unwrap_or_default()
}

/// JSON bytes as a `T`, or why not.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed {what} from the other node: {e}"))
}

#[derive(Serialize, Deserialize)]
struct TensorEntry {
    name: String,
    dtype: DType,
    shape: Vec<i64>,
    bytes: usize,
}

#[derive(Serialize, Deserialize)]
struct BucketHeader {
    version: u64,
    tensors: Vec<TensorEntry>,
}

/// Group `chunks` into buckets of whole tensors of about `bucket_bytes` each (a larger tensor
/// travels alone), each encoded as an 8-byte little-endian table length, the JSON table, and
/// the tensors' bytes back to back.
pub fn encode_buckets(chunks: &[WeightChunk], bucket_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < chunks.len() {
        let mut end = start + 1;
        let mut bytes = chunks[start].data.len();
        while end < chunks.len() && bytes + chunks[end].data.len() <= bucket_bytes {
            bytes += chunks[end].data.len();
            end += 1;
        }
        out.push(encode_bucket(&chunks[start..end]));
        start = end;
    }
    out
}

fn encode_bucket(chunks: &[WeightChunk]) -> Vec<u8> {
    let header = BucketHeader {
        version: chunks.first().map_or(0, |c| c.version),
        tensors: chunks
            .iter()
            .map(|c| TensorEntry {
                name: c.name.clone(),
                dtype: c.dtype,
                shape: c.shape.clone(),
                bytes: c.data.len(),
            })
            .collect(),
    };
    let table = encode(&header);
    let data: usize = chunks.iter().map(|c| c.data.len()).sum();
    let mut out = Vec::with_capacity(8 + table.len() + data);
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    out.extend_from_slice(&table);
    for c in chunks {
        out.extend_from_slice(&c.data);
    }
    out
}

/// The tensors of one bucket.
pub fn decode_bucket(bytes: &[u8]) -> Result<Vec<WeightChunk>, String> {
    let short = || "truncated weight bucket".to_string();
    let len = bytes.get(..8).ok_or_else(short)?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| short())?) as usize;
    let table = bytes.get(8..8 + len).ok_or_else(short)?;
    let header: BucketHeader = decode(table, "weight bucket table")?;
    let mut at = 8 + len;
    let mut out = Vec::with_capacity(header.tensors.len());
    for t in header.tensors {
        let data = bytes.get(at..at + t.bytes).ok_or_else(short)?.to_vec();
        at += t.bytes;
        out.push(WeightChunk {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            data,
            version: header.version,
        });
    }
    if at != bytes.len() {
        return Err(format!(
            "weight bucket has {} bytes past its tensors",
            bytes.len() - at
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(name: &str, bytes: usize) -> WeightChunk {
        WeightChunk {
            name: name.into(),
            dtype: DType::F32,
            shape: vec![(bytes / 4) as i64],
            data: (0..bytes).map(|i| (i % 251) as u8).collect(),
            version: 7,
        }
    }

    #[test]
    fn buckets_carry_whole_tensors_and_decode_to_the_same_chunks() {
        let chunks = vec![
            chunk("a", 400),
            chunk("b", 400),
            chunk("big", 4000),
            chunk("c", 8),
        ];
        let buckets = encode_buckets(&chunks, 1000);
        assert_eq!(buckets.len(), 3, "a+b, big alone, c");
        let back: Vec<WeightChunk> = buckets.iter().flat_map(|b| decode_bucket(b).unwrap()).collect();
        assert_eq!(back, chunks);
        assert!(decode_bucket(&buckets[0][..buckets[0].len() - 1]).is_err());
        assert!(decode_bucket(b"\x05\0\0").is_err());
    }
}
