//! `W · B` on an x86-64 CPU for a weight `W` (`[n, k]`, f32, contiguous) and few columns `B`
//! (`[k, m]`, `m` ≤ 64): every projection of a decode step, the LM head included.
//!
//! At this shape MKL's GEMM repacks the weight on every call and, with the weight streamed from
//! memory, reaches about half of what the cores' FMA units do. This kernel reads each weight row
//! straight from the parameter into tiles of 6 rows × 16 columns (12 AVX accumulators, the
//! weight broadcast one element at a time), with `B` packed once per call into `[k, m]` rounded
//! up to 16 columns (a few hundred KB, which stay in L2). While a tile's last columns are
//! computed from rows already in cache, the next tile's rows are prefetched from memory. The
//! rows are shared out between libtorch's own OpenMP threads (`GOMP_parallel`, as a
//! `#pragma omp parallel` in libtorch does), so no second thread pool competes for the cores.
//!
//! It applies on a CPU with AVX2 and FMA when libtorch's lib directory holds `libgomp.so.1` (the
//! PyPI builds; `build.rs` sets `rlvr_gomp`), and otherwise [`product`] declines and the caller
//! uses libtorch's `mm`. Each output is one sum over `k` in order, so it differs from MKL's only
//! by rounding.

use tch::{Device, Kind, Tensor};

/// Most columns `B` may have.
const MAX_COLS: i64 = 64;

/// `w · b` as a new contiguous `[n, m]` tensor, or `None` where the kernel does not apply (not
/// f32 on a CPU with AVX2 and FMA, a weight that is not contiguous, more than 64 columns, or
/// either operand requiring a gradient).
pub(super) fn product(w: &Tensor, b: &Tensor) -> Option<Tensor> {
    let applies = kernel::available()
        && w.dim() == 2
        && b.dim() == 2
        && w.size()[1] == b.size()[0]
        && (1..=MAX_COLS).contains(&b.size()[1])
        && [w, b]
            .iter()
            .all(|t| t.kind() == Kind::Float && t.device() == Device::Cpu && !t.requires_grad())
        && w.is_contiguous();
    applies.then(|| kernel::product(w, b))
}

#[cfg(all(target_arch = "x86_64", rlvr_gomp))]
mod kernel {
    use std::arch::x86_64::*;
    use std::ffi::{c_int, c_uint, c_void};
    use std::sync::OnceLock;

    use tch::{Device, Kind, Tensor};

    /// Weight rows a tile computes.
    const TILE_ROWS: usize = 6;
    /// Columns a tile computes: two AVX registers.
    const TILE_COLS: usize = 16;
    /// Floats per cache line.
    const LINE: usize = 16;

    // libgomp's entry points, the ones GCC emits for `#pragma omp parallel` (libtorch's
    // `at::parallel_for` among them); `build.rs` links the `libgomp.so.1` beside libtorch.
    extern "C" {
        fn GOMP_parallel(f: extern "C" fn(*mut c_void), data: *mut c_void, threads: c_uint, flags: c_uint);
        fn omp_get_thread_num() -> c_int;
        fn omp_get_num_threads() -> c_int;
        fn omp_in_parallel() -> c_int;
    }

    /// Whether this CPU has AVX2 and FMA.
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// One product: raw views of the operands, valid while [`product`] runs.
    struct Job {
        /// `[n, k]`, row-major.
        w: *const f32,
        /// `[k, padded]`, row-major, columns `m..padded` zero.
        b: *const f32,
        /// `[n, m]`, row-major.
        out: *mut f32,
        n: usize,
        k: usize,
        m: usize,
        padded: usize,
    }

