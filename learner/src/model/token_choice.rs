//! Each row's next token from its logits on an x86-64 CPU in f32, with the token's
//! log-probability: the greedy choice, or a draw from the softmax at a temperature, in two
//! passes over the row.
//!
//! libtorch's way (a log-softmax, its exponential, a cumulative sum, a search and a gather)
//! writes four row-sized temporaries and reads them back: at the RL shape (2,048 rows of
//! SmolLM2's 49,152 logits, 400 MB) about 250 ms of a 4 s decode step on this repository's
//! 2-core machine (BENCHMARKS.md). Here the first pass finds the row's maximum `m`; the second
//! sums the weights `exp((x - m) / T)` (the vectorised exponential of `isa.rs`; weights below
//! `e^-87` count as zero) a segment of [`SEGMENT`] logits at a time, keeping each segment's
//! sum, and meanwhile asks for the next row in L2. A draw `u` walks the segments' sums to the
//! one where the running total passes `u × total` and recomputes that segment's weights to find
//! the token: the first whose running total exceeds `u × total`, the rule of a search of the
//! cumulative distribution. Its log-probability is `(x - m) / T - ln total`. The greedy choice
//! is the first maximum, its log-probability at temperature 1. The rows are shared over
//! libtorch's OpenMP threads (`omp.rs`); each row's result does not depend on how.

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::isa::{exp_below_zero, max_of, Lanes, EXP_FLOOR};
use super::omp;

/// Logits whose weights are summed into one of the sums a draw walks: 16 AVX-512 vectors.
const SEGMENT: usize = 256;

/// The token of each row of `logits` (`[rows, vocab]`) with its log-probability: with `draws`
/// (one uniform draw in `[0, 1)` per row), drawn from `softmax(logits / temperature)`; without,
/// the row's first maximum, its log-probability under `softmax(logits)`. `None` where this
/// kernel does not apply: not a contiguous f32 matrix on an x86-64 CPU with AVX2 and FMA, an
/// operand requiring a gradient, no logits in a row, a temperature that is not positive and
/// finite, or not one draw per row. A row whose weights are all zero (a NaN or `+∞` logit)
/// gets its first maximum.
pub fn choose_tokens(logits: &Tensor, temperature: f32, draws: Option<&[f32]>) -> Option<Vec<(u32, f32)>> {
    choose_with(logits, temperature, draws, Isa::widest()?)
}

/// [`choose_tokens`] with the instruction set `isa` (one of [`Isa::supported`]).
fn choose_with(
    logits: &Tensor,
    temperature: f32,
    draws: Option<&[f32]>,
    isa: Isa,
) -> Option<Vec<(u32, f32)>> {
    let size = logits.size();
    let applies = logits.dim() == 2
        && logits.kind() == Kind::Float
        && logits.device() == Device::Cpu
        && !logits.requires_grad()
        && logits.is_contiguous()
        && (1..=i64::from(u32::MAX)).contains(&size[1])
        && temperature.is_finite()
        && temperature > 0.0
        && draws.is_none_or(|d| d.len() as i64 == size[0]);
    if !applies {
        return None;
    }
    let (rows, vocab) = (size[0] as usize, size[1] as usize);
    let mut chosen = vec![(0u32, 0f32); rows];
    let job = Job {
        logits: logits.data_ptr() as *const f32,
        vocab,
        scale: if draws.is_some() { 1.0 / temperature } else { 1.0 },
        draws,
        out: chosen.as_mut_ptr(),
        isa,
    };
    job.run(rows);
    Some(chosen)
}

/// Raw views of one call's operands, valid while [`choose_tokens`] runs.
struct Job<'a> {
    /// `[rows, vocab]`, contiguous.
    logits: *const f32,
    vocab: usize,
    /// `1 / T` (1 for the greedy choice).
    scale: f32,
    draws: Option<&'a [f32]>,
    /// One `(token, log-probability)` per row, written in full.
    out: *mut (u32, f32),
    /// The widest instruction set this CPU runs.
    isa: Isa,
}

