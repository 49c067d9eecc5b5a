//! The native backend: the learner's Llama on libtorch, a paged KV cache allocated once, and
//! continuous batching — a finished completion's blocks go back to the pool and the queue's
//! next completions start at once, so one long response does not idle the batch. The
//! completions of a prompt share its blocks, prompts share their common leading blocks
//! (`admission.rs`, `blocks.rs`), and the cache's size is either what `max_batch` sequences of
//! the call need or a fixed budget that admission respects.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rlvr_core::{Completion, FinishReason, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_data::Tokenizer;
use rlvr_learner::checkpoint;
use rlvr_learner::model::{CachedRow, CausalLm, Config, KvCache};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, RolloutError};
use crate::{Engine, WeightFeed};

mod admission;
mod blocks;
mod choose;
mod decode_steps;
mod tensor_parallel;
mod weights;

use admission::{Admitted, Limits};
use blocks::Blocks;
pub use decode_steps::DecodeMode;
use decode_steps::DecodeSteps;

/// Positions per KV cache block unless [`NativeEngine::set_block_size`] says otherwise.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// One completion being generated.
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
    /// Its blocks, in position order, each held for it.
    table: Vec<i64>,
    /// Positions it may fill (prompt and new tokens, within the model's).
    capacity: i64,
}

/// Batched generation on libtorch.
pub struct NativeEngine {
    vs: VarStore,
    model: CausalLm,
    /// The KV cache and the decode steps laid out on it, kept between calls.
    cache: Option<(KvCache, DecodeSteps)>,
    decode_mode: DecodeMode,
    max_batch: usize,
    kind: Kind,
    version: u64,
    tokenizer: Option<Tokenizer>,
    feed: Option<Arc<dyn WeightFeed>>,
    block_size: usize,
    kv_budget: Option<u64>,
    peak_sequences: usize,
    peak_blocks: usize,
    /// This engine's (rank, world size) in a tensor-parallel group.
    shard: Option<(usize, usize)>,
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

    fn with_model(mut vs: VarStore, mut model: CausalLm, kind: Kind, max_batch: usize) -> Self {
        vs.freeze();
        // On a GPU three fewer kernels a layer; on the CPU one product or three cost the same
        // (measured), and a decode step stacks its own there.
        if vs.device().is_cuda() {
            model.fuse_projections();
        }
        let decode_mode = match vs.device() {
            Device::Cuda(_) if rlvr_dist::CudaGraph::available() => DecodeMode::CudaGraphs,
            _ => DecodeMode::Eager,
        };
        Self {
            vs,
            model,
            cache: None,
            decode_mode,
            max_batch: max_batch.max(1),
            kind,
            version: 0,
            tokenizer: None,
            feed: None,
            block_size: DEFAULT_BLOCK_SIZE,
            kv_budget: None,
            peak_sequences: 0,
            peak_blocks: 0,
            shard: None,
        }
    }

    /// Give the KV cache a fixed size in bytes (`None`: enough for `max_batch` sequences of
    /// each call's longest prompt and `max_new_tokens`). Admission then waits for blocks to
    /// free before it starts more completions.
    pub fn set_kv_budget(&mut self, bytes: Option<u64>) {
        self.kv_budget = bytes;
        self.cache = None;
    }

    /// Run decode steps as `mode` says. The default is CUDA graphs on a CUDA device in a build
    /// that has them, eager otherwise; CUDA graphs are refused elsewhere and on a
    /// tensor-parallel rank (its steps all-reduce between layers).
    pub fn set_decode_mode(&mut self, mode: DecodeMode) -> Result<()> {
        if mode == DecodeMode::CudaGraphs {
            let why = if !self.vs.device().is_cuda() {
                Some(format!("the engine runs on {:?}", self.vs.device()))
            } else if !rlvr_dist::CudaGraph::available() {
                Some("this build has none (cargo feature `nccl` against a CUDA libtorch: scripts/build-nccl.sh)".into())
            } else if self.shard.is_some() {
                Some("a tensor-parallel rank all-reduces between its layers".into())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(RolloutError::Decode(format!("no CUDA graphs: {why}")));
            }
        }
        self.decode_mode = mode;
        self.cache = None;
        Ok(())
    }

    /// How decode steps run.
    pub fn decode_mode(&self) -> DecodeMode {
        self.decode_mode
    }

    /// Fixed decode shapes laid out on the current KV cache (under CUDA graphs, graphs
    /// captured).
    pub fn decode_shapes(&self) -> usize {
        self.cache.as_ref().map_or(0, |(_, steps)| steps.shapes())
    }

