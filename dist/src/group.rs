//! A process group: rendezvous, backend choice and the collectives.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use tch::{Device, Tensor};

use crate::error::{DistError, Result};
use crate::ffi;

/// Where and as whom to join a group: torchrun's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Address of rank 0, which serves the TCPStore (`MASTER_ADDR`).
    pub host: String,
    /// Port of the TCPStore (`MASTER_PORT`).
    pub port: u16,
    /// This process's rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Ranks in the group (`WORLD_SIZE`).
    pub world_size: usize,
    /// This process's rank on its node, which picks its GPU (`LOCAL_RANK`).
    pub local_rank: usize,
}

impl Rendezvous {
    /// Read `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` and `LOCAL_RANK` (defaulting to
    /// `RANK`), as torchrun, Slurm wrappers and k8s operators set them; under `srun` without a
    /// wrapper, `SLURM_PROCID`, `SLURM_NTASKS` and `SLURM_LOCALID` stand in for the first three
    /// (`MASTER_ADDR` and `MASTER_PORT` still come from the job script).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Rendezvous::from_env`], reading variables through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        fn number<T: std::str::FromStr>(name: &'static str, value: Option<String>) -> Result<T> {
            let value = value.ok_or(DistError::Env {
                name,
                message: "not set".into(),
            })?;
            value.trim().parse().map_err(|_| DistError::Env {
                name,
                message: format!("`{value}` is not a non-negative integer"),
            })
        }
        let either = |name: &str, slurm: &str| get(name).or_else(|| get(slurm));
        let rank: usize = number("RANK", either("RANK", "SLURM_PROCID"))?;
        let world_size: usize = number("WORLD_SIZE", either("WORLD_SIZE", "SLURM_NTASKS"))?;
        let local_rank = match either("LOCAL_RANK", "SLURM_LOCALID") {
            Some(v) => number("LOCAL_RANK", Some(v))?,
            None => rank,
        };
        let host = get("MASTER_ADDR").ok_or(DistError::Env {
            name: "MASTER_ADDR",
            message: "not set".into(),
        })?;
        let port = number("MASTER_PORT", get("MASTER_PORT"))?;
        let rdv = Self {
            host,
            port,
            rank,
            world_size,
            local_rank,
        };
        rdv.check()?;
        Ok(rdv)
    }

    fn check(&self) -> Result<()> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(DistError::Env {
                name: "RANK",
                message: format!("rank {} outside a world of {}", self.rank, self.world_size),
            });
        }
        Ok(())
    }
}

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors, over TCP.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors (only in builds with feature `nccl`).
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices, Gloo otherwise.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Self::Nccl
        } else {
            Self::Gloo
        }
    }

    /// Whether this build can create groups of this backend.
    pub fn available(self) -> bool {
        // SAFETY: a pure query of a compile-time flag.
        self == Self::Gloo || unsafe { ffi::rlvr_c10d_has_nccl() } == 1
    }
}

/// How a reduction combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise maximum.
    Max,
    /// Element-wise minimum.
    Min,
}

impl ReduceOp {
    fn code(self) -> i32 {
        match self {
            Self::Sum => 0,
            Self::Max => 2,
            Self::Min => 3,
        }
    }
}

/// One member of a group of processes. Collectives block until every rank has called the
/// same one; all ranks must call them in the same order.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world_size: usize,
    backend: Backend,
}

// SAFETY: the c10d backend may be used from any thread; `ProcessGroup` methods take `&self`
// and collectives of one group are issued in program order by their caller.
unsafe impl Send for ProcessGroup {}

// SAFETY: the shim holds nothing mutable of its own beside the c10d backend and its store, and
// c10d's Gloo and NCCL backends take collectives from several threads (their work queues are
// locked). Which collective pairs with which across ranks stays the callers' order to keep, as
// on one thread; a group shared by several models of one learner (`Arc<ProcessGroup>`) is used
// from the learner's thread.
unsafe impl Sync for ProcessGroup {}

/// Turn the shim's `(ok, err)` convention into a `Result`.
fn check(ok: i32, err: *mut c_char) -> Result<()> {
    match ok {
        1 => Ok(()),
        _ => Err(DistError::C10d(ffi::take_error(err))),
    }
}

/// `s` as a C string for the shim; a NUL byte in it is an error about `name`.
fn c_text(name: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| DistError::Env {
        name,
        message: "contains a NUL byte".into(),
    })
}

fn ptr(t: &Tensor) -> *mut torch_sys::C_tensor {
    t.as_ptr() as *mut _
}

