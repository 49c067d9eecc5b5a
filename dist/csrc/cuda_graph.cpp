// A C interface to libtorch's CUDA graphs for Rust (built with RLVR_NCCL, the crate's CUDA
// build): capture the kernels that tch calls queue on one device into an at::cuda::CUDAGraph,
// then replay them with one launch. Capture runs on a side stream made current for the
// calling thread (libtorch's ops launch on the current stream); `enter` switches to it,
// `leave` switches back. Errors follow guarded.h.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include "guarded.h"

namespace {

struct Capture {
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  c10::cuda::CUDAStream previous;
  c10::DeviceIndex previous_device;
};

}  // namespace

extern "C" {

// A new memory pool id for graphs that share their temporaries (`first`, `second`).
void rlvr_cuda_graph_pool(unsigned long long* first, unsigned long long* second) {
  auto pool = at::cuda::graph_pool_handle();
  *first = pool.first;
  *second = pool.second;
}

// A graph for `device`, with a side stream made the current stream of this thread once every
// queued kernel of the device has finished; NULL on failure.
void* rlvr_cuda_graph_enter(int device, char** err) {
  Capture* capture = nullptr;
  rlvr::guarded(err, [&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    auto previous_device = c10::cuda::current_device();
    c10::cuda::set_device(index);
    c10::cuda::device_synchronize();
    auto side = c10::cuda::getStreamFromPool(false, index);
    capture = new Capture{at::cuda::CUDAGraph(), side, c10::cuda::getCurrentCUDAStream(index), previous_device};
    c10::cuda::setCurrentCUDAStream(side);
  });
  return capture;
}

// Start capturing the side stream's kernels into the graph, its temporaries in pool
// (`first`, `second`). Capture is thread-local: other threads keep using the device.
int rlvr_cuda_graph_begin(void* capture, unsigned long long first, unsigned long long second, char** err) {
  auto* c = static_cast<Capture*>(capture);
  return rlvr::guarded(err, [&] {
    c10::cuda::device_synchronize();
    c->graph.capture_begin({first, second}, cudaStreamCaptureModeThreadLocal);
  });
}

// End the capture and instantiate the graph.
int rlvr_cuda_graph_end(void* capture, char** err) {
  auto* c = static_cast<Capture*>(capture);
  return rlvr::guarded(err, [&] { c->graph.capture_end(); });
}

// Make the stream and device current before `enter` current again.
void rlvr_cuda_graph_leave(void* capture) {
  auto* c = static_cast<Capture*>(capture);
  c10::cuda::setCurrentCUDAStream(c->previous);
  c10::cuda::set_device(c->previous_device);
}

// Launch the captured kernels on the device's current stream.
int rlvr_cuda_graph_replay(void* capture, char** err) {
  auto* c = static_cast<Capture*>(capture);
  return rlvr::guarded(err, [&] { c->graph.replay(); });
}

void rlvr_cuda_graph_free(void* capture) { delete static_cast<Capture*>(capture); }

}  // extern "C"