    /// Positions per KV cache block (at least 1).
    pub fn set_block_size(&mut self, positions: usize) {
        self.block_size = positions.max(1);
        self.cache = None;
    }

    /// Bytes one KV cache block takes.
    pub fn block_bytes(&self) -> u64 {
        KvCache::block_bytes(self.model.config(), self.block_size as i64, self.kind)
    }

    /// Most KV cache blocks the last `generate` call held at once.
    pub fn peak_blocks(&self) -> usize {
        self.peak_blocks
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
        self.whole("export_weights")?;
        Ok(checkpoint::export_chunks(&self.vs, version)?)
    }

    /// Save the weights in Hugging Face format into `dir`.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.whole("save_model")?;
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

    /// The cache for a call whose sequences fill up to `capacity` positions: the budget's
    /// blocks, or enough blocks for `sequences` of them (reused when big enough, with the
    /// decode steps laid out on it).
    fn cache_for(&mut self, sequences: usize, capacity: usize) -> Result<(KvCache, DecodeSteps)> {
        let blocks = match self.kv_budget {
            Some(bytes) => (bytes / self.block_bytes().max(1)) as i64,
            None => (sequences * capacity.div_ceil(self.block_size)) as i64,
        };
        if blocks < 1 {
            return Err(RolloutError::Cache(format!(
                "a budget of {} bytes holds no block of {} bytes",
                self.kv_budget.unwrap_or_default(),
                self.block_bytes()
            )));
        }
        // A cache too small is freed before the new one is allocated.
        let fits = |(c, _): &(KvCache, DecodeSteps)| {
            c.blocks() >= blocks && c.block_size() == self.block_size as i64
        };
        if let Some(cache) = self.cache.take().filter(fits) {
            return Ok(cache);
        }
        let cache = KvCache::new(
            self.model.config(),
            blocks,
            self.block_size as i64,
            self.kind,
            self.vs.device(),
        );
        Ok((cache, DecodeSteps::new(self.decode_mode)))
    }

    /// Append a chosen token; `Some(reason)` when the completion is finished.
    fn push(
        &self,
        seq: &mut Active,
        (token, lp): (u32, f32),
        params: &SamplingParams,
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
        (seq.tokens.len() >= params.max_new_tokens || seq.cached + 1 >= seq.capacity)
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
    /// Prefill a run of admitted requests (the uncached part of each prompt, right-padded to
    /// the run's longest), give each completion its copy of the prompt's partial block, and
    /// start every completion with its first token.
    fn prefill(&self, run: &[Admitted], params: &SamplingParams, step: &mut Step) -> Result<()> {
        let requests = step.requests;
        let lens: Vec<usize> = run
            .iter()
            .map(|a| requests[a.request].prompt_ids.len() - a.cached)
            .collect();
        let width = lens.iter().copied().max().unwrap_or(1);
        let mut ids = vec![0i64; run.len() * width];
        for (row, a) in run.iter().enumerate() {
            for (col, &t) in requests[a.request].prompt_ids[a.cached..].iter().enumerate() {
                ids[row * width + col] = i64::from(t);
            }
        }
        let rows: Vec<CachedRow> = run
            .iter()
            .zip(&lens)
            .map(|(a, &len)| CachedRow {
                blocks: &a.prompt_blocks,
                start: a.cached as i64,
                len: len as i64,
            })
            .collect();
        let device = self.vs.device();
        let input = Tensor::from_slice(&ids)
            .view([run.len() as i64, width as i64])
            .to_device(device);
        let hidden = self.model.forward_cached(&input, &rows, &mut step.cache)?;
        let last: Vec<Tensor> = lens
            .iter()
            .enumerate()
            .map(|(row, &len)| hidden.get(row as i64).get(len as i64 - 1))
            .collect();
        let logits = self.model.logits(&Tensor::stack(&last, 0));
        // One logits row per completion: its request's row, repeated.
        let size = step.cache.block_size() as usize;
        let mut rows = Vec::new();
        let mut seqs = Vec::new();
        for (row, a) in run.iter().enumerate() {
            let (seed, len) = (requests[a.request].seed, requests[a.request].prompt_ids.len());
            let full = len / size;
            for (j, tail) in a.tails.iter().enumerate() {
                if j > 0 && len % size != 0 {
                    step.cache.copy_block(a.prompt_blocks[full], tail[0]);
                }
                let index = a.first + j;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index as u64);
                rows.push(row as i64);
                seqs.push(Active {
                    request: a.request,
                    index,
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    versions: Vec::new(),
                    rng,
                    cached: len as i64,
                    table: [&a.prompt_blocks[..full], tail.as_slice()].concat(),
                    capacity: a.capacity as i64,
                });
            }
        }
        let logits = logits.index_select(0, &Tensor::from_slice(&rows).to_device(device));
        let mut refs: Vec<&mut Active> = seqs.iter_mut().collect();
        let chosen = self.choose_in_slices(&logits, params, &mut refs);
        for (mut seq, pick) in seqs.into_iter().zip(chosen) {
            match self.push(&mut seq, pick, params) {
                Some(reason) => step.finish(seq, reason),
                None => step.active.push(seq),
            }
        }
        Ok(())
    }