    /// See [`super::product`]; the caller checked kinds, devices, shapes and CPU features.
    pub(super) fn product(w: &Tensor, b: &Tensor) -> Tensor {
        let (n, k, m) = (w.size()[0], w.size()[1], b.size()[1]);
        let padded = (m as usize).div_ceil(TILE_COLS) as i64 * TILE_COLS as i64;
        let packed = if padded == m && b.is_contiguous() {
            b.shallow_clone()
        } else {
            let packed = Tensor::zeros([k, padded], (Kind::Float, Device::Cpu));
            packed.narrow(1, 0, m).copy_(b);
            packed
        };
        let out = Tensor::empty([n, m], (Kind::Float, Device::Cpu));
        let job = Job {
            w: w.data_ptr() as *const f32,
            b: packed.data_ptr() as *const f32,
            out: out.data_ptr() as *mut f32,
            n: n as usize,
            k: k as usize,
            m: m as usize,
            padded: padded as usize,
        };
        let threads = tch::get_num_threads().max(1) as usize;
        // SAFETY: `w`, `packed` and `out` are contiguous f32 CPU tensors of the shapes `job`
        // states, alive until this function returns; `GOMP_parallel` returns after every
        // thread finished `share`, each writing a disjoint range of output rows. AVX2 and FMA
        // were checked by `available`.
        unsafe {
            if threads > 1 && job.n >= 2 * TILE_ROWS * threads && omp_in_parallel() == 0 {
                GOMP_parallel(share, &job as *const Job as *mut c_void, threads as c_uint, 0);
            } else {
                job.rows(0, job.n);
            }
        }
        out
    }

    /// One OpenMP thread's share of a [`Job`]: a contiguous range of whole tiles.
    extern "C" fn share(data: *mut c_void) {
        // SAFETY: `data` is the `Job` that `product` passed to `GOMP_parallel`, which outlives
        // the parallel region; the thread's rows do not overlap any other thread's.
        unsafe {
            let job = &*(data as *const Job);
            let (thread, threads) = (
                omp_get_thread_num() as usize,
                omp_get_num_threads().max(1) as usize,
            );
            let per = job.n.div_ceil(TILE_ROWS).div_ceil(threads) * TILE_ROWS;
            let start = (thread * per).min(job.n);
            job.rows(start, (start + per).min(job.n));
        }
    }

    impl Job {
        /// Output rows `start..end`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows(&self, start: usize, end: usize) {
            let mut i = start;
            while i < end {
                let rows = (end - i).min(TILE_ROWS);
                let ahead = (end - i - rows).min(TILE_ROWS);
                let tiles = self.m.div_ceil(TILE_COLS);
                for t in 0..tiles {
                    // Each column tile fetches its share of the next tile's rows.
                    let fetch = (t * ahead / tiles, (t + 1) * ahead / tiles);
                    let j = t * TILE_COLS;
                    match rows {
                        6 => self.tile::<6>(i, j, fetch),
                        5 => self.tile::<5>(i, j, fetch),
                        4 => self.tile::<4>(i, j, fetch),
                        3 => self.tile::<3>(i, j, fetch),
                        2 => self.tile::<2>(i, j, fetch),
                        _ => self.tile::<1>(i, j, fetch),
                    }
                }
                i += rows;
            }
        }

        /// Output rows `i..i + R`, columns `j..j + 16` (those below `m`), prefetching rows
        /// `i + R + fetch.0..i + R + fetch.1`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn tile<const R: usize>(&self, i: usize, j: usize, fetch: (usize, usize)) {
            let k = self.k;
            let w = self.w.add(i * k);
            let next = self.w.add((i + R) * k);
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
                let out = self.out.add((i + r) * self.m + j);
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
}

#[cfg(not(all(target_arch = "x86_64", rlvr_gomp)))]
mod kernel {
    use tch::Tensor;

    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn product(w: &Tensor, b: &Tensor) -> Tensor {
        w.mm(b)
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
                for m in [1, 7, 16, 17, 32, 33, 64] {
                    let w = Tensor::randn([n, k], opts);
                    for b in [Tensor::randn([k, m], opts), Tensor::randn([m, k], opts).tr()] {
                        let ours = super::product(&w, &b).expect("the kernel applies");
                        let theirs = w.mm(&b);
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
        assert!(super::product(&w, &Tensor::randn([8, 65], opts)).is_none());
        assert!(super::product(
            &w.to_kind(Kind::Double),
            &Tensor::randn([8, 4], (Kind::Double, Device::Cpu))
        )
        .is_none());
        assert!(super::product(&w.tr(), &Tensor::randn([8, 4], opts)).is_none());
    }
}
