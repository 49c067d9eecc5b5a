//! `W · B` on an x86-64 CPU for a weight `W` (`[n, k]`, f32, contiguous; or several stacked by
//! rows, as Q/K/V or gate/up are) and few columns `B` (`[k, m]`, `m` ≤ 64): every projection
//! of a decode step, the LM head included.
//!
//! At this shape MKL's GEMM repacks the weight on every call and, with the weight streamed from
//! memory, reaches about half of what the cores' FMA units do. This kernel reads each weight row
//! straight from the parameter into tiles of 6 rows × two vectors of columns (12 vector
//! accumulators, the weight broadcast one element at a time; a last tile of one vector where
//! the columns left fit one), with `B` packed once per call into `[k, m]` rounded up to the
//! vector width (a few hundred KB, which stay in L2). Each column tile of a row tile also
//! prefetches a share of the next row tile's weights. The work runs on libtorch's own OpenMP
//! threads (`omp.rs`): each packs a share of `B`, they meet at a barrier, and each computes its
//! share of every weight's rows.
//!
//! One or two columns stored contiguously (a decode step of one or two sequences) are instead
//! multiplied as dot products, a vector of weights of a row against one of a column per
//! instruction: a tile would pad one column to a vector's width, eight or sixteen times the
//! arithmetic for the same weight traffic (SmolLM2-135M at batch 1: 42.8 against 33.5
//! tokens/s; at 2, 65.6 against 58.6; even at 4, and slower from 8: BENCHMARKS.md,
//! "Generation").
//!
//! The same code is compiled twice, for 8-lane AVX2 + FMA vectors and for 16-lane AVX-512F
//! ones, and the widest the CPU has runs (chosen at run time; `rlvr bench generate` names it).
//! It applies when libtorch's lib directory holds `libgomp.so.1` (the PyPI builds; `build.rs`
//! sets `rlvr_gomp`); otherwise, or on a CPU without AVX2 and FMA, [`product`] declines and the
//! caller uses libtorch's `mm`. Each output is one sum over `k` (in order, or in a vector's
//! width of interleaved parts added at the end), so it differs from MKL's only by rounding.

use tch::{Device, Kind, Tensor};

use super::isa::Isa;

/// Most columns `B` may have.
const MAX_COLS: i64 = 64;

/// `W · b` for the weights `ws` stacked by rows (`[Σ n, k]`, not materialised) as a new
/// contiguous `[Σ n, m]` tensor, or `None` where the kernel does not apply (not f32 on a CPU
/// with AVX2 and FMA, a weight that is not contiguous, more than 64 columns, or an operand
/// requiring a gradient). It runs with the widest vector unit the CPU has (AVX-512F, else
/// AVX2).
pub(super) fn product(ws: &[&Tensor], b: &Tensor) -> Option<Tensor> {
    product_with(ws, b, *kernel::compiled().last()?)
}

/// [`product`] with the instruction set `isa` (one of [`kernel::compiled`]).
fn product_with(ws: &[&Tensor], b: &Tensor, isa: Isa) -> Option<Tensor> {
    let f32_cpu = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu && !t.requires_grad();
    let applies = b.dim() == 2
        && (1..=MAX_COLS).contains(&b.size()[1])
        && f32_cpu(b)
        && !ws.is_empty()
        && ws
            .iter()
            .all(|w| w.dim() == 2 && w.size()[1] == b.size()[0] && f32_cpu(w) && w.is_contiguous());
    applies.then(|| kernel::product(ws, b, isa))
}

/// Which kernel multiplies an f32 decode step's projections on this CPU: for benchmark
/// reports.
pub(super) fn kernel_name() -> &'static str {
    match kernel::compiled().last() {
        Some(Isa::Avx512) => "rlvr AVX-512F tiles",
        Some(Isa::Avx2) => "rlvr AVX2+FMA tiles",
        None => "libtorch mm",
    }
}

#[cfg(all(target_arch = "x86_64", rlvr_gomp))]
mod kernel {
    use std::arch::x86_64::{__m256, __m512, _mm_prefetch, _MM_HINT_T0};

    use super::Isa;
    use crate::model::isa::Lanes;
    use crate::model::omp;

    use tch::{Device, Kind, Tensor};

    /// Weight rows a tile computes.
    const TILE_ROWS: usize = 6;
    /// Vectors of columns a tile computes at most (one in a last, narrow tile).
    const TILE_VECTORS: usize = 2;
    /// Floats per cache line.
    const LINE: usize = 16;
    /// Columns at or below which columns stored contiguously (`x` transposed, as every
    /// projection of a decode step passes them) are multiplied as dot products instead: a
    /// vector of weights of a row against one of a column per instruction, where a tile would
    /// pad one column to a vector's width and multiply zeros.
    const DOT_COLS: usize = 2;
    /// Weight rows a dot-product tile computes.
    const DOT_ROWS: usize = 4;