impl ProcessGroup {
    /// Join the group described by `rdv` (rank 0 starts the TCPStore). `prefix` namespaces
    /// this group's keys in the store; `timeout` bounds the rendezvous and every collective.
    pub fn new(rdv: &Rendezvous, backend: Backend, prefix: &str, timeout: Duration) -> Result<Self> {
        rdv.check()?;
        let (host, prefix) = (c_text("MASTER_ADDR", &rdv.host)?, c_text("prefix", prefix)?);
        let mut err = std::ptr::null_mut();
        // SAFETY: valid C strings for the call's duration; the shim catches every exception.
        let raw = unsafe {
            ffi::rlvr_c10d_new(
                host.as_ptr(),
                i32::from(rdv.port),
                rdv.rank as i32,
                rdv.world_size as i32,
                i32::from(backend == Backend::Nccl),
                prefix.as_ptr(),
                timeout.as_millis().min(i64::MAX as u128) as _,
                &mut err,
            )
        };
        if raw.is_null() {
            check(0, err)?;
        }
        Ok(Self {
            raw,
            rank: rdv.rank,
            world_size: rdv.world_size,
            backend,
        })
    }

    /// A Gloo group of the same ranks, alive beside this one, that rendezvous through this
    /// group's store under `prefix` (every rank calls it): e.g. a CPU side channel beside an
    /// NCCL group, with its own `timeout` for each collective. `host` is the rendezvous host
    /// (`MASTER_ADDR`), which picks Gloo's network device.
    pub fn gloo_sibling(&self, host: &str, prefix: &str, timeout: Duration) -> Result<Self> {
        let (host, prefix) = (c_text("MASTER_ADDR", host)?, c_text("prefix", prefix)?);
        let mut err = std::ptr::null_mut();
        // SAFETY: a live group and valid C strings for the call's duration; the shim catches
        // every exception.
        let raw = unsafe {
            ffi::rlvr_c10d_gloo_sibling(
                self.raw,
                self.rank as i32,
                self.world_size as i32,
                host.as_ptr(),
                prefix.as_ptr(),
                timeout.as_millis().min(i64::MAX as u128) as _,
                &mut err,
            )
        };
        if raw.is_null() {
            check(0, err)?;
        }
        Ok(Self {
            raw,
            rank: self.rank,
            world_size: self.world_size,
            backend: Backend::Gloo,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend carrying the collectives.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn contiguous(op: &'static str, t: &Tensor) -> Result<()> {
        if t.is_contiguous() {
            Ok(())
        } else {
            Err(DistError::Shape {
                op,
                message: "tensor is not contiguous".into(),
            })
        }
    }

    /// Reduce `t` across ranks in place: every rank ends with the same result.
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        Self::contiguous("all_reduce", t)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensor; the shim catches every exception.
        let ok = unsafe { ffi::rlvr_c10d_all_reduce(self.raw, ptr(t), op.code(), &mut err) };
        check(ok, err)
    }

    /// Overwrite `t` on every rank with rank `root`'s `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        Self::contiguous("broadcast", t)?;
        if root >= self.world_size {
            return Err(DistError::Shape {
                op: "broadcast",
                message: format!("root {root} outside a world of {}", self.world_size),
            });
        }
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensor; the shim catches every exception.
        let ok = unsafe { ffi::rlvr_c10d_broadcast(self.raw, ptr(t), root as i32, &mut err) };
        check(ok, err)
    }

    fn fits(&self, op: &'static str, big: &Tensor, small: &Tensor) -> Result<()> {
        Self::contiguous(op, big)?;
        Self::contiguous(op, small)?;
        let want = small.numel() * self.world_size;
        if big.numel() != want || big.kind() != small.kind() || big.device() != small.device() {
            return Err(DistError::Shape {
                op,
                message: format!(
                    "the whole tensor must hold world size ({}) x {} {:?} elements on {:?}; it holds {} {:?} on {:?}",
                    self.world_size,
                    small.numel(),
                    small.kind(),
                    small.device(),
                    big.numel(),
                    big.kind(),
                    big.device()
                ),
            });
        }
        Ok(())
    }

    /// Gather every rank's `input` into `out` (world size × `input`'s elements, rank order).
    pub fn all_gather(&self, out: &mut Tensor, input: &Tensor) -> Result<()> {
        self.fits("all_gather", out, input)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensors; the shim catches every exception.
        let ok = unsafe { ffi::rlvr_c10d_all_gather(self.raw, ptr(out), ptr(input), &mut err) };
        check(ok, err)
    }

    /// Reduce `input` (world size × `out`'s elements) across ranks and leave rank r's slice of
    /// the result in `out`.
    pub fn reduce_scatter(&self, out: &mut Tensor, input: &Tensor, op: ReduceOp) -> Result<()> {
        self.fits("reduce_scatter", input, out)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensors; the shim catches every exception.
        let ok =
            unsafe { ffi::rlvr_c10d_reduce_scatter(self.raw, ptr(out), ptr(input), op.code(), &mut err) };
        check(ok, err)
    }

    /// Wait until every rank reaches this point.
    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group; the shim catches every exception.
        let ok = unsafe { ffi::rlvr_c10d_barrier(self.raw, &mut err) };
        check(ok, err)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by rlvr_c10d_new and freed once.
        unsafe { ffi::rlvr_c10d_free(self.raw) }
    }
}
