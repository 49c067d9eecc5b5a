//! `W · B` on an x86-64 CPU for a weight `W` (`[n, k]`, f32, contiguous; or several stacked by
//! rows, as Q/K/V or gate/up are) and few columns `B` (`[k, m]`, `m` ≤ 64): every projection
//! of a decode step, the LM head included.
//!
//! At this shape MKL's GEMM repacks the weight on every call and, with the weight streamed from
//! memory, reaches about half of what the cores' FMA units do. This kernel reads each weight row
//! straight from the parameter into tiles of 6 rows × 16 columns (12 AVX accumulators, the
//! weight broadcast one element at a time), with `B` packed once per call into `[k, m]` rounded
//! up to 16 columns (a few hundred KB, which stay in L2). Each column tile of a row tile also
//! prefetches a share of the next row tile's weights. The work runs on libtorch's own OpenMP
//! threads (`omp.rs`): each packs a share of `B`, they meet at a barrier, and each computes its
//! share of every weight's rows.
//!
//! One or two columns stored contiguously (a decode step of one or two sequences) are instead
//! multiplied as dot products, eight weights of a row against eight of a column per
//! instruction: a 16-column tile would pad one column to sixteen, sixteen times the arithmetic
//! for the same weight traffic (SmolLM2-135M at batch 1: 42.8 against 33.5 tokens/s; at 2,
//! 65.6 against 58.6; even at 4, and slower from 8: BENCHMARKS.md, "Generation").
//!
//! It applies on a CPU with AVX2 and FMA when libtorch's lib directory holds `libgomp.so.1` (the
//! PyPI builds; `build.rs` sets `rlvr_gomp`), and otherwise [`product`] declines and the caller
//! uses libtorch's `mm`. Each output is one sum over `k` (in order, or in eight interleaved
//! parts added at the end), so it differs from MKL's only by rounding.

use tch::{Device, Kind, Tensor};

/// Most columns `B` may have.
const MAX_COLS: i64 = 64;

/// `W · b` for the weights `ws` stacked by rows (`[Σ n, k]`, not materialised) as a new
/// contiguous `[Σ n, m]` tensor, or `None` where the kernel does not apply (not f32 on a CPU
/// with AVX2 and FMA, a weight that is not contiguous, more than 64 columns, or an operand
/// requiring a gradient).
pub(super) fn product(ws: &[&Tensor], b: &Tensor) -> Option<Tensor> {
    let f32_cpu = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu && !t.requires_grad();
    let applies = kernel::available()
        && b.dim() == 2
        && (1..=MAX_COLS).contains(&b.size()[1])
        && f32_cpu(b)
        && !ws.is_empty()
        && ws
            .iter()
            .all(|w| w.dim() == 2 && w.size()[1] == b.size()[0] && f32_cpu(w) && w.is_contiguous());
    applies.then(|| kernel::product(ws, b))
}

/// Which kernel multiplies an f32 decode step's projections on this CPU, and what wider vector
/// unit it leaves unused: for benchmark reports.
pub(super) fn kernel_name() -> String {
    let ours = match kernel::available() {
        true => "rlvr AVX2+FMA tiles",
        false => "libtorch mm",
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return format!("{ours} (the CPU has AVX-512F, which this kernel does not use)");
    }
    ours.to_string()
}

#[cfg(all(target_arch = "x86_64", rlvr_gomp))]
mod kernel {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use crate::model::omp;

    use tch::{Device, Kind, Tensor};

    /// Weight rows a tile computes.
    const TILE_ROWS: usize = 6;
    /// Columns a tile computes: two AVX registers.
    const TILE_COLS: usize = 16;
    /// Floats per cache line.
    const LINE: usize = 16;
    /// Columns at or below which columns stored contiguously (`x` transposed, as every
    /// projection of a decode step passes them) are multiplied as dot products instead: eight
    /// weights of a row against eight of a column per instruction, where a 16-column tile would
    /// pad one column to sixteen and multiply zeros.
    const DOT_COLS: usize = 2;
    /// Weight rows a dot-product tile computes.
    const DOT_ROWS: usize = 4;

