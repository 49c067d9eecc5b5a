//! One decode step's attention on an x86-64 CPU in f32: each sequence's new token attends over
//! its own cached positions, read in place from the blocks of the paged cache, and no others.
//!
//! The gathered path (`cache.rs`) copies a batch's blocks into one tensor padded to the
//! longest sequence and masks it for libtorch's `scaled_dot_product_attention`, so every row
//! pays for the longest one; with continuous batching rows of 150 and 660 positions share a
//! step, and at those lengths a step is bound by reading the cache (BENCHMARKS.md, "The first
//! real post-training run"). Here each (sequence, key/value head) reads its keys once for every
//! query head of its group, block by block, then its values once: scores, a softmax, the
//! weighted sum. The products are fused multiply-adds 16 lanes wide, four keys at a time, and
//! the softmax's exponentials a polynomial that vectorises, compiled for AVX2 and FMA and
//! again for AVX-512 where the CPU has it. The work is shared over libtorch's OpenMP threads
//! (`omp.rs`) in contiguous runs of equal cached length. Each output is the same sums in
//! another order than SDPA's, so they differ by rounding (tests: within 1e-5).

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::isa::{exp_below_zero, max_of, Lanes};
use super::omp;

/// What head sizes must be a multiple of: the lanes of the widest vectors (AVX-512's 16).
const HEAD_MULTIPLE: i64 = 16;

/// Attention of one new token per sequence (`q`, `[B, heads, 1, head_dim]`) over the paged
/// cache (`keys`, `values`: `[blocks, kv_heads, block_size, head_dim]`), sequence `b` over its
/// first `lens[b]` positions, position `p` in block `tables[b][p / block_size]`:
/// `[B, heads, 1, head_dim]`, or `None` where this kernel does not apply (not f32 on an x86-64
/// CPU with AVX2 and FMA, a non-contiguous cache, a head size not a multiple of 16, an operand
/// requiring a gradient, a length past a sequence's blocks or a block outside the cache). It
/// runs with the widest vector unit the CPU has (AVX-512F, else AVX2).
pub(super) fn attend(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    tables: &[&[i64]],
    lens: &[i64],
) -> Option<Tensor> {
    attend_with(q, keys, values, tables, lens, Isa::widest()?)
}

/// [`attend`] with the instruction set `isa` (one of [`Isa::supported`]).
fn attend_with(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    tables: &[&[i64]],
    lens: &[i64],
    isa: Isa,
) -> Option<Tensor> {
    let f32_cpu = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu && !t.requires_grad();
    let (qs, cs) = (q.size(), keys.size());
    let applies = q.dim() == 4
        && keys.dim() == 4
        && qs[2] == 1
        && qs[0] == lens.len() as i64
        && tables.len() == lens.len()
        && values.size() == cs
        && [q, keys, values].into_iter().all(f32_cpu)
        && keys.is_contiguous()
        && values.is_contiguous()
        && qs[3] == cs[3]
        && cs[3] % HEAD_MULTIPLE == 0
        && cs[1] > 0
        && qs[1] % cs[1] == 0
        && tables.iter().zip(lens).all(|(table, &l)| {
            l >= 1 && l <= table.len() as i64 * cs[2] && table.iter().all(|b| (0..cs[0]).contains(b))
        });
    if !applies {
        return None;
    }
    let q = q.contiguous();
    let out = Tensor::empty(qs.as_slice(), (Kind::Float, Device::Cpu));
    let shape = Shape {
        heads: qs[1] as usize,
        kv_heads: cs[1] as usize,
        block_size: cs[2] as usize,
        dim: cs[3] as usize,
    };
    let job = Job {
        q: q.data_ptr() as *const f32,
        keys: keys.data_ptr() as *const f32,
        values: values.data_ptr() as *const f32,
        out: out.data_ptr() as *mut f32,
        tables,
        lens: lens.iter().map(|&l| l as usize).collect(),
        shape,
        isa,
    };
    job.run();
    Some(out)
}

