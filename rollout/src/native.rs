//! The native backend: the learner's Llama on libtorch, a KV cache allocated once, and
//! continuous batching — a finished completion's cache slot is refilled from the queue at once,
//! so one long response does not idle the batch, and once the queue is empty the remaining
//! sequences move down into the freed slots, so the batch's tail decodes them alone.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlvr_core::{Completion, FinishReason, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_data::Tokenizer;
use rlvr_learner::checkpoint;
use rlvr_learner::model::{CausalLm, Config, KvCache};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, RolloutError};
use crate::sampling::{sample, sample_cdf_rows};
use crate::{Engine, WeightFeed};

mod admission;
mod weights;

use admission::Admitted;

/// One completion being generated in a cache slot.
struct Active {
    request: usize,
    index: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// The policy version that produced each token.
    versions: Vec<u64>,
    rng: ChaCha8Rng,
    /// Positions already in the cache (prompt + generated tokens but the last).
    cached: i64,
}

/// Batched generation on libtorch.
pub struct NativeEngine {
    vs: VarStore,
    model: CausalLm,
    cache: Option<KvCache>,
    max_batch: usize,
    kind: Kind,
    version: u64,
    tokenizer: Option<Tokenizer>,
    feed: Option<Arc<dyn WeightFeed>>,
    peak_sequences: usize,
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
        let (vs, model) = rlvr_learner::runtime::seeded(seed, || {
            let vs = Self::store(device, kind);
            let model = CausalLm::new(&vs.root(), config);
            (vs, model)
        });
        Self::with_model(vs, model, kind, max_batch)
    }

    /// An engine for a Hugging Face model directory (`config.json`, safetensors and, when
    /// present, `tokenizer.json` for stop strings), its weights read straight into `kind` on
    /// `device`.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind, max_batch: usize) -> Result<Self> {
        let config = checkpoint::read_config(dir)?;
        let vs = Self::store(device, kind);
        let model = CausalLm::for_loading(&vs.root(), &config);
        checkpoint::load_dir(&vs, dir)?;
        let mut engine = Self::with_model(vs, model, kind, max_batch);
        if dir.join("tokenizer.json").is_file() {
            engine.tokenizer = Some(Tokenizer::from_file(dir)?);
        }
        Ok(engine)
    }

    /// The same engine, its weights tagged as policy `version` (a resumed run's engines start
    /// from a checkpoint's weights, not version 0's).
    pub fn at_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// An empty store on `device` whose new variables take `kind`.
    fn store(device: Device, kind: Kind) -> VarStore {
        let mut vs = VarStore::new(device);
        vs.set_kind(kind);
        vs
    }

    fn with_model(mut vs: VarStore, model: CausalLm, kind: Kind, max_batch: usize) -> Self {
        vs.freeze();
        Self {
            vs,
            model,
            cache: None,
            max_batch: max_batch.max(1),
            kind,
            version: 0,
            tokenizer: None,
            feed: None,
            peak_sequences: 0,
        }
    }

    /// Most sequences one decode step of the last `generate` call carried at once (the
    /// in-flight batch; at most `max_batch`).
    pub fn peak_sequences(&self) -> usize {
        self.peak_sequences
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

    /// Every parameter as weight chunks tagged with `version`.
    pub fn export_weights(&self, version: u64) -> Result<Vec<WeightChunk>> {
        Ok(checkpoint::export_chunks(&self.vs, version)?)
    }

    /// Save the weights in Hugging Face format into `dir`.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        Ok(checkpoint::save_model(&self.vs, self.model.config(), dir)?)
    }

    /// Bytes of all parameters.
    pub fn weight_bytes(&self) -> usize {
        self.vs
            .variables()
            .values()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }

    /// Free the KV cache (the next generation allocates it again): what an engine that shares
    /// its device with the learner gives back while the learner steps.
    pub fn release_cache(&mut self) {
        self.cache = None;
    }

    /// A cache with at least `slots` slots of `capacity` positions (reused when big enough).
    fn cache_for(&mut self, slots: i64, capacity: i64) -> KvCache {
        match self.cache.take() {
            Some(c) if c.slots() >= slots && c.capacity() >= capacity => c,
            _ => KvCache::new(self.model.config(), slots, capacity, self.kind, self.vs.device()),
        }
    }

    /// Pick the next token of each sequence from its row of `logits` (`[seqs.len(), vocab]`).
    /// Returns each token with its log-probability under the distribution it was drawn from
    /// (temperature-scaled; renormalised over the kept tokens under top-k/top-p).
    ///
    /// Greedy decoding and plain temperature sampling (the RL setting) stay on the device: each
    /// row of the cumulative distribution is searched there with the sequence's own random
    /// draw, and only the chosen tokens and their log-probabilities come back to the host.
    /// Top-k/top-p copy the log-probabilities and filter on the CPU.
    fn choose(&self, logits: &Tensor, params: &SamplingParams, seqs: &mut [&mut Active]) -> Vec<(u32, f32)> {
        let t = if params.temperature > 0.0 {
            params.temperature
        } else {
            1.0
        };
        let logits = logits.to_kind(Kind::Float);
        let logp = if t == 1.0 { logits } else { logits / t }.log_softmax(-1, Kind::Float);
        let (rows, vocab) = (seqs.len(), logp.size()[1] as usize);
        let index = if params.temperature <= 0.0 {
            logp.argmax(-1, true)
        } else if params.top_k == 0 && params.top_p >= 1.0 {
            let draws: Vec<f32> = seqs.iter_mut().map(|s| s.rng.gen::<f32>()).collect();
            sample_cdf_rows(&logp.exp().cumsum(-1, Kind::Float), &draws)
        } else {
            let mut flat = vec![0f32; rows * vocab];
            logp.to_device(Device::Cpu)
                .contiguous()
                .copy_data(&mut flat, rows * vocab);
            return flat
                .chunks(vocab)
                .zip(seqs.iter_mut())
                .map(|(row, seq)| sample(row, params, &mut seq.rng))
                .collect();
        };
        // Tokens and log-probs come back in one copy, as f64 (exact for both).
        let chosen = logp.gather(1, &index, false);
        let packed = Tensor::cat(&[index.to_kind(Kind::Double), chosen.to_kind(Kind::Double)], 1);
        let packed = Vec::<f64>::try_from(packed.to_device(Device::Cpu).view([-1])).unwrap_or_default();
        packed
            .chunks(2)
            .map(|pair| (pair[0] as u32, pair[1] as f32))
            .collect()
    }

    /// Append a chosen token; `Some(reason)` when the completion is finished.
    fn push(
        &self,
        seq: &mut Active,
        (token, lp): (u32, f32),
        params: &SamplingParams,
        capacity: i64,
    ) -> Option<FinishReason> {
        seq.tokens.push(token);
        seq.logprobs.push(lp);
        seq.versions.push(self.version);
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

impl NativeEngine {
    /// Prefill a run of admitted requests whose prefill slots are contiguous (prompts
    /// right-padded to the run's longest), copy each prefix to its requests' other slots, and start
    /// every completion with its first token.
    fn prefill(
        &self,
        run: &[Admitted],
        requests: &[GenerationRequest],
        params: &SamplingParams,
        step: &mut Step,
    ) -> Result<()> {
        let lens: Vec<i64> = run
            .iter()
            .map(|a| requests[a.request].prompt_ids.len() as i64)
            .collect();
        let width = lens.iter().copied().max().unwrap_or(1) as usize;
        let mut ids = vec![0i64; run.len() * width];
        for (row, a) in run.iter().enumerate() {
            for (col, &t) in requests[a.request].prompt_ids.iter().enumerate() {
                ids[row * width + col] = i64::from(t);
            }
        }
        let device = self.vs.device();
        let input = Tensor::from_slice(&ids)
            .view([run.len() as i64, width as i64])
            .to_device(device);
        let hidden = self.model.forward_cached(
            &input,
            run[0].prefill as i64,
            &vec![0; run.len()],
            &mut step.cache,
        )?;
        let last: Vec<Tensor> = lens
            .iter()
            .enumerate()
            .map(|(row, &len)| hidden.get(row as i64).get(len - 1))
            .collect();
        let logits = self.model.logits(&Tensor::stack(&last, 0));
        // One logits row per completion: its request's row, repeated.
        let mut rows = Vec::new();
        let mut seqs = Vec::new();
        for (row, (a, &len)) in run.iter().zip(&lens).enumerate() {
            let seed = requests[a.request].seed;
            for (j, slot) in std::iter::once(a.prefill)
                .chain(a.extra.iter().copied())
                .enumerate()
            {
                if j > 0 {
                    step.cache.copy_prefix(a.prefill as i64, slot as i64, len);
                }
                let index = a.first + j;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index as u64);
                rows.push(row as i64);
                seqs.push((
                    slot,
                    Active {
                        request: a.request,
                        index,
                        tokens: Vec::new(),
                        logprobs: Vec::new(),
                        versions: Vec::new(),
                        rng,
                        cached: len,
                    },
                ));
            }
        }
        let logits = logits.index_select(0, &Tensor::from_slice(&rows).to_device(device));
        let mut refs: Vec<&mut Active> = seqs.iter_mut().map(|(_, s)| s).collect();
        let chosen = self.choose(&logits, params, &mut refs);
        for ((slot, mut seq), pick) in seqs.into_iter().zip(chosen) {
            match self.push(&mut seq, pick, params, step.capacity) {
                Some(reason) => step.finish(seq, reason),
                None => step.active[slot] = Some(seq),
            }
        }
        Ok(())
    }

    /// One decode step over slots `0..=highest active`; returns false when nothing is active.
    fn decode(&self, params: &SamplingParams, step: &mut Step) -> Result<bool> {
        let Some(rows) = step.active.iter().rposition(Option::is_some).map(|i| i + 1) else {
            return Ok(false);
        };
        let live = &step.active[..rows];
        let tokens: Vec<i64> = live
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or(0, |s| i64::from(*s.tokens.last().unwrap_or(&0)))
            })
            .collect();
        let starts: Vec<i64> = live.iter().map(|s| s.as_ref().map_or(0, |s| s.cached)).collect();
        let slots: Vec<i64> = (0..rows as i64).filter(|&s| live[s as usize].is_some()).collect();
        step.peak = step.peak.max(slots.len());
        let device = self.vs.device();
        let input = Tensor::from_slice(&tokens)
            .view([rows as i64, 1])
            .to_device(device);
        let hidden = self.model.forward_cached(&input, 0, &starts, &mut step.cache)?;
        let hidden = hidden
            .squeeze_dim(1)
            .index_select(0, &Tensor::from_slice(&slots).to_device(device));
        let logits = self.model.logits(&hidden);
        let mut taken: Vec<(usize, Active)> = slots
            .iter()
            .filter_map(|&s| step.active[s as usize].take().map(|a| (s as usize, a)))
            .collect();
        let mut refs: Vec<&mut Active> = taken.iter_mut().map(|(_, s)| s).collect();
        let chosen = self.choose(&logits, params, &mut refs);
        for ((slot, mut seq), pick) in taken.into_iter().zip(chosen) {
            seq.cached += 1;
            match self.push(&mut seq, pick, params, step.capacity) {
                Some(reason) => step.finish(seq, reason),
                None => step.active[slot] = Some(seq),
            }
        }
        Ok(true)
    }
}