    /// The instruction sets this CPU runs the kernel with: here it is compiled for all of
    /// [`Isa`].
    pub(super) fn compiled() -> &'static [Isa] {
        Isa::supported()
    }

    /// Lanes of `isa`'s vectors.
    fn lanes(isa: Isa) -> usize {
        match isa {
            Isa::Avx2 => <__m256 as Lanes>::WIDTH,
            Isa::Avx512 => <__m512 as Lanes>::WIDTH,
        }
    }

    /// One product: raw views of the operands, valid while [`product`] runs.
    struct Job {
        /// Each weight (`[rows, k]`, row-major) with its row count, stacked in this order.
        weights: Vec<(*const f32, usize)>,
        /// `B`: element `(p, j)` at `p · stride.0 + j · stride.1`.
        src: *const f32,
        stride: (usize, usize),
        /// `B` packed as `[k, padded]`, row-major (columns `m..padded` zero): written by
        /// [`Job::pack`] unless `src` already is that.
        b: *mut f32,
        pack: bool,
        /// Whether to multiply as dot products (few columns, each contiguous in `src`).
        dot: bool,
        /// `[Σ rows, m]`, row-major.
        out: *mut f32,
        k: usize,
        m: usize,
        /// `m` rounded up to the vector width.
        padded: usize,
    }

    /// See [`super::product`], with the instruction set `isa` (one of [`compiled`]);
    /// the caller checked kinds, devices, shapes and contiguity.
    pub(super) fn product(ws: &[&Tensor], b: &Tensor, isa: Isa) -> Tensor {
        let (k, m) = (b.size()[0] as usize, b.size()[1] as usize);
        let padded = m.div_ceil(lanes(isa)) * lanes(isa);
        let stride = b.stride();
        let dot = m <= DOT_COLS && (stride[0] == 1 || k == 1);
        let pack = !(dot || padded == m && b.is_contiguous());
        // Written in full by `pack` before any product reads it.
        let mut packed = Vec::<f32>::with_capacity(if pack { k * padded } else { 0 });
        let weights: Vec<(*const f32, usize)> = ws
            .iter()
            .map(|w| (w.data_ptr() as *const f32, w.size()[0] as usize))
            .collect();
        let n: usize = weights.iter().map(|w| w.1).sum();
        let out = Tensor::empty([n as i64, m as i64], (Kind::Float, Device::Cpu));
        let src = b.data_ptr() as *const f32;
        let job = Job {
            weights,
            src,
            stride: (stride[0] as usize, stride[1] as usize),
            b: if pack {
                packed.as_mut_ptr()
            } else {
                src as *mut f32
            },
            pack,
            dot,
            out: out.data_ptr() as *mut f32,
            k,
            m,
            padded,
        };
        let threads = tch::get_num_threads().max(1) as usize;
        let threads = if n >= 2 * TILE_ROWS * threads { threads } else { 1 };
        // SAFETY: the weights and `out` are contiguous f32 CPU tensors of the shapes `job`
        // states and `src` an f32 CPU tensor of `k × m` with the strides given, all alive until
        // this function returns, as is `packed`'s allocation of `k × padded` floats.
        // `omp::parallel` returns after every thread finished: each packs a disjoint range of
        // `B`'s rows, waits at the barrier, then writes a disjoint range of output rows. The
        // CPU runs `isa` (the caller took it from `compiled`).
        omp::parallel(threads, &|thread, threads| unsafe {
            match isa {
                Isa::Avx2 => run_avx2(&job, thread, threads),
                Isa::Avx512 => run_avx512(&job, thread, threads),
            }
        });
        drop(packed);
        out
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(job: &Job, thread: usize, threads: usize) {
        job.run::<__m256>(thread, threads)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_avx512(job: &Job, thread: usize, threads: usize) {
        job.run::<__m512>(thread, threads)
    }

    // SAFETY: the threads of `omp::parallel` read the operands and write disjoint ranges of
    // the packed buffer and the output (see `product`).
    unsafe impl Sync for Job {}

    impl Job {
        /// Thread `thread` of `threads`: its share of `B`'s rows to pack, then (once every
        /// share is packed) its share of each weight's tiles.
        #[inline(always)]
        unsafe fn run<V: Lanes>(&self, thread: usize, threads: usize) {
            if self.pack {
                let per = self.k.div_ceil(threads);
                self.pack((thread * per).min(self.k), ((thread + 1) * per).min(self.k));
                if threads > 1 {
                    omp::barrier();
                }
            }
            let mut first = 0;
            for &(w, n) in &self.weights {
                let per = n.div_ceil(TILE_ROWS).div_ceil(threads) * TILE_ROWS;
                let start = (thread * per).min(n);
                if self.dot {
                    self.dot_rows::<V>(w, first, start, (start + per).min(n));
                } else {
                    self.rows::<V>(w, first, start, (start + per).min(n));
                }
                first += n;
            }
        }

        /// Rows `start..end` of `B` into the packed buffer, padding columns zeroed.
        unsafe fn pack(&self, start: usize, end: usize) {
            for p in start..end {
                let row = self.b.add(p * self.padded);
                for j in 0..self.m {
                    *row.add(j) = *self.src.add(p * self.stride.0 + j * self.stride.1);
                }
                for j in self.m..self.padded {
                    *row.add(j) = 0.0;
                }
            }
        }

        /// Rows `start..end` of the weight `w`, into output rows from `first + start`: tiles
        /// of two vectors of columns, the last of one where one is enough.
        #[inline(always)]
        unsafe fn rows<V: Lanes>(&self, w: *const f32, first: usize, start: usize, end: usize) {
            let mut i = start;
            while i < end {
                let rows = (end - i).min(TILE_ROWS);
                let ahead = (end - i - rows).min(TILE_ROWS);
                let tiles = self.m.div_ceil(TILE_VECTORS * V::WIDTH);
                let tile = Tile {
                    w: w.add(i * self.k),
                    out: self.out.add((first + i) * self.m),
                    rows,
                };
                for t in 0..tiles {
                    // Each column tile fetches its share of the next tile's rows.
                    let fetch = (t * ahead / tiles, (t + 1) * ahead / tiles);
                    let j = t * TILE_VECTORS * V::WIDTH;
                    if self.m - j > V::WIDTH {
                        self.tile_rows::<V, TILE_VECTORS>(&tile, j, fetch);
                    } else {
                        self.tile_rows::<V, 1>(&tile, j, fetch);
                    }
                }
                i += rows;
            }
        }

        /// [`Job::tile`] for the tile's row count.
        #[inline(always)]
        unsafe fn tile_rows<V: Lanes, const C: usize>(&self, tile: &Tile, j: usize, fetch: (usize, usize)) {
            match tile.rows {
                6 => self.tile::<V, 6, C>(tile, j, fetch),
                5 => self.tile::<V, 5, C>(tile, j, fetch),
                4 => self.tile::<V, 4, C>(tile, j, fetch),
                3 => self.tile::<V, 3, C>(tile, j, fetch),
                2 => self.tile::<V, 2, C>(tile, j, fetch),
                _ => self.tile::<V, 1, C>(tile, j, fetch),
            }
        }

        /// The tile's `R` weight rows times `C` vectors of columns of `B` from column `j`
        /// (those below `m`), each weight broadcast once for all of them, prefetching rows
        /// `fetch.0..fetch.1` of the next tile.
        #[inline(always)]
        unsafe fn tile<V: Lanes, const R: usize, const C: usize>(
            &self,
            tile: &Tile,
            j: usize,
            fetch: (usize, usize),
        ) {
            let k = self.k;
            let w = tile.w;
            let next = w.add(R * k);
            let mut acc = [[V::zero(); C]; R];
            for p in 0..k {
                if p % LINE == 0 {
                    for r in fetch.0..fetch.1 {
                        _mm_prefetch::<_MM_HINT_T0>(next.add(r * k + p) as *const i8);
                    }
                }
                let b = self.b.add(p * self.padded + j);
                let mut bs = [V::zero(); C];
                for (c, v) in bs.iter_mut().enumerate() {
                    *v = V::load(b.add(c * V::WIDTH));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = V::splat(*w.add(r * k + p));
                    for (acc, &b) in acc.iter_mut().zip(&bs) {
                        *acc = V::fma(a, b, *acc);
                    }
                }
            }
            let cols = (self.m - j).min(C * V::WIDTH);
            let mut row = [0f32; TILE_VECTORS * 16];
            for (r, acc) in acc.iter().enumerate() {
                let out = tile.out.add(r * self.m + j);
                if cols == C * V::WIDTH {
                    for (c, v) in acc.iter().enumerate() {
                        v.store(out.add(c * V::WIDTH));
                    }
                } else {
                    for (c, v) in acc.iter().enumerate() {
                        v.store(row.as_mut_ptr().add(c * V::WIDTH));
                    }
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out, cols);
                }
            }
        }

        /// Rows `start..end` of the weight `w` as dot products with each column of `B`, into
        /// output rows from `first + start`.
        #[inline(always)]
        unsafe fn dot_rows<V: Lanes>(&self, w: *const f32, first: usize, start: usize, end: usize) {
            let mut i = start;
            while i < end {
                let rows = (end - i).min(DOT_ROWS);
                let (w, out) = (w.add(i * self.k), self.out.add((first + i) * self.m));
                match rows {
                    4 => self.dot_tile::<V, 4>(w, out),
                    3 => self.dot_tile::<V, 3>(w, out),
                    2 => self.dot_tile::<V, 2>(w, out),
                    _ => self.dot_tile::<V, 1>(w, out),
                }
                i += rows;
            }
        }

        /// `R` weight rows from `w` against each column of `B`: a vector of partial sums per
        /// row over `k`, then added across.
        #[inline(always)]
        unsafe fn dot_tile<V: Lanes, const R: usize>(&self, w: *const f32, out: *mut f32) {
            let k = self.k;
            let whole = k / V::WIDTH * V::WIDTH;
            for j in 0..self.m {
                let col = self.src.add(j * self.stride.1);
                let mut acc = [V::zero(); R];
                for p in (0..whole).step_by(V::WIDTH) {
                    let b = V::load(col.add(p));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = V::fma(V::load(w.add(r * k + p)), b, *acc);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let mut sum = acc.sum();
                    for p in whole..k {
                        sum += *w.add(r * k + p) * *col.add(p);
                    }
                    *out.add(r * self.m + j) = sum;
                }
            }
        }
    }

    /// Where one tile's weight rows start and its output rows go, and how many rows it has.
    struct Tile {
        w: *const f32,
        out: *mut f32,
        rows: usize,
    }
}

