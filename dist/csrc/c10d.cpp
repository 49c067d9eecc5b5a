// A C interface to libtorch's c10d process groups for Rust: TCPStore rendezvous and the Gloo
// (CPU) or, built with RLVR_NCCL, NCCL (CUDA) backend, with collectives that work in place on
// tch tensors (a tch `Tensor` is an `at::Tensor*`). Every function catches C++ exceptions and
// returns them as a malloc'ed message in `*err` (freed with rlvr_c10d_free_error), 0 or NULL
// meaning failure.

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "guarded.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RLVR_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

using rlvr::guarded;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1:
      return c10d::ReduceOp::AVG;
    case 2:
      return c10d::ReduceOp::MAX;
    case 3:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;
  }
}

void finish(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

// libtorch's flight recorder of collectives (on by default, 2,000 entries) adds a process group
// to a shared map outside its lock the first time the group records, so groups used from
// several threads of one process (ranks as threads, a weight-sync group beside a learner's)
// can corrupt it: a SIGSEGV in `FlightRecorder::recordWithResetEnabled`, seen in 2 of 30 runs of
// learner/tests/zero3.rs. rlvr reads no traces, so the recorder is turned off before the first
// group is made, unless the user set its buffer size.
void disable_flight_recorder() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("TORCH_FR_BUFFER_SIZE") == nullptr &&
        std::getenv("TORCH_NCCL_TRACE_BUFFER_SIZE") == nullptr) {
      setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
    }
  });
}

}  // namespace

extern "C" {

void rlvr_c10d_free_error(char* err) { std::free(err); }

// 1 when this build can create NCCL groups.
int rlvr_c10d_has_nccl() {
#ifdef RLVR_NCCL
  return 1;
#else
  return 0;
#endif
}

// A Gloo backend over `store`: on loopback when the rendezvous host is, else on the default
// network device.
c10::intrusive_ptr<c10d::Backend> gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                               int world, const char* host,
                                               std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  std::string h(host);
  bool loopback = h == "127.0.0.1" || h == "localhost" || h == "::1";
  options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname(h)
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}

// Join a group of `world` ranks through the TCPStore at host:port (rank 0 serves it).
// backend: 0 = Gloo, 1 = NCCL. `prefix` namespaces the keys so several groups can share one
// store address over a run. `timeout_ms` bounds rendezvous and each collective.
void* rlvr_c10d_new(const char* host, int port, int rank, int world, int backend,
                    const char* prefix, long timeout_ms, char** err) {
  Group* group = nullptr;
  disable_flight_recorder();
  guarded(err, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 1) {
#ifdef RLVR_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
      throw std::runtime_error("this build has no NCCL (build rlvr-dist with feature `nccl`)");
#endif
    } else {
      pg = gloo_backend(store, rank, world, host, timeout);
    }
    group = new Group{store, pg};
  });
  return group;
}

// A Gloo group of the same ranks as `of`, rendezvousing through its store under `prefix`: a
// second group alive beside the first (a new TCPStore would not get the port).
void* rlvr_c10d_gloo_sibling(void* of, int rank, int world, const char* host, const char* prefix,
                             long timeout_ms, char** err) {
  Group* group = nullptr;
  guarded(err, [&] {
    auto* parent = static_cast<Group*>(of);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), parent->store);
    auto pg = gloo_backend(store, rank, world, host, std::chrono::milliseconds(timeout_ms));
    group = new Group{store, pg};
  });
  return group;
}

// Shut the backend down (NCCL frees its communicators; a no-op for Gloo), then free the group.
void rlvr_c10d_free(void* group) {
  auto* g = static_cast<Group*>(group);
  try {
    g->backend->shutdown();
  } catch (...) {
  }
  delete g;
}

int rlvr_c10d_all_reduce(void* group, at::Tensor* t, int op, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    finish(static_cast<Group*>(group)->backend->allreduce(ts, opts));
  });
}

int rlvr_c10d_broadcast(void* group, at::Tensor* t, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    finish(static_cast<Group*>(group)->backend->broadcast(ts, opts));
  });
}

// `out` holds world × input.numel() elements: rank r's input lands in the r-th slice.
int rlvr_c10d_all_gather(void* group, at::Tensor* out, at::Tensor* input, char** err) {
  return guarded(err, [&] {
    finish(static_cast<Group*>(group)->backend->_allgather_base(*out, *input));
  });
}

// `input` holds world × out.numel() elements: rank r receives the reduction of every rank's
// r-th slice.
int rlvr_c10d_reduce_scatter(void* group, at::Tensor* out, at::Tensor* input, int op,
                             char** err) {
  return guarded(err, [&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    finish(static_cast<Group*>(group)->backend->_reduce_scatter_base(*out, *input, opts));
  });
}

int rlvr_c10d_barrier(void* group, char** err) {
  return guarded(err, [&] { finish(static_cast<Group*>(group)->backend->barrier()); });
}

}  // extern "C"