// SAFETY: the threads of `omp::parallel` read the logits and write disjoint rows of `out`.
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    /// Every row, in contiguous runs shared over libtorch's threads.
    fn run(&self, rows: usize) {
        let threads = (tch::get_num_threads().max(1) as usize).min(rows);
        // SAFETY: `choose_with` checked the CPU's features and the operands' kind, shape and
        // contiguity; each thread writes the rows of its own run only.
        omp::parallel(threads, &|thread, threads| unsafe {
            kernel::rows(
                self,
                thread * rows / threads..(thread + 1) * rows / threads,
                self.isa,
            )
        });
    }

    /// Rows `rows` in `V`'s vectors; inlined into each instruction set's copy (`kernel`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn rows<V: Lanes>(&self, rows: Range<usize>) {
        let mut sums = vec![0f32; self.vocab.div_ceil(SEGMENT)];
        for r in rows.clone() {
            let row = Row {
                logits: std::slice::from_raw_parts(self.logits.add(r * self.vocab), self.vocab),
                scale: self.scale,
                shift: 0.0,
            };
            let next = (r + 1 < rows.end).then(|| self.logits.add((r + 1) * self.vocab));
            *self.out.add(r) = row.choose::<V>(self.draws.map(|d| d[r]), next, &mut sums);
        }
    }
}

/// One row's logits, and the affine map `x · scale + shift` (`(x - max) / T`) before the
/// exponential.
#[cfg(target_arch = "x86_64")]
struct Row<'a> {
    logits: &'a [f32],
    scale: f32,
    shift: f32,
}

#[cfg(target_arch = "x86_64")]
impl Row<'_> {
    /// The token for `draw` (the first maximum without one) and its log-probability, the
    /// segments' sums into `sums`, asking for the cache lines of `next` (a row as long) in L2.
    #[inline(always)]
    unsafe fn choose<V: Lanes>(
        mut self,
        draw: Option<f32>,
        next: Option<*const f32>,
        sums: &mut [f32],
    ) -> (u32, f32) {
        let max = max_of::<V>(self.logits);
        self.shift = -max * self.scale;
        for (s, sum) in sums.iter_mut().enumerate() {
            *sum = self.segment_sum::<V>(s, next);
        }
        let total: f32 = sums.iter().sum();
        let first_max = || self.logits.iter().position(|&x| x == max).unwrap_or(0);
        let token = match draw {
            Some(u) => self.find::<V>(u * total, sums).unwrap_or_else(first_max),
            None => first_max(),
        };
        let logprob = self.logits[token].mul_add(self.scale, self.shift) - total.ln();
        (token as u32, logprob)
    }

    /// The weights of the logits from `p`: `exp(x · scale + shift)`, zero below `e^-87`.
    #[inline(always)]
    unsafe fn weights<V: Lanes>(&self, p: *const f32) -> V {
        let y = V::fma(V::load(p), V::splat(self.scale), V::splat(self.shift));
        exp_below_zero(y).where_at_least(y, V::splat(EXP_FLOOR))
    }

    /// Segment `s`'s logits (its first `end - start`, the rest of a last vector padded with
    /// `-∞`) through `each(offset, weights)`, a vector at a time, asking for the cache line of
    /// `next` at each offset.
    #[inline(always)]
    unsafe fn each_vector<V: Lanes>(
        &self,
        s: usize,
        next: Option<*const f32>,
        mut each: impl FnMut(usize, V),
    ) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let (start, end) = (s * SEGMENT, ((s + 1) * SEGMENT).min(self.logits.len()));
        let p = self.logits.as_ptr();
        let mut i = start;
        while i + V::WIDTH <= end {
            if let Some(next) = next.filter(|_| i % LINE == 0) {
                _mm_prefetch::<_MM_HINT_T1>(next.add(i).cast());
            }
            each(i - start, self.weights::<V>(p.add(i)));
            i += V::WIDTH;
        }
        if i < end {
            let mut padded = [f32::NEG_INFINITY; 16];
            padded[..end - i].copy_from_slice(&self.logits[i..end]);
            each(i - start, self.weights::<V>(padded.as_ptr()));
        }
    }

    /// The sum of segment `s`'s weights.
    #[inline(always)]
    unsafe fn segment_sum<V: Lanes>(&self, s: usize, next: Option<*const f32>) -> f32 {
        let mut sum = V::zero();
        self.each_vector::<V>(s, next, |_, w| sum = V::add(sum, w));
        sum.sum()
    }

    /// The first token whose running total of weights exceeds `target`: the segment where the
    /// running total of `sums` does, then the token within it. Where rounding leaves a walk
    /// short of `target`, the last token of positive weight before it; `None` when every weight
    /// is zero.
    #[inline(always)]
    unsafe fn find<V: Lanes>(&self, target: f32, sums: &[f32]) -> Option<usize> {
        let (mut before, mut found) = (0f32, None);
        for (s, &sum) in sums.iter().enumerate() {
            if sum > 0.0 {
                found = Some((s, before));
                if before + sum > target {
                    break;
                }
            }
            before += sum;
        }
        let (s, before) = found?;
        // Whole vectors at multiples of their width below `SEGMENT`, itself a multiple of both.
        let mut weights = [0f32; SEGMENT];
        self.each_vector::<V>(s, None, |offset, w| w.store(weights.as_mut_ptr().add(offset)));
        let len = (self.logits.len() - s * SEGMENT).min(SEGMENT);
        let mut running = before;
        let mut positive = None;
        for (j, &w) in weights[..len].iter().enumerate() {
            running += w;
            if w > 0.0 {
                positive = Some(j);
                if running > target {
                    break;
                }
            }
        }
        positive.map(|j| s * SEGMENT + j)
    }
}