/// Which kernel attends an f32 decode step on this CPU: for benchmark reports.
pub(super) fn kernel_name() -> &'static str {
    match Isa::widest() {
        Some(Isa::Avx512) => "rlvr AVX-512F, each sequence over its own positions",
        Some(Isa::Avx2) => "rlvr AVX2+FMA, each sequence over its own positions",
        None => "libtorch SDPA over the longest sequence, masked",
    }
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    block_size: usize,
    dim: usize,
}

/// Raw views of one call's operands, valid while [`attend`] runs.
struct Job<'a> {
    /// `[B, heads, 1, dim]`, contiguous.
    q: *const f32,
    /// `[blocks, kv_heads, block_size, dim]`, contiguous.
    keys: *const f32,
    values: *const f32,
    /// `[B, heads, 1, dim]`, written in full.
    out: *mut f32,
    /// Each sequence's blocks.
    tables: &'a [&'a [i64]],
    lens: Vec<usize>,
    shape: Shape,
    /// The widest instruction set this CPU runs.
    isa: Isa,
}

// SAFETY: the threads of `omp::parallel` read the operands and write disjoint heads of `out`
// (see `Job::run`).
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    /// Every (sequence, key/value head), shared over libtorch's threads.
    fn run(&self) {
        let threads = (tch::get_num_threads().max(1) as usize).min(self.lens.len() * self.shape.kv_heads);
        // SAFETY: `attend` checked the CPU's features, the operands' kinds, shapes and
        // contiguity, that every length is within the cache and every slot within its slots;
        // each thread writes the output heads of its own items only.
        omp::parallel(threads, &|thread, threads| unsafe {
            kernel::items(self, self.share(thread, threads), self.isa)
        });
    }

    /// Thread `thread`'s contiguous run of items (item `i`: sequence `i / kv_heads`, its
    /// key/value head `i % kv_heads`), the runs cut where the cached positions they read are
    /// split evenly.
    fn share(&self, thread: usize, threads: usize) -> Range<usize> {
        let kv = self.shape.kv_heads;
        let total: usize = self.lens.iter().sum::<usize>() * kv;
        let owner = |before: usize| before * threads / total.max(1);
        let (mut start, mut end, mut before) = (usize::MAX, 0, 0);
        for i in 0..self.lens.len() * kv {
            if owner(before) == thread {
                start = start.min(i);
                end = i + 1;
            }
            before += self.lens[i / kv];
        }
        start.min(end)..end
    }

    /// Item `i`'s blocks in order: where each starts among the keys (and the values), in
    /// floats, and how many positions it holds (the last is cut at the sequence's length).
    #[cfg(target_arch = "x86_64")]
    fn blocks(&self, i: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let Shape {
            kv_heads,
            block_size,
            dim,
            ..
        } = self.shape;
        let (b, h) = (i / kv_heads, i % kv_heads);
        let len = self.lens[b];
        let table = &self.tables[b][..len.div_ceil(block_size)];
        table.iter().enumerate().map(move |(j, &block)| {
            let start = (block as usize * kv_heads + h) * block_size * dim;
            (start, block_size.min(len - j * block_size))
        })
    }

    /// Attention of each item's query heads over its cached positions, in `V`'s vectors;
    /// inlined into each instruction set's copy (`kernel`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn items<V: Lanes>(&self, items: Range<usize>) {
        let Shape {
            heads,
            kv_heads,
            block_size,
            dim,
        } = self.shape;
        let group = heads / kv_heads;
        let scale = 1.0 / (dim as f32).sqrt();
        let mut scores = Vec::new();
        let mut sums = vec![0f32; group * dim];
        let mut totals = vec![0f32; group];
        for i in items {
            let (b, h) = (i / kv_heads, i % kv_heads);
            let len = self.lens[b];
            let first_head = (b * heads + h * group) * dim;
            let (q, out) = (self.q.add(first_head), self.out.add(first_head));
            // The next item's keys and values into L2 while this one computes: its own blocks
            // are not in any cache, and a block (a few KB) is too short for the hardware's
            // prefetchers to catch up on.
            if i + 1 < self.lens.len() * kv_heads {
                for (start, positions) in self.blocks(i + 1) {
                    prefetch(self.keys.add(start), positions * dim);
                    prefetch(self.values.add(start), positions * dim);
                }
            }
            scores.clear();
            scores.resize(group * len, 0f32);
            for (j, (start, positions)) in self.blocks(i).enumerate() {
                for r in 0..group {
                    let row = scores.as_mut_ptr().add(r * len + j * block_size);
                    score::<V>(q.add(r * dim), self.keys.add(start), positions, dim, scale, row);
                }
            }
            for (row, total) in scores.chunks_exact_mut(len).zip(totals.iter_mut()) {
                *total = exponentiate::<V>(row);
            }
            sums.fill(0.0);
            for (j, (start, positions)) in self.blocks(i).enumerate() {
                let (weights, values) = (scores.as_ptr().add(j * block_size), self.values.add(start));
                add_weighted::<V>(sums.as_mut_ptr(), weights, len, group, values, positions, dim);
            }
            for (r, (sum, total)) in sums.chunks_exact(dim).zip(&totals).enumerate() {
                let inverse = 1.0 / total;
                for (c, s) in sum.iter().enumerate() {
                    *out.add(r * dim + c) = s * inverse;
                }
            }
        }
    }
}

