//! One decode step's attention on an x86-64 CPU in f32: each sequence's new token attends over
//! its own cached positions, read in place from the blocks of the paged cache, and no others.
//!
//! The gathered path (`cache.rs`) copies a batch's blocks into one tensor padded to the
//! longest sequence and masks it for libtorch's `scaled_dot_product_attention`, so every row
//! pays for the longest one; with continuous batching rows of 150 and 660 positions share a
//! step, and at those lengths a step is bound by reading the cache (BENCHMARKS.md, "The first
//! real post-training run"). Here each (sequence, key/value head) reads its keys once for every
//! query head of its group, block by block, then its values once: scores, a softmax, the
//! weighted sum. The products are 8-lane fused multiply-adds compiled for AVX2 and FMA, and
//! again for AVX-512 where the CPU has it. The work is shared over libtorch's OpenMP threads
//! (`omp.rs`) in contiguous runs of equal cached length. Each output is the same sums in
//! another order than SDPA's, so they differ by rounding (tests: within 1e-5).

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::isa::Isa;
use super::omp;

/// Attention of one new token per sequence (`q`, `[B, heads, 1, head_dim]`) over the paged
/// cache (`keys`, `values`: `[blocks, kv_heads, block_size, head_dim]`), sequence `b` over its
/// first `lens[b]` positions, position `p` in block `tables[b][p / block_size]`:
/// `[B, heads, 1, head_dim]`, or `None` where this kernel does not apply (not f32 on an x86-64
/// CPU with AVX2 and FMA, a non-contiguous cache, a head size not a multiple of 8, an operand
/// requiring a gradient, a length past a sequence's blocks or a block outside the cache).
pub(super) fn attend(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    tables: &[&[i64]],
    lens: &[i64],
) -> Option<Tensor> {
    let isa = Isa::widest()?;
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
        && cs[3] % 8 == 0
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

    /// Attention of each item's query heads over its cached positions; inlined into each
    /// instruction set's copy (`kernel`).
    #[inline(always)]
    unsafe fn items(&self, items: Range<usize>) {
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
            // Block `j`'s keys (or values) of head `h`: `[positions, dim]`, the last block
            // cut at the sequence's length.
            let block = |base: *const f32, j: usize| {
                let start = (self.tables[b][j] as usize * kv_heads + h) * block_size * dim;
                let positions = block_size.min(len - j * block_size);
                std::slice::from_raw_parts(base.add(start), positions * dim)
            };
            let blocks = len.div_ceil(block_size);
            let first_head = (b * heads + h * group) * dim;
            let q = std::slice::from_raw_parts(self.q.add(first_head), group * dim);
            let out = std::slice::from_raw_parts_mut(self.out.add(first_head), group * dim);
            scores.clear();
            scores.resize(group * len, 0f32);
            for j in 0..blocks {
                for (i, key) in block(self.keys, j).chunks_exact(dim).enumerate() {
                    let t = j * block_size + i;
                    for (r, query) in q.chunks_exact(dim).enumerate() {
                        scores[r * len + t] = dot(query, key) * scale;
                    }
                }
            }
            for (row, total_of_row) in scores.chunks_exact_mut(len).zip(totals.iter_mut()) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    total += *s;
                }
                *total_of_row = total;
            }
            sums.fill(0.0);
            for j in 0..blocks {
                for (i, value) in block(self.values, j).chunks_exact(dim).enumerate() {
                    let t = j * block_size + i;
                    for (r, sum) in sums.chunks_exact_mut(dim).enumerate() {
                        add_scaled(sum, scores[r * len + t], value);
                    }
                }
            }
            for ((o, sum), total) in out.chunks_exact_mut(dim).zip(sums.chunks_exact(dim)).zip(&totals) {
                let inverse = 1.0 / total;
                for (o, s) in o.iter_mut().zip(sum) {
                    *o = s * inverse;
                }
            }
        }
    }
}

/// `a · b` for lengths that are multiples of 8, in eight interleaved partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    acc.iter().sum()
}

/// `sum += p · v`.
#[inline(always)]
fn add_scaled(sum: &mut [f32], p: f32, v: &[f32]) {
    for (s, v) in sum.iter_mut().zip(v) {
        *s = p.mul_add(*v, *s);
    }
}

/// The CPU's vector units: [`Job::items`] compiled for AVX2 and FMA, and for AVX-512F.
#[cfg(target_arch = "x86_64")]
mod kernel {
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
        job.items(items)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(job: &Job<'_>, items: Range<usize>) {
        job.items(items)
    }
}

/// Off x86-64 no instruction set is supported, so the kernel declines and SDPA runs.
#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use std::ops::Range;

    use super::{Isa, Job};

    pub(super) unsafe fn items(job: &Job<'_>, items: Range<usize>, _: Isa) {
        job.items(items)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// Against SDPA over each sequence's blocks gathered in order and masked past its length,
    /// as the cached pass computes it otherwise: grouped and plain heads, head sizes 8, 64 and
    /// 128, lengths from 1 to a whole table, blocks shared between sequences and out of order,
    /// one thread and two.
    #[test]
    fn attention_matches_sdpa_over_each_sequences_own_blocks() {
        if super::Isa::widest().is_none() {
            return;
        }
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
        for threads in [1, 2] {
            tch::set_num_threads(threads);
            for (heads, kv_heads, dim) in [(9, 3, 64), (4, 4, 8), (8, 2, 128), (3, 1, 16)] {
                let q = Tensor::randn([b, heads, 1, dim], opts);
                let keys = Tensor::randn([blocks, kv_heads, block_size, dim], opts);
                let values = Tensor::randn([blocks, kv_heads, block_size, dim], opts);
                let slices: Vec<&[i64]> = tables.iter().map(Vec::as_slice).collect();
                let ours = super::attend(&q, &keys, &values, &slices, &lens).expect("the kernel applies");
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
                    "heads {heads}/{kv_heads}, dim {dim}, {threads} threads: max error {err}"
                );
            }
        }
        tch::set_num_threads(default_threads);
        let q = Tensor::randn([1, 2, 1, 12], opts);
        let cache = Tensor::randn([2, 1, 4, 12], opts);
        assert!(
            super::attend(&q, &cache, &cache, &[&[0][..]], &[2]).is_none(),
            "head size 12"
        );
        let q = Tensor::randn([1, 2, 1, 8], opts);
        let cache = Tensor::randn([2, 1, 4, 8], opts);
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