/// Floats per cache line.
#[cfg(target_arch = "x86_64")]
const LINE: usize = 16;

/// The CPU's vector units: [`Job::rows`] compiled for AVX2 and FMA, and for AVX-512F.
#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::{__m256, __m512};
    use std::ops::Range;

    use super::{Isa, Job};

    /// `job`'s `rows` with `isa`, which this CPU runs (one of [`Isa::supported`]).
    pub(super) unsafe fn rows(job: &Job<'_>, rows: Range<usize>, isa: Isa) {
        match isa {
            Isa::Avx512 => avx512(job, rows),
            Isa::Avx2 => avx2(job, rows),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(job: &Job<'_>, rows: Range<usize>) {
        job.rows::<__m256>(rows)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(job: &Job<'_>, rows: Range<usize>) {
        job.rows::<__m512>(rows)
    }
}

/// Off x86-64 no instruction set is supported ([`Isa::widest`] is `None`), so
/// [`choose_tokens`] declines before a job exists and libtorch's path runs.
#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use std::ops::Range;

    use super::{Isa, Job};

    pub(super) unsafe fn rows(_: &Job<'_>, _: Range<usize>, _: Isa) {
        unreachable!("no instruction set is supported off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::{choose_with, Isa};

    /// Each row's weights `exp((x - max) / T)` in f64 (zero at `-∞`).
    fn weights(row: &[f32], temperature: f64) -> Vec<f64> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter()
            .map(|&x| ((f64::from(x) - f64::from(max)) / temperature).exp())
            .collect()
    }

    /// Logits `[rows, vocab]` from a seeded normal, some `-∞`: the first 20 of row 0 (half of
    /// it where that is fewer), every seventh of the odd rows.
    fn logits(rows: i64, vocab: i64) -> Vec<f32> {
        tch::manual_seed(rows * 1000 + vocab);
        let mut logits =
            Vec::<f32>::try_from((Tensor::randn([rows, vocab], (Kind::Float, Device::Cpu)) * 4).view([-1]))
                .expect("f32 logits");
        let vocab = vocab as usize;
        for (i, x) in logits.iter_mut().enumerate() {
            let (r, j) = (i / vocab, i % vocab);
            if (r == 0 && j < 20.min(vocab / 2)) || (r % 2 == 1 && j % 7 == 3) {
                *x = f32::NEG_INFINITY;
            }
        }
        logits
    }

    /// Every draw lands in its token's share of the cumulative distribution (computed in f64,
    /// up to 1e-5 of the total for rounding), never on a token of weight zero, and the
    /// log-probability is the f64 log-softmax's within 1e-5: vocabularies shorter than a
    /// vector, across segments with a part-vector last, and long; temperatures 1 and 0.6; draws
    /// of 0 and the largest below 1 among them; one thread and two (the same results); each
    /// instruction set this CPU runs.
    #[test]
    fn draws_land_in_their_tokens_share_of_the_distribution() {
        let default_threads = tch::get_num_threads();
        for (rows, vocab) in [(5, 7), (37, 1007), (9, 49_152)] {
            let logits_flat = logits(rows, vocab);
            let tensor = Tensor::from_slice(&logits_flat).view([rows, vocab]);
            let mut draws: Vec<f32> = (0..rows).map(|r| (r * 7919 % 1000) as f32 / 1000.0).collect();
            draws[0] = 0.0;
            draws[1] = 1.0 - f32::EPSILON / 2.0;
            for &isa in Isa::supported() {
                for temperature in [1.0f32, 0.6] {
                    let mut by_threads = Vec::new();
                    for threads in [1, 2] {
                        tch::set_num_threads(threads);
                        by_threads
                            .push(choose_with(&tensor, temperature, Some(&draws), isa).expect("applies"));
                    }
                    assert_eq!(by_threads[0], by_threads[1], "{isa:?}, vocab {vocab}");
                    for (r, ((token, logprob), row)) in by_threads[0]
                        .iter()
                        .zip(logits_flat.chunks(vocab as usize))
                        .enumerate()
                    {
                        let w = weights(row, f64::from(temperature));
                        let total: f64 = w.iter().sum();
                        let t = *token as usize;
                        let (below, through) = (w[..t].iter().sum::<f64>(), w[..=t].iter().sum::<f64>());
                        let target = f64::from(draws[r]) * total;
                        let case = format!("{isa:?}, vocab {vocab}, T {temperature}, row {r}, token {t}");
                        assert!(w[t] > 0.0, "{case}: a token of weight zero");
                        assert!(
                            below <= target + 1e-5 * total && through >= target - 1e-5 * total,
                            "{case}: draw {target} outside [{below}, {through}]"
                        );
                        let exact = (w[t] / total).ln();
                        assert!(
                            (f64::from(*logprob) - exact).abs() < 1e-5,
                            "{case}: log-prob {logprob}, exactly {exact}"
                        );
                    }
                }
            }
        }
        tch::set_num_threads(default_threads);
    }

    /// Without draws: the first of tied maxima, its log-probability at temperature 1 whatever
    /// the temperature given.
    #[test]
    fn the_greedy_choice_is_the_first_maximum() {
        let row = [0.5f32, 3.0, -1.0, 3.0, f32::NEG_INFINITY, 2.0];
        let tensor = Tensor::from_slice(&row).view([1, 6]);
        let exact = (1.0 / weights(&row, 1.0).iter().sum::<f64>()).ln();
        for &isa in Isa::supported() {
            let chosen = choose_with(&tensor, 0.5, None, isa).expect("applies");
            assert_eq!(chosen[0].0, 1, "{isa:?}");
            assert!(
                (f64::from(chosen[0].1) - exact).abs() < 1e-6,
                "{isa:?}: {}",
                chosen[0].1
            );
        }
    }

    /// What it declines (libtorch's path runs instead), and a row of NaNs, which gets a token
    /// inside the vocabulary rather than a crash.
    #[test]
    fn declines_what_it_does_not_handle() {
        let Some(&isa) = Isa::supported().last() else {
            return;
        };
        let opts = (Kind::Float, Device::Cpu);
        let logits = Tensor::randn([4, 40], opts);
        let draws = [0.5f32; 4];
        assert!(choose_with(&logits.to_kind(Kind::Double), 1.0, Some(&draws), isa).is_none());
        assert!(choose_with(&logits.transpose(0, 1), 1.0, Some(&draws), isa).is_none());
        assert!(choose_with(&logits, 1.0, Some(&draws[..3]), isa).is_none());
        assert!(choose_with(&logits, 0.0, Some(&draws), isa).is_none());
        assert!(choose_with(&logits, f32::NAN, Some(&draws), isa).is_none());
        assert!(choose_with(&Tensor::zeros([4, 0], opts), 1.0, Some(&draws), isa).is_none());
        assert!(choose_with(&logits.view([2, 2, 40]), 1.0, Some(&draws), isa).is_none());
        let nan = Tensor::full([4, 40], f64::NAN, opts);
        for (token, _) in choose_with(&nan, 1.0, Some(&draws), isa).expect("applies") {
            assert!(token < 40);
        }
    }
}
