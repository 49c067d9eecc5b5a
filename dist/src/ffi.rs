//! The shim's C interface (`csrc/c10d.cpp`). Tensors are passed as `at::Tensor*`, which is what
//! a tch `Tensor` holds.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};

use torch_sys::C_tensor;

extern "C" {
    pub fn rlvr_c10d_free_error(err: *mut c_char);
    pub fn rlvr_c10d_has_nccl() -> c_int;
    pub fn rlvr_c10d_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        backend: c_int,
        prefix: *const c_char,
        timeout_ms: c_long,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    pub fn rlvr_c10d_gloo_sibling(
        of: *mut c_void,
        rank: c_int,
        world: c_int,
        host: *const c_char,
        prefix: *const c_char,
        timeout_ms: c_long,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    pub fn rlvr_c10d_free(group: *mut c_void);
    pub fn rlvr_c10d_all_reduce(
        group: *mut c_void,
        t: *mut C_tensor,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn rlvr_c10d_broadcast(
        group: *mut c_void,
        t: *mut C_tensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn rlvr_c10d_all_gather(
        group: *mut c_void,
        out: *mut C_tensor,
        input: *mut C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn rlvr_c10d_reduce_scatter(
        group: *mut c_void,
        out: *mut C_tensor,
        input: *mut C_tensor,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn rlvr_c10d_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
}

#[cfg(feature = "nccl")]
extern "C" {
    pub fn rlvr_cuda_graph_pool(first: *mut u64, second: *mut u64);
    pub fn rlvr_cuda_graph_enter(device: c_int, err: *mut *mut c_char) -> *mut c_void;
    pub fn rlvr_cuda_graph_begin(graph: *mut c_void, first: u64, second: u64, err: *mut *mut c_char)
        -> c_int;
    pub fn rlvr_cuda_graph_end(graph: *mut c_void, err: *mut *mut c_char) -> c_int;
    pub fn rlvr_cuda_graph_leave(graph: *mut c_void);
    pub fn rlvr_cuda_graph_replay(graph: *mut c_void, err: *mut *mut c_char) -> c_int;
    pub fn rlvr_cuda_graph_free(graph: *mut c_void);
}

/// The message of a failed shim call (`err`, malloc'ed by the shim, freed here), or "unknown
/// error" where it left none.
pub(crate) fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'ed string, freed here once.
    let text = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { rlvr_c10d_free_error(err) };
    text
}