/// Ask for the cache lines of `floats` floats from `p` to be brought into L2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch(p: *const f32, floats: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    for i in (0..floats).step_by(LINE) {
        _mm_prefetch::<_MM_HINT_T1>(p.add(i).cast());
    }
}

/// Floats per cache line.
#[cfg(target_arch = "x86_64")]
const LINE: usize = 16;

/// Keys (or values) taken at once: independent chains of fused multiply-adds, so none waits
/// on the last one's result.
#[cfg(target_arch = "x86_64")]
const KEYS: usize = 4;

/// `out[t] = scale · query · key t` for the `positions` keys of one block (`[positions, dim]`
/// from `keys`): [`KEYS`] keys at a time, then one at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn score<V: Lanes>(
    query: *const f32,
    keys: *const f32,
    positions: usize,
    dim: usize,
    scale: f32,
    out: *mut f32,
) {
    let whole = positions / KEYS * KEYS;
    for t in (0..whole).step_by(KEYS) {
        score_run::<V, KEYS>(query, keys.add(t * dim), dim, scale, out.add(t));
    }
    for t in whole..positions {
        score_run::<V, 1>(query, keys.add(t * dim), dim, scale, out.add(t));
    }
}

/// [`score`] for `N` consecutive keys: a vector of partial sums per key over the head, then
/// added across.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn score_run<V: Lanes, const N: usize>(
    query: *const f32,
    keys: *const f32,
    dim: usize,
    scale: f32,
    out: *mut f32,
) {
    let mut acc = [V::zero(); N];
    for c in (0..dim).step_by(V::WIDTH) {
        let q = V::load(query.add(c));
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = V::fma(q, V::load(keys.add(k * dim + c)), *acc);
        }
    }
    for (k, acc) in acc.iter().enumerate() {
        *out.add(k) = acc.sum() * scale;
    }
}

/// `sums[r] += Σ_t weights[r · stride + t] · value t` for each of the `group` query heads `r`
/// over the `positions` values of one block (`[positions, dim]` from `values`): [`KEYS`]
/// values at a time, then one at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_weighted<V: Lanes>(
    sums: *mut f32,
    weights: *const f32,
    stride: usize,
    group: usize,
    values: *const f32,
    positions: usize,
    dim: usize,
) {
    let whole = positions / KEYS * KEYS;
    for t in (0..whole).step_by(KEYS) {
        add_weighted_run::<V, KEYS>(sums, weights.add(t), stride, group, values.add(t * dim), dim);
    }
    for t in whole..positions {
        add_weighted_run::<V, 1>(sums, weights.add(t), stride, group, values.add(t * dim), dim);
    }
}