/// The state of one `generate` call.
struct Step<'a> {
    requests: &'a [GenerationRequest],
    cache: KvCache,
    capacity: i64,
    active: Vec<Option<Active>>,
    done: Vec<Completion>,
    /// Most sequences one decode step carried.
    peak: usize,
}

impl Step<'_> {
    /// With nothing left to admit, move the highest active sequences (their cached keys and
    /// values with them) into the lowest free slots: a decode step runs over slots up to the
    /// highest active one, so a batch's tail would otherwise decode the holes its finished
    /// sequences left.
    fn compact(&mut self) {
        while let (Some(hole), Some(top)) = (
            self.active.iter().position(Option::is_none),
            self.active.iter().rposition(Option::is_some),
        ) {
            if top < hole {
                return;
            }
            let seq = self.active[top].take();
            let cached = seq.as_ref().map_or(0, |s| s.cached);
            self.cache.copy_prefix(top as i64, hole as i64, cached);
            self.active[hole] = seq;
        }
    }

    fn finish(&mut self, seq: Active, reason: FinishReason) {
        self.done.push(Completion {
            request_id: self.requests[seq.request].id,
            index: seq.index,
            token_ids: seq.tokens,
            logprobs: seq.logprobs,
            finish_reason: reason,
            policy_version: seq.versions.first().copied().unwrap_or_default(),
            token_versions: seq.versions,
        });
    }
}

