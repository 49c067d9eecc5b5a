//! CUDA graphs: the kernels a closure queues on one GPU, captured once into libtorch's
//! `at::cuda::CUDAGraph` and replayed with one launch (`csrc/cuda_graph.cpp`). A replay reads
//! and writes the very tensors the capture used, so callers keep their inputs in buffers that
//! stay allocated and write each step's values into them. Only in a build with feature `nccl`
//! (the CUDA build of this crate); elsewhere [`CudaGraph::capture`] is an error.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::Device;

use crate::error::{DistError, Result};

/// A memory pool that several graphs' temporaries share: safe where each replay's outputs are
/// read before another graph of the pool replays (one engine's decode steps).
#[derive(Debug, Clone, Copy)]
pub struct GraphPool {
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    id: (u64, u64),
}

impl GraphPool {
    /// A new pool (libtorch's `graph_pool_handle`); without CUDA support, an error.
    pub fn new() -> Result<Self> {
        imp::pool().map(|id| Self { id })
    }
}

/// A captured CUDA graph.
#[derive(Debug)]
pub struct CudaGraph {
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    raw: *mut std::ffi::c_void,
}

// SAFETY: the graph is replayed and freed through `&self`/`self` only, and libtorch's
// `CUDAGraph::replay` may be called from any thread (it sets its device and launches on that
// thread's current stream).
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Whether this build can capture CUDA graphs.
    pub fn available() -> bool {
        cfg!(feature = "nccl")
    }

    /// Run `step` once on a side stream of `device` (warming up what libtorch sets up lazily),
    /// then again while capturing its kernels into a graph whose temporaries live in `pool`.
    /// Returns the graph and what the captured run returned: its tensors are the ones every
    /// replay writes. `step` must not read tensors back to the host or change shapes between
    /// runs; a panic or a C++ error inside it ends the capture and comes back as an error.
    pub fn capture<T>(device: Device, pool: GraphPool, mut step: impl FnMut() -> T) -> Result<(Self, T)> {
        let Device::Cuda(index) = device else {
            return Err(DistError::CudaGraph(format!(
                "CUDA graphs need a CUDA device, not {device:?}"
            )));
        };
        let graph = imp::enter(index)?;
        let captured = (|| {
            catch_unwind(AssertUnwindSafe(&mut step)).map_err(panic_message)?;
            imp::begin(&graph, pool.id)?;
            let out = catch_unwind(AssertUnwindSafe(&mut step));
            let ended = imp::end(&graph);
            let out = out.map_err(panic_message)?;
            ended.map(|()| out)
        })();
        imp::leave(&graph);
        captured.map(|out| (graph, out))
    }

    /// Launch the captured kernels on the current stream of the graph's device.
    pub fn replay(&self) -> Result<()> {
        imp::replay(self)
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        imp::free(self);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> DistError {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    DistError::CudaGraph(format!("while capturing: {text}"))
}

#[cfg(feature = "nccl")]
mod imp {
    use std::ffi::c_char;

    use super::CudaGraph;
    use crate::error::{DistError, Result};
    use crate::ffi;

    fn check(ok: i32, err: *mut c_char) -> Result<()> {
        match ok {
            1 => Ok(()),
            _ => Err(DistError::CudaGraph(ffi::take_error(err))),
        }
    }

    pub(super) fn pool() -> Result<(u64, u64)> {
        let (mut first, mut second) = (0u64, 0u64);
        // SAFETY: the shim writes both ids.
        unsafe { ffi::rlvr_cuda_graph_pool(&mut first, &mut second) };
        Ok((first, second))
    }

    pub(super) fn enter(device: usize) -> Result<CudaGraph> {
        let mut err = std::ptr::null_mut();
        // SAFETY: returns a graph or NULL with `err` set.
        let raw = unsafe { ffi::rlvr_cuda_graph_enter(device as i32, &mut err) };
        if raw.is_null() {
            check(0, err)?;
        }
        Ok(CudaGraph { raw })
    }

    pub(super) fn begin(graph: &CudaGraph, (first, second): (u64, u64)) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: `graph.raw` is a live graph from `enter`.
        check(
            unsafe { ffi::rlvr_cuda_graph_begin(graph.raw, first, second, &mut err) },
            err,
        )
    }

    pub(super) fn end(graph: &CudaGraph) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `begin`.
        check(unsafe { ffi::rlvr_cuda_graph_end(graph.raw, &mut err) }, err)
    }

    pub(super) fn leave(graph: &CudaGraph) {
        // SAFETY: as in `begin`.
        unsafe { ffi::rlvr_cuda_graph_leave(graph.raw) }
    }

    pub(super) fn replay(graph: &CudaGraph) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `begin`.
        check(unsafe { ffi::rlvr_cuda_graph_replay(graph.raw, &mut err) }, err)
    }

    pub(super) fn free(graph: &mut CudaGraph) {
        // SAFETY: `graph.raw` came from `enter` and is freed once, here.
        unsafe { ffi::rlvr_cuda_graph_free(graph.raw) }
    }
}

#[cfg(not(feature = "nccl"))]
mod imp {
    use super::CudaGraph;
    use crate::error::{DistError, Result};

    fn unsupported<T>() -> Result<T> {
        Err(DistError::CudaGraph(
            "this build has no CUDA graphs (build with cargo feature `nccl` against a CUDA libtorch: scripts/build-nccl.sh)".into(),
        ))
    }

    pub(super) fn pool() -> Result<(u64, u64)> {
        unsupported()
    }

    pub(super) fn enter(_device: usize) -> Result<CudaGraph> {
        unsupported()
    }

    pub(super) fn begin(_graph: &CudaGraph, _pool: (u64, u64)) -> Result<()> {
        unsupported()
    }

    pub(super) fn end(_graph: &CudaGraph) -> Result<()> {
        unsupported()
    }

    pub(super) fn leave(_graph: &CudaGraph) {}

    pub(super) fn replay(_graph: &CudaGraph) -> Result<()> {
        unsupported()
    }

    pub(super) fn free(_graph: &mut CudaGraph) {}
}
