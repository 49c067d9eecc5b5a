//! libtorch start-up shared by every binary that links the learner.

use std::sync::{Mutex, Once};

/// Open `libtorch_cuda.so` once, so its CUDA kernels register with the dispatcher; and keep
/// large CPU tensor buffers in the heap.
///
/// rustc links with `--as-needed`, which drops libtorch_cuda because no symbol of it is used
/// directly (tch-rs issue #980); without this, `tch::Cuda::is_available()` is false even on a
/// GPU host. On CPU-only hosts the library is absent and the call does nothing.
///
/// glibc serves allocations above 32 MiB (its dynamic mmap threshold's ceiling) with `mmap`
/// and returns them on free, so every training step's logits and activations are fresh pages
/// the kernel must zero: a tenth of a CPU step in a profile. Raising the mmap and trim
/// thresholds to 1 GiB lets freed buffers be reused from the heap instead.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is deliberately kept open
        // for the life of the process. mallopt only changes glibc's allocation thresholds.
        unsafe {
            libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// Give glibc's free heap pages back to the OS (`malloc_trim`; elsewhere nothing to do).
///
/// With the thresholds [`init`] sets, memory freed in the middle of the heap stays resident
/// until it is reused. Callers trim after work that frees much in a shape later work does not
/// reuse: loading shards (each unit read whole, sliced, released) and, in the actor graph,
/// each learner step and rollout job on tokio's blocking threads, each with its own arena.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's own free lists; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The device to train on: the first CUDA device when one is usable, else the CPU.
pub fn default_device() -> tch::Device {
    init();
    tch::Device::cuda_if_available()
}

/// Run `f` — an initialisation that draws from libtorch's one global generator — with the
/// generator seeded with `seed` and held by this call alone, so that threads building models at
/// once each get the weights their seed gives.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: Mutex<()> = Mutex::new(());
    let _held = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    f()
}
