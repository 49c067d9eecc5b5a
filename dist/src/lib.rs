//! Collectives across processes and nodes on libtorch's own c10d: a [`ProcessGroup`] joins a
//! `TCPStore` rendezvous and runs Gloo (CPU tensors) or NCCL (CUDA tensors, feature `nccl`),
//! with all-reduce, broadcast, all-gather, reduce-scatter and barrier working in place on tch
//! tensors, and [`ProcessGroup::all_gather_rows`] for rows of different lengths. Ranks follow torchrun's conventions ([`Rendezvous::from_env`]: `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), so torchrun, Slurm or k8s
//! launchers work unchanged.
//!
//! [`WeightSync`] broadcasts a model's weights from one rank to the others in buckets (a
//! learner to rollout workers in other processes). [`on_thread_ranks`] runs ranks as threads of
//! one process (the tests' way).
//!
//! [`CudaGraph`] captures the kernels of a step on one GPU and replays them with one launch
//! (libtorch's `at::cuda::CUDAGraph`, in the crate's CUDA build): the rollout engine's decode
//! steps. It lives here beside the process groups because both are C++ shims over the parts of
//! libtorch that tch does not bind.
//!
//! The C++ side is a small shim (`csrc/c10d.cpp`) over `c10d::Backend`; every C++ exception
//! comes back as a [`DistError::C10d`] with libtorch's message (a rendezvous that times out, a
//! peer that died), never a crash.

mod buckets;
mod cuda_graph;
mod error;
mod ffi;
mod group;
mod rows;
mod threads;
mod weights;

pub use buckets::{PackedWeights, WeightPacker};
pub use cuda_graph::{CudaGraph, GraphPool};
pub use error::{DistError, Result};
pub use group::{Backend, ProcessGroup, ReduceOp, Rendezvous};
pub use threads::on_thread_ranks;
pub use weights::{ReceivedTensors, SyncStats, TensorStream, WeightSync};