/// [`add_weighted`] for `N` consecutive values, read in order (a vector of each value at a
/// time, for every query head of the group) so that the cache's lines stream in.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_weighted_run<V: Lanes, const N: usize>(
    sums: *mut f32,
    weights: *const f32,
    stride: usize,
    group: usize,
    values: *const f32,
    dim: usize,
) {
    for c in (0..dim).step_by(V::WIDTH) {
        let value: [V; N] = std::array::from_fn(|k| V::load(values.add(k * dim + c)));
        for r in 0..group {
            let (sum, weights) = (sums.add(r * dim + c), weights.add(r * stride));
            let mut acc = V::load(sum);
            for (k, &value) in value.iter().enumerate() {
                acc = V::fma(V::splat(*weights.add(k)), value, acc);
            }
            acc.store(sum);
        }
    }
}

/// Replace a row of scores by `exp(score - max)`, returning their sum: the softmax before its
/// division. The last part-vector goes through a vector padded with `-∞` (which the
/// exponential maps to nothing the sum counts).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exponentiate<V: Lanes>(row: &mut [f32]) -> f32 {
    let max = max_of::<V>(row);
    let (len, p) = (row.len(), row.as_mut_ptr());
    let whole = len / V::WIDTH * V::WIDTH;
    let (max, mut totals) = (V::splat(-max), V::zero());
    for i in (0..whole).step_by(V::WIDTH) {
        let e = exp_below_zero(V::add(V::load(p.add(i)), max));
        e.store(p.add(i));
        totals = V::add(totals, e);
    }
    let mut total = totals.sum();
    let tail = len - whole;
    if tail > 0 {
        let mut lanes = [f32::NEG_INFINITY; 16];
        lanes[..tail].copy_from_slice(&row[whole..]);
        exp_below_zero(V::add(V::load(lanes.as_ptr()), max)).store(lanes.as_mut_ptr());
        row[whole..].copy_from_slice(&lanes[..tail]);
        total += lanes[..tail].iter().sum::<f32>();
    }
    total
}

