//! libtorch's own OpenMP threads for rlvr's CPU kernels (the decode projections, `skinny.rs`;
//! the decode attention, `decode_attention.rs`). Work runs as a `#pragma omp parallel` in
//! libtorch does (`GOMP_parallel`, the entry point GCC emits, `at::parallel_for` among its
//! users), so no second thread pool competes for the cores. `build.rs` links the
//! `libgomp.so.1` beside libtorch and sets `rlvr_gomp`; without it the work runs on the calling
//! thread.

/// Runs `f(thread, threads)` on up to `threads` of libtorch's OpenMP threads and returns once
/// every call has. On this thread alone (`f(0, 1)`) when `threads` is 1, inside another
/// parallel region, or without libgomp.
pub(super) fn parallel<F: Fn(usize, usize) + Sync>(threads: usize, f: &F) {
    #[cfg(rlvr_gomp)]
    // SAFETY: `gomp::in_parallel` only reads libgomp's state; `gomp::run` is handed `f`, which
    // outlives the region it runs (`GOMP_parallel` returns after every thread finished).
    unsafe {
        if threads > 1 && gomp::omp_in_parallel() == 0 {
            gomp::run(threads, f);
            return;
        }
    }
    let _ = threads;
    f(0, 1);
}

/// Waits for every thread of the region [`parallel`] runs (call it from all of them, or none).
#[cfg(rlvr_gomp)]
pub(super) fn barrier() {
    // SAFETY: a plain OpenMP barrier; outside a region it returns at once.
    unsafe { gomp::GOMP_barrier() }
}

#[cfg(rlvr_gomp)]
mod gomp {
    use std::ffi::{c_int, c_uint, c_void};

    extern "C" {
        fn GOMP_parallel(f: extern "C" fn(*mut c_void), data: *mut c_void, threads: c_uint, flags: c_uint);
        fn omp_get_thread_num() -> c_int;
        fn omp_get_num_threads() -> c_int;
        pub(super) fn omp_in_parallel() -> c_int;
        pub(super) fn GOMP_barrier();
    }

    /// `f` on `threads` OpenMP threads; returns when all are done.
    pub(super) unsafe fn run<F: Fn(usize, usize) + Sync>(threads: usize, f: &F) {
        extern "C" fn each<F: Fn(usize, usize) + Sync>(data: *mut c_void) {
            // SAFETY: `data` is the `&F` that `run` passed, alive until `GOMP_parallel` returns.
            let f = unsafe { &*(data as *const F) };
            // SAFETY: plain queries of the enclosing region.
            let (thread, threads) = unsafe { (omp_get_thread_num(), omp_get_num_threads()) };
            f(thread as usize, threads.max(1) as usize);
        }
        GOMP_parallel(each::<F>, f as *const F as *mut c_void, threads as c_uint, 0);
    }
}
