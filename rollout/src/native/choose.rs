//! Choosing each sequence's next token from its logits: greedy, plain temperature sampling on
//! the device, or top-k/top-p on the host; on the CPU a slice of rows at a time.

use rand::Rng;
use rlvr_core::SamplingParams;
use tch::{Device, Kind, Tensor};

use super::{Active, NativeEngine};
use crate::sampling::{sample, sample_cdf_rows};

/// Bytes of each `[rows, vocab]` temporary of the CPU's sampling: few enough to be reused.
const SAMPLED_BYTES: usize = 16 << 20;

impl NativeEngine {
    /// [`Self::choose`], on the CPU [`SAMPLED_BYTES`] of `[rows, vocab]` rows at a time (whole,
    /// 2,048 rows of SmolLM2 made 400 MB temporaries, fresh pages zeroed every decode step: a
    /// fifth of the step); on a GPU, whose step is bound by launches, all rows at once.
    pub(super) fn choose_in_slices(
        &self,
        logits: &Tensor,
        params: &SamplingParams,
        seqs: &mut [&mut Active],
    ) -> Vec<(u32, f32)> {
        let row_bytes = logits.size()[1].max(1) as usize * 4;
        let rows = match logits.device() {
            Device::Cpu => (SAMPLED_BYTES / row_bytes).max(1),
            _ => seqs.len().max(1),
        };
        let slices = seqs.chunks_mut(rows).enumerate();
        slices
            .flat_map(|(i, slice)| {
                let part = logits.narrow(0, (i * rows) as i64, slice.len() as i64);
                self.choose(&part, params, slice)
            })
            .collect()
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
}
