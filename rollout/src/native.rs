//! The native backend: the learner's Llama on libtorch, a KV cache allocated once, and
//! continuous batching — a finished completion's cache slot is refilled from the queue at once,
//! so one long response does not idle the batch.

use std::collections::VecDeque;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rlvr_core::{Completion, DType, FinishReason, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_data::Tokenizer;
use rlvr_learner::checkpoint;
use rlvr_learner::llama::{Config, KvCache, Llama};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, RolloutError};
use crate::sampling::sample;
use crate::Engine;

/// One completion being generated in a cache slot.
struct Active {
    request: usize,
    index: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    rng: ChaCha8Rng,
    /// Positions already in the cache (prompt + generated tokens but the last).
    cached: i64,
}

/// Batched generation on libtorch.
pub struct NativeEngine {
    vs: VarStore,
    model: Llama,
    cache: Option<KvCache>,
    max_batch: usize,
    kind: Kind,
    version: u64,
    tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for NativeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEngine")
            .field("config", self.model.config())
            .field("max_batch", &self.max_batch)
            .field("version", &self.version)
            .finish()
    }
}

impl NativeEngine {
    /// An engine with freshly initialised weights (seeded), holding up to `max_batch`
    /// sequences at once, with parameters and cache in `kind` on `device`.
    pub fn new(config: &Config, device: Device, kind: Kind, max_batch: usize, seed: i64) -> Self {
        tch::manual_seed(seed);
        let mut vs = VarStore::new(device);
        let model = Llama::new(&vs.root(), config);
        vs.set_kind(kind);
        vs.freeze();
        Self {
            vs,
            model,
            cache: None,
            max_batch: max_batch.max(1),
            kind,
            version: 0,
            tokenizer: None,
        }
    }

    /// An engine for a Hugging Face model directory (`config.json`, safetensors and, when
    /// present, `tokenizer.json` for stop strings).
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind, max_batch: usize) -> Result<Self> {
        let config = checkpoint::read_config(dir)?;
        let mut engine = Self::new(&config, device, Kind::Float, max_batch, 0);
        checkpoint::load_into(&engine.vs, &checkpoint::read_weights(dir)?, dir)?;
        engine.vs.set_kind(kind);
        engine.kind = kind;
        if dir.join("tokenizer.json").is_file() {
            engine.tokenizer = Some(Tokenizer::from_file(dir)?);
        }
        Ok(engine)
    }

    /// The tokenizer found beside the weights, if any.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// Use `tokenizer` to match stop strings.
    pub fn set_tokenizer(&mut self, tokenizer: Tokenizer) {
        self.tokenizer = Some(tokenizer);
    }

    /// The model configuration.
    pub fn config(&self) -> &Config {
        self.model.config()
    }

    /// Bytes of all parameters.
    pub fn weight_bytes(&self) -> usize {
        self.vs
            .variables()
            .values()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }

    /// A cache with at least `slots` slots of `capacity` positions (reused when big enough).
    fn cache_for(&mut self, slots: i64, capacity: i64) -> KvCache {
        match self.cache.take() {
            Some(c) if c.slots() >= slots && c.capacity() >= capacity => c,
            _ => KvCache::new(self.model.config(), slots, capacity, self.kind, self.vs.device()),
        }
    }

    /// Log-softmax of the temperature-scaled logits `[rows, vocab]`, on the CPU.
    fn logp_rows(&self, logits: &Tensor, temperature: f64) -> Vec<Vec<f32>> {
        let t = if temperature > 0.0 { temperature } else { 1.0 };
        let logp = (logits.to_kind(Kind::Float) / t)
            .log_softmax(-1, Kind::Float)
            .to_device(Device::Cpu);
        let (rows, vocab) = (logp.size()[0] as usize, logp.size()[1] as usize);
        let mut flat = vec![0f32; rows * vocab];
        logp.contiguous().copy_data(&mut flat, rows * vocab);
        flat.chunks(vocab).map(<[f32]>::to_vec).collect()
    }

    /// Append a sampled token; `Some(reason)` when the completion is finished.
    fn push(
        &self,
        seq: &mut Active,
        logp: &[f32],
        params: &SamplingParams,
        capacity: i64,
    ) -> Option<FinishReason> {
        let (token, lp) = sample(logp, params, &mut seq.rng);
        seq.tokens.push(token);
        seq.logprobs.push(lp);
        if params.stop_token_ids.contains(&token) {
            return Some(FinishReason::Stop);
        }
        if let (false, Some(tok)) = (params.stop.is_empty(), &self.tokenizer) {
            let text = tok.decode(&seq.tokens);
            if params.stop.iter().any(|s| text.contains(s.as_str())) {
                return Some(FinishReason::Stop);
            }
        }
        (seq.tokens.len() >= params.max_new_tokens || seq.cached + 1 >= capacity)
            .then_some(FinishReason::Length)
    }

    fn check(&self, requests: &[GenerationRequest]) -> Result<()> {
        let c = self.model.config();
        for r in requests {
            let bad = |message: String| Err(RolloutError::Request { id: r.id, message });
            if r.prompt_ids.is_empty() {
                return bad("empty prompt".into());
            }
            if let Some(t) = r.prompt_ids.iter().find(|&&t| i64::from(t) >= c.vocab_size) {
                return bad(format!(
                    "token id {t} outside the vocabulary (0..{})",
                    c.vocab_size
                ));
            }
            if r.prompt_ids.len() as i64 >= c.max_position_embeddings {
                return bad(format!(
                    "prompt of {} tokens leaves no room within max_position_embeddings = {}",
                    r.prompt_ids.len(),
                    c.max_position_embeddings
                ));
            }
        }
        Ok(())
    }
}

