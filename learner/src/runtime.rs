//! libtorch start-up shared by every binary that links the learner.

use std::sync::Once;

/// Open `libtorch_cuda.so` once, so its CUDA kernels register with the dispatcher.
///
/// rustc links with `--as-needed`, which drops libtorch_cuda because no symbol of it is used
/// directly (tch-rs issue #980); without this, `tch::Cuda::is_available()` is false even on a
/// GPU host. On CPU-only hosts the library is absent and the call does nothing.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is deliberately kept open
        // for the life of the process.
        unsafe {
            libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    });
}

/// The device to train on: the first CUDA device when one is usable, else the CPU.
pub fn default_device() -> tch::Device {
    init();
    tch::Device::cuda_if_available()
}