    /// One decode step over every active sequence; returns false when none is.
    fn decode(&self, params: &SamplingParams, step: &mut Step) -> Result<bool> {
        if step.active.is_empty() {
            return Ok(false);
        }
        step.peak = step.peak.max(step.active.len());
        let tokens: Vec<i64> = step
            .active
            .iter()
            .map(|s| i64::from(*s.tokens.last().unwrap_or(&0)))
            .collect();
        let rows: Vec<CachedRow> = step
            .active
            .iter()
            .map(|s| CachedRow {
                blocks: &s.table,
                start: s.cached,
                len: 1,
            })
            .collect();
        let hidden = step
            .steps
            .hidden(&self.model, &mut step.cache, &tokens, &rows, self.max_batch)?;
        let logits = self.model.logits(&hidden);
        let mut refs: Vec<&mut Active> = step.active.iter_mut().collect();
        let chosen = self.choose_in_slices(&logits, params, &mut refs);
        for (mut seq, pick) in std::mem::take(&mut step.active).into_iter().zip(chosen) {
            seq.cached += 1;
            match self.push(&mut seq, pick, params) {
                Some(reason) => step.finish(seq, reason),
                None => step.active.push(seq),
            }
        }
        Ok(true)
    }
}

/// The state of one `generate` call.
struct Step<'a> {
    requests: &'a [GenerationRequest],
    cache: KvCache,
    steps: DecodeSteps,
    blocks: Blocks,
    active: Vec<Active>,
    done: Vec<Completion>,
    /// Most sequences one decode step carried.
    peak: usize,
}

impl Step<'_> {
    /// A finished completion: its blocks go back to the pool.
    fn finish(&mut self, seq: Active, reason: FinishReason) {
        self.blocks.release(&seq.table);
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
        let longest = requests.iter().map(|r| r.prompt_ids.len()).max().unwrap_or(0);
        let limits = Limits {
            max_new_tokens: params.max_new_tokens,
            max_positions: self.model.config().max_position_embeddings.max(1) as usize,
        };
        let (cache, steps) = self.cache_for(
            total.min(self.max_batch),
            (longest + limits.max_new_tokens.max(1)).min(limits.max_positions),
        )?;
        let mut step = Step {
            requests,
            blocks: Blocks::new(cache.blocks() as usize, cache.block_size() as usize),
            cache,
            steps,
            active: Vec::new(),
            done: Vec::with_capacity(total),
            peak: 0,
        };
        let mut queue: VecDeque<(usize, usize)> = (0..requests.len()).map(|i| (i, 0)).collect();
        let mut reported = 0;
        let result = tch::no_grad(|| -> Result<()> {
            loop {
                let version = self.version;
                self.take_newer_weights()?;
                if self.version != version {
                    step.blocks.forget_prefixes();
                }
                let rows = self.max_batch - step.active.len();
                let admitted = admission::admit(&mut queue, requests, rows, &mut step.blocks, &limits);
                if let (true, true, Some(&(r, _))) =
                    (admitted.is_empty(), step.active.is_empty(), queue.front())
                {
                    return Err(RolloutError::Request {
                        id: requests[r].id,
                        message: format!(
                            "one completion needs more of the KV cache than its {} blocks of {} positions ({} bytes each)",
                            step.blocks.count(),
                            step.blocks.size(),
                            self.block_bytes()
                        ),
                    });
                }
                for run in admission::prefill_runs(&admitted, requests) {
                    self.prefill(run, params, &mut step)?;
                }
                let more = self.decode(params, &mut step)?;
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
            steps,
            mut done,
            peak,
            blocks,
            ..
        } = step;
        self.cache = Some((cache, steps));
        self.peak_sequences = peak;
        self.peak_blocks = blocks.peak();
        result?;
        let order: HashMap<u64, usize> = requests.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        done.sort_by_key(|c| (order[&c.request_id], c.index));
        Ok(done)
    }
}