impl Engine for NativeEngine {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Completion>> {
        self.check(requests)?;
        let total: usize = requests.iter().map(|r| r.n).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let longest = requests.iter().map(|r| r.prompt_ids.len()).max().unwrap_or(0) as i64;
        let capacity =
            (longest + params.max_new_tokens as i64).min(self.model.config().max_position_embeddings);
        let slots = total.min(self.max_batch);
        let mut cache = self.cache_for(slots as i64, capacity);
        let device = self.vs.device();
        let mut queue: VecDeque<(usize, usize)> = requests.iter().enumerate().map(|(i, _)| (i, 0)).collect();
        let mut active: Vec<Option<Active>> = (0..slots).map(|_| None).collect();
        let mut done: Vec<Completion> = Vec::with_capacity(total);
        let finish = |seq: Active, reason: FinishReason, done: &mut Vec<Completion>| {
            done.push(Completion {
                request_id: requests[seq.request].id,
                index: seq.index,
                token_ids: seq.tokens,
                logprobs: seq.logprobs,
                finish_reason: reason,
                policy_version: self.version,
            });
        };

        let result = tch::no_grad(|| -> Result<()> {
            loop {
                // Refill free slots: one prefill per prompt, shared by its completions.
                while let Some(&(r, first)) = queue.front() {
                    let free: Vec<usize> = (0..slots).filter(|&s| active[s].is_none()).collect();
                    if free.is_empty() {
                        break;
                    }
                    let req = &requests[r];
                    let take = free.len().min(req.n - first);
                    if take == 0 {
                        queue.pop_front();
                        continue;
                    }
                    let prompt: Vec<i64> = req.prompt_ids.iter().map(|&t| i64::from(t)).collect();
                    let len = prompt.len() as i64;
                    let input = Tensor::from_slice(&prompt).view([1, len]).to_device(device);
                    let logits = self
                        .model
                        .forward_cached(&input, free[0] as i64, &[0], &mut cache)?;
                    let last = self.logp_rows(&logits.select(1, len - 1), params.temperature);
                    for (j, &slot) in free.iter().take(take).enumerate() {
                        if j > 0 {
                            cache.copy_prefix(free[0] as i64, slot as i64, len);
                        }
                        let index = first + j;
                        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
                        rng.set_stream(index as u64);
                        let mut seq = Active {
                            request: r,
                            index,
                            tokens: Vec::new(),
                            logprobs: Vec::new(),
                            rng,
                            cached: len,
                        };
                        match self.push(&mut seq, &last[0], params, capacity) {
                            Some(reason) => finish(seq, reason, &mut done),
                            None => active[slot] = Some(seq),
                        }
                    }
                    if first + take == req.n {
                        queue.pop_front();
                    } else if let Some(front) = queue.front_mut() {
                        front.1 = first + take;
                    }
                }
                // One decode step over slots 0..=highest active.
                let Some(rows) = active.iter().rposition(Option::is_some).map(|i| i + 1) else {
                    break;
                };
                let tokens: Vec<i64> = active[..rows]
                    .iter()
                    .map(|s| {
                        s.as_ref()
                            .map_or(0, |s| i64::from(*s.tokens.last().unwrap_or(&0)))
                    })
                    .collect();
                let starts: Vec<i64> = active[..rows]
                    .iter()
                    .map(|s| s.as_ref().map_or(0, |s| s.cached))
                    .collect();
                let input = Tensor::from_slice(&tokens)
                    .view([rows as i64, 1])
                    .to_device(device);
                let logits = self.model.forward_cached(&input, 0, &starts, &mut cache)?;
                let logp = self.logp_rows(&logits.squeeze_dim(1), params.temperature);
                for (slot, row) in logp.iter().enumerate() {
                    let Some(mut seq) = active[slot].take() else {
                        continue;
                    };
                    seq.cached += 1;
                    match self.push(&mut seq, row, params, capacity) {
                        Some(reason) => finish(seq, reason, &mut done),
                        None => active[slot] = Some(seq),
                    }
                }
            }
            Ok(())
        });
        self.cache = Some(cache);
        result?;
        let order: std::collections::HashMap<u64, usize> =
            requests.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        done.sort_by_key(|c| (order[&c.request_id], c.index));
        Ok(done)
    }

    fn load_weights(&mut self, chunks: &[WeightChunk], version: u64) -> Result<()> {
        let vars = self.vs.variables();
        let tied = self.model.config().tie_word_embeddings;
        tch::no_grad(|| {
            for chunk in chunks {
                let bad = |message: String| {
                    Err(RolloutError::Weights {
                        name: chunk.name.clone(),
                        message,
                    })
                };
                let Some(var) = vars.get(&chunk.name) else {
                    if tied && chunk.name == "lm_head.weight" {
                        continue;
                    }
                    return bad("no such parameter in this model".into());
                };
                if var.size() != chunk.shape {
                    return bad(format!("shape {:?}, the model has {:?}", chunk.shape, var.size()));
                }
                let kind = match chunk.dtype {
                    DType::F32 => Kind::Float,
                    DType::Bf16 => Kind::BFloat16,
                    DType::F16 => Kind::Half,
                };
                let numel: i64 = chunk.shape.iter().product();
                if chunk.data.len() != numel as usize * chunk.dtype.size() {
                    return bad(format!(
                        "{} bytes for {numel} {:?} elements",
                        chunk.data.len(),
                        chunk.dtype
                    ));
                }
                let src = Tensor::from_data_size(&chunk.data, &chunk.shape, kind);
                var.shallow_clone().copy_(&src);
            }
            Ok(())
        })?;
        self.version = version;
        Ok(())
    }

    fn policy_version(&self) -> u64 {
        self.version
    }
}
