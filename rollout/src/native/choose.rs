//! Choosing each sequence's next token from its logits: greedy or plain temperature sampling
//! by one fused kernel on an x86-64 CPU (`rlvr_learner::model::choose_tokens`) and on the
//! device elsewhere; top-k/top-p on the host.

use rand::Rng;
use rlvr_core::SamplingParams;
use rlvr_learner::model::choose_tokens;
use tch::{Device, Kind, Tensor};

use super::{Active, NativeEngine};
use crate::sampling::{choose_rows, sample};

/// Bytes of each `[rows, vocab]` temporary of libtorch's sampling on a CPU: few enough to be
/// reused.
const SAMPLED_BYTES: usize = 16 << 20;

impl NativeEngine {
    /// Pick the next token of each sequence from its row of `logits` (`[seqs.len(), vocab]`).
    /// Returns each token with its log-probability under the distribution it was drawn from
    /// (temperature-scaled; renormalised over the kept tokens under top-k/top-p).
    ///
    /// Greedy decoding and plain temperature sampling (the RL setting) draw one uniform number
    /// per sampling sequence; on an x86-64 CPU one fused kernel picks every row's token
    /// ([`choose_tokens`]: two passes over each row, no temporaries), elsewhere
    /// [`choose_rows`] does (libtorch's operations on the logits' device). Top-k/top-p filter
    /// on the host ([`choose_on_host`]). Those two run on a CPU [`SAMPLED_BYTES`] of rows
    /// at a time (whole, 2,048 rows of SmolLM2 made 400 MB temporaries, fresh pages zeroed
    /// every decode step: a fifth of the step); on a GPU, whose step is bound by launches, all
    /// rows at once.
    pub(super) fn choose_in_slices(
        &self,
        logits: &Tensor,
        params: &SamplingParams,
        seqs: &mut [&mut Active],
    ) -> Vec<(u32, f32)> {
        let plain = params.top_k == 0 && params.top_p >= 1.0;
        let sampled = params.temperature > 0.0;
        let draws: Option<Vec<f32>> =
            (plain && sampled).then(|| seqs.iter_mut().map(|s| s.rng.gen::<f32>()).collect());
        let temperature = if sampled { params.temperature } else { 1.0 };
        let logits = logits.to_kind(Kind::Float);
        if plain {
            if let Some(chosen) = choose_tokens(&logits, temperature as f32, draws.as_deref()) {
                return chosen;
            }
        }
        let rows = match logits.device() {
            Device::Cpu => (SAMPLED_BYTES / (logits.size()[1].max(1) as usize * 4)).max(1),
            _ => seqs.len().max(1),
        };
        let slices = seqs.chunks_mut(rows).enumerate();
        slices
            .flat_map(|(i, slice)| {
                let (start, len) = (i * rows, slice.len());
                let part = logits.narrow(0, start as i64, len as i64);
                if plain {
                    choose_rows(&part, temperature, draws.as_ref().map(|d| &d[start..start + len]))
                } else {
                    choose_on_host(&part, params, slice)
                }
            })
            .collect()
    }
}

/// Top-k/top-p: the temperature-scaled log-probabilities copied to the host and each row
/// filtered and drawn from there with its sequence's generator.
fn choose_on_host(logits: &Tensor, params: &SamplingParams, seqs: &mut [&mut Active]) -> Vec<(u32, f32)> {
    let t = if params.temperature > 0.0 {
        params.temperature
    } else {
        1.0
    };
    let scaled = if t == 1.0 {
        logits.shallow_clone()
    } else {
        logits / t
    };
    let logp = scaled.log_softmax(-1, Kind::Float);
    let (rows, vocab) = (seqs.len(), logp.size()[1] as usize);
    let mut flat = vec![0f32; rows * vocab];
    logp.to_device(Device::Cpu)
        .contiguous()
        .copy_data(&mut flat, rows * vocab);
    flat.chunks(vocab)
        .zip(seqs.iter_mut())
        .map(|(row, seq)| sample(row, params, &mut seq.rng))
        .collect()
}