impl Engine for NativeEngine {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Completion>> {
        self.generate_reporting(requests, params, &mut |_, _| {})
    }

    fn load_weights(&mut self, chunks: &[WeightChunk], version: u64) -> Result<()> {
        self.load_chunks(chunks, version)
    }

    fn policy_version(&self) -> u64 {
        self.version
    }
}

impl NativeEngine {
    /// [`Engine::generate`], calling `progress(finished, total)` each time a decode step
    /// finishes completions (for a progress bar over a long batch).
    pub fn generate_reporting(
        &mut self,
        requests: &[GenerationRequest],
        params: &SamplingParams,
        progress: &mut dyn FnMut(usize, usize),
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
        let mut step = Step {
            requests,
            cache: self.cache_for(slots as i64, capacity),
            capacity,
            active: (0..slots).map(|_| None).collect(),
            done: Vec::with_capacity(total),
            peak: 0,
        };
        let mut queue: VecDeque<(usize, usize)> = (0..requests.len()).map(|i| (i, 0)).collect();
        let mut reported = 0;
        let result = tch::no_grad(|| -> Result<()> {
            loop {
                self.take_newer_weights()?;
                let free = (0..slots).filter(|&s| step.active[s].is_none()).collect();
                let admitted = admission::admit(&mut queue, requests, free);
                for run in admission::prefill_runs(&admitted, requests) {
                    self.prefill(run, requests, params, &mut step)?;
                }
                let more = self.decode(params, &mut step)?;
                if queue.is_empty() {
                    step.compact();
                }
                if step.done.len() > reported {
                    reported = step.done.len();
                    progress(reported, total);
                }
                if !more && queue.is_empty() {
                    return Ok(());
                }
            }
        });
        let Step {
            cache,
            mut done,
            peak,
            ..
        } = step;
        self.cache = Some(cache);
        self.peak_sequences = peak;
        result?;
        let order: HashMap<u64, usize> = requests.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        done.sort_by_key(|c| (order[&c.request_id], c.index));
        Ok(done)
    }
}