/// Without x86-64 and libgomp the kernel is not compiled: [`compiled`](kernel::compiled) is
/// empty, so [`product`] declines and the caller uses libtorch's `mm`.
#[cfg(not(all(target_arch = "x86_64", rlvr_gomp)))]
mod kernel {
    use tch::Tensor;

    use super::Isa;

    pub(super) fn compiled() -> &'static [Isa] {
        &[]
    }

    pub(super) fn product(_: &[&Tensor], _: &Tensor, isa: Isa) -> Tensor {
        unreachable!("{isa:?} is not compiled here: `compiled()` is empty")
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// Odd shapes: row tails of every size below a tile, column counts below, at and across
    /// vector widths and tiles, strided and contiguous `B`, one thread and the default, with
    /// every instruction set this CPU runs.
    #[test]
    fn products_match_libtorch_for_odd_shapes() {
        let opts = (Kind::Float, Device::Cpu);
        let default_threads = tch::get_num_threads();
        for (&isa, threads) in super::kernel::compiled().iter().flat_map(|i| [(i, 1), (i, 2)]) {
            tch::set_num_threads(threads);
            for (n, k) in [
                (1, 3),
                (5, 17),
                (6, 64),
                (7, 576),
                (97, 130),
                (1536, 576),
                (576, 1536),
            ] {
                for m in [1, 2, 4, 5, 7, 16, 17, 24, 32, 33, 48, 64] {
                    let w = Tensor::randn([n, k], opts);
                    let v = Tensor::randn([n % 7 + 1, k], opts);
                    for b in [Tensor::randn([k, m], opts), Tensor::randn([m, k], opts).tr()] {
                        let ours = super::product_with(&[&w], &b, isa).expect("the kernel applies");
                        let theirs = w.mm(&b);
                        let stacked =
                            super::product_with(&[&w, &v, &w], &b, isa).expect("the kernel applies");
                        let want = Tensor::cat(&[&theirs, &v.mm(&b), &theirs], 0);
                        let scale = f64::try_from(want.abs().max()).unwrap_or(1.0).max(1.0);
                        let err = f64::try_from((&stacked - &want).abs().max()).unwrap_or(f64::MAX);
                        assert!(
                            err <= 1e-5 * scale,
                            "{isa:?} stacked n={n} k={k} m={m}: max error {err}"
                        );
                        let scale = f64::try_from(theirs.abs().max()).unwrap_or(1.0).max(1.0);
                        let err = f64::try_from((&ours - &theirs).abs().max()).unwrap_or(f64::MAX);
                        assert_eq!(ours.size(), [n, m]);
                        assert!(err <= 1e-5 * scale, "{isa:?} n={n} k={k} m={m}: max error {err}");
                    }
                }
            }
        }
        tch::set_num_threads(default_threads);
        let w = Tensor::randn([8, 8], opts);
        assert!(super::product(&[&w], &Tensor::randn([8, 65], opts)).is_none());
        let double = (Kind::Double, Device::Cpu);
        assert!(super::product(&[&w.to_kind(Kind::Double)], &Tensor::randn([8, 4], double)).is_none());
        assert!(super::product(&[&w, &w.tr()], &Tensor::randn([8, 4], opts)).is_none());
    }
}
