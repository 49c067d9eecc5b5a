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
    /// Set when rows hold several documents each ([`TrainBatch::from_packed`]).
    pub packing: Option<Packing>,
}

/// Where each token of a packed batch sits: attention stays inside a document, and positions
/// restart at 0 with each document, so a packed row computes what its documents would alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packing {
    /// Position of each token within its document, `rows * cols` of them.
    pub position_ids: Vec<i64>,
    /// Document of each token within its row (0, 1, …; padding gets one past the last).
    pub document_ids: Vec<i64>,
}

/// Label of positions that carry no loss (padding, prompts), as in PyTorch's `ignore_index`.
pub const IGNORE: i64 = -100;

impl TrainBatch {
    /// Right-pad `seqs` to the longest with `pad_id`; each label is the token, padding ignored.
    pub fn from_sequences(seqs: &[Vec<i64>], pad_id: i64) -> Self {
        let examples: Vec<(Vec<i64>, Vec<i64>)> = seqs.iter().map(|s| (s.clone(), s.clone())).collect();
        Self::from_examples(&examples, pad_id)
    }

    /// Right-pad `(ids, labels)` pairs to the longest with `pad_id` (labels with [`IGNORE`]).
    pub fn from_examples(examples: &[(Vec<i64>, Vec<i64>)], pad_id: i64) -> Self {
        let cols = examples.iter().map(|e| e.0.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(examples.len() * cols);
        let mut labels = Vec::with_capacity(examples.len() * cols);
        for (ids, labs) in examples {
            input_ids.extend_from_slice(ids);
            labels.extend_from_slice(labs);
            input_ids.extend(std::iter::repeat_n(pad_id, cols - ids.len()));
            labels.extend(std::iter::repeat_n(IGNORE, cols - labs.len()));
        }
        Self {
            input_ids,
            labels,
            rows: examples.len(),
            cols,
            packing: None,
        }
    }

    /// Rows of `cols` positions, row `r` holding the examples of `rows[r]` one after another
    /// and padding with `pad_id`. Each document's first label is [`IGNORE`]: no document is
    /// predicted from the one before it. Rows longer than `cols` are cut.
    pub fn from_packed(rows: &[Vec<&(Vec<i64>, Vec<i64>)>], cols: usize, pad_id: i64) -> Self {
        let mut input_ids = Vec::with_capacity(rows.len() * cols);
        let mut labels = Vec::with_capacity(rows.len() * cols);
        let mut position_ids = Vec::with_capacity(rows.len() * cols);
        let mut document_ids = Vec::with_capacity(rows.len() * cols);
        for docs in rows {
            let start = input_ids.len();
            for (d, (ids, labs)) in docs.iter().enumerate() {
                let first = input_ids.len();
                input_ids.extend_from_slice(ids);
                labels.extend_from_slice(labs);
                if first < labels.len() {
                    labels[first] = IGNORE;
                }
                position_ids.extend(0..ids.len() as i64);
                document_ids.extend(std::iter::repeat_n(d as i64, ids.len()));
            }
            for v in [&mut input_ids, &mut labels, &mut position_ids, &mut document_ids] {
                v.truncate(start + cols);
            }
            let pad = start + cols - input_ids.len();
            input_ids.extend(std::iter::repeat_n(pad_id, pad));
            labels.extend(std::iter::repeat_n(IGNORE, pad));
            position_ids.extend(0..pad as i64);
            document_ids.extend(std::iter::repeat_n(docs.len() as i64, pad));
        }
        Self {
            input_ids,
            labels,
            rows: rows.len(),
            cols,
            packing: Some(Packing {
                position_ids,
                document_ids,
            }),
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

/// One sampled response, scored, ready for a policy-gradient step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySample {
    /// Prompt token ids (BOS included when the model uses one).
    pub prompt_ids: Vec<u32>,
    /// Sampled response token ids.
    pub response_ids: Vec<u32>,
    /// Log-probability of each response token under the policy that sampled it (the
    /// behaviour policy: the rollout engine's weights and sampling settings).
    pub logprobs: Vec<f32>,
    /// Log-probability of each response token under the learner's policy when the step began
    /// (the proximal policy the PPO ratio is taken to); empty: the ratio is taken to `logprobs`.
    #[serde(default)]
    pub proximal_logprobs: Vec<f32>,
    /// Off-policy correction weight of each response token (truncated importance sampling,
    /// IcePop's mask); empty: 1 on every token.
    #[serde(default)]
    pub is_weights: Vec<f32>,
    /// Advantage of each response token (GRPO repeats the sequence's advantage).
    pub advantages: Vec<f32>,
    /// PPO: the value target (return) of each response token; empty without a value model.
    pub returns: Vec<f32>,
    /// PPO: the value model's estimate when the sample was scored; empty without one.
    pub values: Vec<f32>,
}

/// Sampled responses for one policy-gradient micro-batch, laid out so that a prompt shared by
/// several responses (a GRPO group) is stored, and run, once. Prompts are `[groups,
/// prompt_cols]`, left-padded; responses `[rows, cols]`, right-padded; the per-token arrays are
/// aligned with the responses (entry `k` of a row concerns its response token `k`) and zero on
/// padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyBatch {
    /// Distinct prompts, left-padded with the pad id.
    pub prompt_ids: Vec<i64>,
    /// True on real prompt tokens, false on padding.
    pub prompt_real: Vec<bool>,
    /// Distinct prompts.
    pub groups: usize,
    /// Positions per prompt row.
    pub prompt_cols: usize,
    /// The prompt row of each response.
    pub group_of: Vec<i64>,
    /// Response token ids, right-padded with the pad id.
    pub response_ids: Vec<i64>,
    /// 1 on response tokens, 0 on padding.
    pub mask: Vec<f32>,
    /// Log-probabilities the ratio is taken to: the proximal policy's when the sample has
    /// them, else the sampling policy's.
    pub old_logprobs: Vec<f32>,
    /// Off-policy correction weight of each response token (1 when the sample has none).
    pub is_weights: Vec<f32>,
    /// Advantages.
    pub advantages: Vec<f32>,
    /// Value targets (PPO; zero without a value model).
    pub returns: Vec<f32>,
    /// Value estimates at scoring time (PPO; zero without a value model).
    pub old_values: Vec<f32>,
    /// Responses.
    pub rows: usize,
    /// Positions per response row.
    pub cols: usize,
}

impl PolicyBatch {
    /// Lay `samples` out with `pad_id`; consecutive samples with the same prompt share it.
    pub fn from_samples(samples: &[PolicySample], pad_id: i64) -> Self {
        let mut prompts: Vec<&[u32]> = Vec::new();
        let mut group_of = Vec::with_capacity(samples.len());
        for s in samples {
            if prompts.last() != Some(&s.prompt_ids.as_slice()) {
                prompts.push(&s.prompt_ids);
            }
            group_of.push(prompts.len() as i64 - 1);
        }
        let prompt_cols = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut prompt_ids = vec![pad_id; prompts.len() * prompt_cols];
        let mut prompt_real = vec![false; prompts.len() * prompt_cols];
        for (g, p) in prompts.iter().enumerate() {
            let start = g * prompt_cols + prompt_cols - p.len();
            for (j, &t) in p.iter().enumerate() {
                prompt_ids[start + j] = i64::from(t);
                prompt_real[start + j] = true;
            }
        }
        let cols = samples.iter().map(|s| s.response_ids.len()).max().unwrap_or(0);
        let rows = samples.len();
        let zeros = vec![0.0f32; rows * cols];
        let mut b = Self {
            prompt_ids,
            prompt_real,
            groups: prompts.len(),
            prompt_cols,
            group_of,
            response_ids: vec![pad_id; rows * cols],
            mask: zeros.clone(),
            old_logprobs: zeros.clone(),
            is_weights: zeros.clone(),
            advantages: zeros.clone(),
            returns: zeros.clone(),
            old_values: zeros,
            rows,
            cols,
        };
        for (r, s) in samples.iter().enumerate() {
            let at = |v: &[f32], k: usize| v.get(k).copied().unwrap_or(0.0);
            for (k, &t) in s.response_ids.iter().enumerate() {
                let i = r * cols + k;
                b.response_ids[i] = i64::from(t);
                b.mask[i] = 1.0;
                let old = match s.proximal_logprobs.is_empty() {
                    true => &s.logprobs,
                    false => &s.proximal_logprobs,
                };
                b.old_logprobs[i] = at(old, k);
                b.is_weights[i] = s.is_weights.get(k).copied().unwrap_or(1.0);
                b.advantages[i] = at(&s.advantages, k);
                b.returns[i] = at(&s.returns, k);
                b.old_values[i] = at(&s.values, k);
            }
        }
        b
    }

    /// Response tokens in the batch.
    pub fn response_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// A tokenised training sequence: token ids and their labels ([`IGNORE`] where no loss).
pub type Encoded = (Vec<i64>, Vec<i64>);

/// Preference pairs for DPO-style objectives: `batch` holds the chosen sequences in its first
/// half of rows and the rejected ones, in the same order, in its second half (prompts labelled
/// [`IGNORE`]); `reference_chosen` and `reference_rejected` are a frozen reference policy's
/// summed log-probabilities of each labelled sequence (empty for reference-free losses).
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceBatch {
    /// Chosen rows, then rejected rows.
    pub batch: TrainBatch,
    /// Reference log-probability of each chosen sequence.
    pub reference_chosen: Vec<f64>,
    /// Reference log-probability of each rejected sequence.
    pub reference_rejected: Vec<f64>,
}

impl PreferenceBatch {
    /// Pairs from `(chosen, rejected)` encodings (`(ids, labels)` each), right-padded with
    /// `pad_id`, with no reference log-probabilities yet.
    pub fn from_pairs(pairs: &[(Encoded, Encoded)], pad_id: i64) -> Self {
        let rows: Vec<Encoded> = pairs
            .iter()
            .map(|p| p.0.clone())
            .chain(pairs.iter().map(|p| p.1.clone()))
            .collect();
        Self {
            batch: TrainBatch::from_examples(&rows, pad_id),
            reference_chosen: Vec::new(),
            reference_rejected: Vec::new(),
        }
    }

    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.batch.rows / 2
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

/// One prompt to complete `n` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// Caller's id, echoed in each [`Completion`].
    pub id: u64,
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Completions to sample (they share the prompt's prefill).
    pub n: usize,
    /// Seed of this request's sampling; the same seed, prompt and weights give the same
    /// completions whatever else is in the batch.
    pub seed: u64,
}

/// How tokens are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Most new tokens per completion.
    pub max_new_tokens: usize,
    /// Token ids that end a completion (included in it), usually the EOS ids.
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a completion once its decoded text contains one.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
        }
    }
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// The new-token limit.
    Length,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The request's id.
    pub request_id: u64,
    /// Which of the request's `n` completions this is.
    pub index: usize,
    /// Sampled token ids (a stop token included).
    pub token_ids: Vec<u32>,
    /// Log-probability of each sampled token under the temperature-scaled distribution.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Version of the weights that produced its first token: the oldest of `token_versions`.
    pub policy_version: u64,
    /// Version of the weights that produced each token; they rise within a completion when
    /// the engine takes new weights between decode steps (in-flight updates).
    #[serde(default)]
    pub token_versions: Vec<u64>,
}

/// Element types a [`WeightChunk`] can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// 16-bit float.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }
}

/// One named tensor of a weight update, as raw little-endian bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightChunk {
    /// Hugging Face tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<i64>,
    /// `shape.product() * dtype.size()` bytes.
    pub data: Vec<u8>,
    /// Policy version these weights belong to.
    pub version: u64,
}

/// A verifier's judgement of one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Raw score: in [0, 1] from one verifier (1 when verified), the weighted sum of its
    /// parts' from a weighted sum of verifiers; reward shaping scales it later.
    pub score: f64,
    /// Whether the answer was judged correct (by every part, for a weighted sum).
    pub verified: bool,
    /// Why: what was extracted and compared, or why nothing could be.
    pub reason: String,
    /// A weighted sum's parts, one per verifier in it (empty from a single verifier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<VerdictPart>,
}

impl Verdict {
    /// One verifier's verdict: no parts.
    pub fn new(score: f64, verified: bool, reason: impl Into<String>) -> Self {
        Self {
            score,
            verified,
            reason: reason.into(),
            parts: Vec::new(),
        }
    }
}

/// One verifier's share of a weighted sum's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictPart {
    /// The verifier's name.
    pub verifier: String,
    /// Its weight in the sum.
    pub weight: f64,
    /// Its own score (unweighted).
    pub score: f64,
}