    /// Whether this CPU has AVX2 and FMA.
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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
        padded: usize,
    }

    /// See [`super::product`]; the caller checked kinds, devices, shapes, contiguity and CPU
    /// features.
    pub(super) fn product(ws: &[&Tensor], b: &Tensor) -> Tensor {
        let (k, m) = (b.size()[0] as usize, b.size()[1] as usize);
        let padded = m.div_ceil(TILE_COLS) * TILE_COLS;
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
        // `B`'s rows, waits at the barrier, then writes a disjoint range of output rows. AVX2
        // and FMA were checked by `available`.
        omp::parallel(threads, &|thread, threads| unsafe { job.run(thread, threads) });
        drop(packed);
        out
    }

    // SAFETY: the threads of `omp::parallel` read the operands and write disjoint ranges of
    // the packed buffer and the output (see `product`).
    unsafe impl Sync for Job {}

    impl Job {
        /// Thread `thread` of `threads`: its share of `B`'s rows to pack, then (once every
        /// share is packed) its share of each weight's tiles.
        unsafe fn run(&self, thread: usize, threads: usize) {
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
                    self.dot_rows(w, first, start, (start + per).min(n));
                } else {
                    self.rows(w, first, start, (start + per).min(n));
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

        /// Rows `start..end` of the weight `w`, into output rows from `first + start`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows(&self, w: *const f32, first: usize, start: usize, end: usize) {
            let mut i = start;
            while i < end {
                let rows = (end - i).min(TILE_ROWS);
                let ahead = (end - i - rows).min(TILE_ROWS);
                let tiles = self.m.div_ceil(TILE_COLS);
                let tile = Tile {
                    w: w.add(i * self.k),
                    out: self.out.add((first + i) * self.m),
                };
                for t in 0..tiles {
                    // Each column tile fetches its share of the next tile's rows.
                    let fetch = (t * ahead / tiles, (t + 1) * ahead / tiles);
                    let j = t * TILE_COLS;
                    match rows {
                        6 => self.tile::<6>(&tile, j, fetch),
                        5 => self.tile::<5>(&tile, j, fetch),
                        4 => self.tile::<4>(&tile, j, fetch),
                        3 => self.tile::<3>(&tile, j, fetch),
                        2 => self.tile::<2>(&tile, j, fetch),
                        _ => self.tile::<1>(&tile, j, fetch),
                    }
                }
                i += rows;
            }
        }

        /// Rows `start..end` of the weight `w` as dot products with each column of `B`, into
        /// output rows from `first + start`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dot_rows(&self, w: *const f32, first: usize, start: usize, end: usize) {
            let mut i = start;
            while i < end {
                let rows = (end - i).min(DOT_ROWS);
                let (w, out) = (w.add(i * self.k), self.out.add((first + i) * self.m));
                match rows {
                    4 => self.dot_tile::<4>(w, out),
                    3 => self.dot_tile::<3>(w, out),
                    2 => self.dot_tile::<2>(w, out),
                    _ => self.dot_tile::<1>(w, out),
                }
                i += rows;
            }
        }

        /// `R` weight rows from `w` against each column of `B`: eight lanes of partial sums
        /// per row over `k`, then added across.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dot_tile<const R: usize>(&self, w: *const f32, out: *mut f32) {
            let k = self.k;
            let whole = k / 8 * 8;
            for j in 0..self.m {
                let col = self.src.add(j * self.stride.1);
                let mut acc = [_mm256_setzero_ps(); R];
                for p in (0..whole).step_by(8) {
                    let b = _mm256_loadu_ps(col.add(p));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(r * k + p)), b, *acc);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
                    let mut sum: f32 = lanes.iter().sum();
                    for p in whole..k {
                        sum += *w.add(r * k + p) * *col.add(p);
                    }
                    *out.add(r * self.m + j) = sum;
                }
            }
        }

        /// The tile's `R` weight rows times columns `j..j + 16` of `B` (those below `m`),
        /// prefetching rows `fetch.0..fetch.1` of the next tile.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn tile<const R: usize>(&self, tile: &Tile, j: usize, fetch: (usize, usize)) {
            let k = self.k;
            let w = tile.w;
            let next = w.add(R * k);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..k {
                if p % LINE == 0 {
                    for r in fetch.0..fetch.1 {
                        _mm_prefetch::<_MM_HINT_T0>(next.add(r * k + p) as *const i8);
                    }
                }
                let b = self.b.add(p * self.padded + j);
                let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*w.add(r * k + p));
                    acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                }
            }
            let cols = (self.m - j).min(TILE_COLS);
            for (r, acc) in acc.iter().enumerate() {
                let out = tile.out.add(r * self.m + j);
                if cols == TILE_COLS {
                    _mm256_storeu_ps(out, acc[0]);
                    _mm256_storeu_ps(out.add(8), acc[1]);
                } else {
                    let mut row = [0f32; TILE_COLS];
                    _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out, cols);
                }
            }
        }
    }

    /// Where one tile's weight rows start and its output rows go.
    struct Tile {
        w: *const f32,
        out: *mut f32,
    }
}

#[cfg(not(all(target_arch = "x86_64", rlvr_gomp)))]
mod kernel {
    use tch::Tensor;

    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn product(ws: &[&Tensor], b: &Tensor) -> Tensor {
        Tensor::cat(&ws.iter().map(|w| w.mm(b)).collect::<Vec<_>>(), 0)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// Odd shapes: row tails of every size below a tile, column counts below, at and across
    /// the 16-column tiles, strided and contiguous `B`, one thread and the default.
    #[test]
    fn products_match_libtorch_for_odd_shapes() {
        if !super::kernel::available() {
            return;
        }
        let opts = (Kind::Float, Device::Cpu);
        let default_threads = tch::get_num_threads();
        for threads in [1, 2] {
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
                for m in [1, 2, 4, 5, 7, 16, 17, 32, 33, 64] {
                    let w = Tensor::randn([n, k], opts);
                    let v = Tensor::randn([n % 7 + 1, k], opts);
                    for b in [Tensor::randn([k, m], opts), Tensor::randn([m, k], opts).tr()] {
                        let ours = super::product(&[&w], &b).expect("the kernel applies");
                        let theirs = w.mm(&b);
                        let stacked = super::product(&[&w, &v, &w], &b).expect("the kernel applies");
                        let want = Tensor::cat(&[&theirs, &v.mm(&b), &theirs], 0);
                        let scale = f64::try_from(want.abs().max()).unwrap_or(1.0).max(1.0);
                        let err = f64::try_from((&stacked - &want).abs().max()).unwrap_or(f64::MAX);
                        assert!(err <= 1e-5 * scale, "stacked n={n} k={k} m={m}: max error {err}");
                        let scale = f64::try_from(theirs.abs().max()).unwrap_or(1.0).max(1.0);
                        let err = f64::try_from((&ours - &theirs).abs().max()).unwrap_or(f64::MAX);
                        assert_eq!(ours.size(), [n, m]);
                        assert!(err <= 1e-5 * scale, "n={n} k={k} m={m}: max error {err}");
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