/// The CPU's vector units: [`Job::items`] compiled for AVX2 and FMA, and for AVX-512F.
#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::{__m256, __m512};
    use std::ops::Range;

    use super::{Isa, Job};

    /// `job`'s `items` with `isa`, which this CPU runs (one of [`Isa::supported`]).
    pub(super) unsafe fn items(job: &Job<'_>, items: Range<usize>, isa: Isa) {
        match isa {
            Isa::Avx512 => avx512(job, items),
            Isa::Avx2 => avx2(job, items),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(job: &Job<'_>, items: Range<usize>) {
        job.items::<__m256>(items)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(job: &Job<'_>, items: Range<usize>) {
        job.items::<__m512>(items)
    }
}

/// Off x86-64 no instruction set is supported ([`Isa::widest`] is `None`), so [`attend`]
/// declines before a job exists and SDPA runs.
#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use std::ops::Range;

    use super::{Isa, Job};

    pub(super) unsafe fn items(_: &Job<'_>, _: Range<usize>, _: Isa) {
        unreachable!("no instruction set is supported off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// The softmax's vectorised exponential against `f64::exp` from 0 down to -87 and below
    /// (where it holds at `e^-87`), every thousandth, with each instruction set this CPU runs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exponentials_are_within_a_few_ulp() {
        use std::arch::x86_64::{__m256, __m512};

        use super::Isa;

        let xs: Vec<f32> = (0..=90_000).map(|i| -(i as f32) / 1000.0).collect();
        for &isa in Isa::supported() {
            let mut row = xs.clone();
            // SAFETY: the CPU runs `isa`; the scores are any finite floats.
            let total = unsafe {
                match isa {
                    Isa::Avx2 => super::exponentiate::<__m256>(&mut row),
                    Isa::Avx512 => super::exponentiate::<__m512>(&mut row),
                }
            };
            let worst = xs
                .iter()
                .zip(&row)
                .map(|(&x, &e)| {
                    let exact = f64::from(x.max(-87.0)).exp();
                    (f64::from(e) - exact).abs() / exact
                })
                .fold(0.0, f64::max);
            assert!(worst < 4e-7, "{isa:?}: relative error {worst:e}");
            let sum: f64 = xs.iter().map(|&x| f64::from(x.max(-87.0)).exp()).sum();
            assert!(
                (f64::from(total) - sum).abs() / sum < 1e-4,
                "{isa:?}: total {total}, exactly {sum}"
            );
        }
    }

    /// Against SDPA over each sequence's blocks gathered in order and masked past its length,
    /// as the cached pass computes it otherwise: grouped and plain heads, head sizes 16, 32, 64
    /// and 128, lengths from 1 to a whole table, blocks shared between sequences and out of order,
    /// one thread and two, with each instruction set this CPU runs.
    #[test]
    fn attention_matches_sdpa_over_each_sequences_own_blocks() {
        let opts = (Kind::Float, Device::Cpu);
        let default_threads = tch::get_num_threads();
        let (blocks, block_size) = (12, 8);
        let tables: Vec<Vec<i64>> = vec![
            vec![3],
            vec![0, 5, 7, 1, 2],
            vec![11, 5, 4],
            vec![3, 6],
            vec![9, 8, 10, 3],
        ];
        let lens = [1i64, 40, 17, 3, 29];
        let b = lens.len() as i64;
        let span = 40;
        for (&isa, threads) in super::Isa::supported().iter().flat_map(|i| [(i, 1), (i, 2)]) {
            tch::set_num_threads(threads);
            for (heads, kv_heads, dim) in [(9, 3, 64), (4, 4, 16), (8, 2, 128), (3, 1, 32)] {
                let q = Tensor::randn([b, heads, 1, dim], opts);
                let keys = Tensor::randn([blocks, kv_heads, block_size, dim], opts);
                let values = Tensor::randn([blocks, kv_heads, block_size, dim], opts);
                let slices: Vec<&[i64]> = tables.iter().map(Vec::as_slice).collect();
                let ours =
                    super::attend_with(&q, &keys, &values, &slices, &lens, isa).expect("the kernel applies");
                let gathered = |c: &Tensor| {
                    let rows: Vec<Tensor> = tables
                        .iter()
                        .map(|t| {
                            let mut t = t.clone();
                            t.resize(5, 0);
                            c.index_select(0, &Tensor::from_slice(&t))
                                .permute([1, 0, 2, 3])
                                .reshape([kv_heads, 5 * block_size, dim])
                                .narrow(1, 0, span)
                        })
                        .collect();
                    Tensor::stack(&rows, 0)
                };
                let mask = Tensor::arange(span, (Kind::Int64, Device::Cpu))
                    .view([1, 1, 1, span])
                    .lt_tensor(&Tensor::from_slice(&lens).view([b, 1, 1, 1]));
                let theirs = Tensor::scaled_dot_product_attention(
                    &q,
                    &gathered(&keys),
                    &gathered(&values),
                    Some(&mask),
                    0.0,
                    false,
                    None,
                    true,
                );
                let err = f64::try_from((&ours - &theirs).abs().max()).unwrap_or(f64::MAX);
                assert!(
                    err <= 1e-5,
                    "{isa:?}, heads {heads}/{kv_heads}, dim {dim}, {threads} threads: max error {err}"
                );
            }
        }
        tch::set_num_threads(default_threads);
        let q = Tensor::randn([1, 2, 1, 24], opts);
        let cache = Tensor::randn([2, 1, 4, 24], opts);
        assert!(
            super::attend(&q, &cache, &cache, &[&[0][..]], &[2]).is_none(),
            "head size 24"
        );
        let q = Tensor::randn([1, 2, 1, 16], opts);
        let cache = Tensor::randn([2, 1, 4, 16], opts);
        assert!(
            super::attend(&q, &cache, &cache, &[&[0][..]], &[5]).is_none(),
            "past the sequence's blocks"
        );
        assert!(
            super::attend(&q, &cache, &cache, &[&[2][..]], &[2]).is_none(),
            "a block past the cache"
        );
        let double = cache.to_kind(Kind::Double);
        assert!(super::attend(&q.to_kind(Kind::Double), &double, &double, &[&[0][..]], &[2]).is_none());
    }
}
