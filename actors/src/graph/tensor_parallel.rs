//! A rollout engine split over tensor-parallel ranks of a worker node: the group's first rank
//! (the leader) is the node's one rollout worker and relays every set-up, weight load and job
//! the run sends it to the other ranks (the followers) over the group before it acts on it
//! itself; each follower builds the same engine, loads the same weights and runs the same jobs
//! ([`rlvr_rollout::NativeEngine::tensor_parallel`]: the ranks move in lockstep), and only the
//! leader answers the run. With in-flight updates the leader also tells them, at every point
//! where an engine takes newer weights, whether a new version follows ([`LeaderFeed`]). The
//! relay is broadcasts from the leader: a header (what, a version, a payload's length), the
//! payload, and for a load the weights as the leader got them (tensors on the device or in host
//! memory, or host chunks: [`WeightGroup::send`]), which a follower copies into its engine
//! tensor by tensor as they arrive, keeping only its share ([`WeightGroup::receive_loading`]).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rlvr_rollout::{NativeEngine, RolloutError, WeightFeed, WeightSource};
use tch::{Device, Kind, Tensor};

use super::rollout::generate;
use super::weight_group::{Arrived, Inbox, WeightGroup};
use super::wire::{decode, RolloutRequest, RolloutSetup};

/// What the leader relays.
#[derive(Debug)]
pub enum Relayed {
    /// Build the engine ([`RolloutSetup`], encoded).
    Setup(Vec<u8>),
    /// Load the weights that follow, as this policy version.
    Load(u64),
    /// Run this job ([`RolloutRequest`], encoded).
    Generate(Vec<u8>),
    /// The run is over.
    Stop,
    /// Between two decode steps of a job, with in-flight updates: the weights of this version
    /// follow (load them now), or none.
    Step(Option<u64>),
}

/// The relay over a tensor-parallel engine's group (rank 0 leads).
impl WeightGroup {
    /// On the leader: have every follower load `weights` as policy `version`.
    pub fn relay_load(&self, weights: WeightSource<'_>, version: u64) -> Result<()> {
        self.relay(&Relayed::Load(version))?;
        self.send(weights, version).map(drop)
    }

    /// On the leader: send `what` to every follower (a load: [`WeightGroup::relay_load`]).
    pub fn relay(&self, what: &Relayed) -> Result<()> {
        let (tag, version, payload): (i64, u64, &[u8]) = match what {
            Relayed::Setup(bytes) => (0, 0, bytes),
            Relayed::Load(version) => (1, *version, &[]),
            Relayed::Generate(bytes) => (2, 0, bytes),
            Relayed::Stop => (3, 0, &[]),
            Relayed::Step(None) => (4, 0, &[]),
            Relayed::Step(Some(version)) => (5, *version, &[]),
        };
        let header = [tag, version as i64, payload.len() as i64];
        let mut t = Tensor::from_slice(&header).to_device(self.device);
        self.group.broadcast(&mut t, 0)?;
        if !payload.is_empty() {
            let mut t = Tensor::from_slice(payload).to_device(self.device);
            self.group.broadcast(&mut t, 0)?;
        }
        Ok(())
    }

    /// On a follower: the leader's next message.
    fn next(&self) -> Result<Relayed> {
        let mut header = Tensor::zeros([3], (Kind::Int64, self.device));
        self.group.broadcast(&mut header, 0)?;
        let header = Vec::<i64>::try_from(header.to_device(Device::Cpu))?;
        let (tag, version, len) = (header[0], header[1] as u64, header[2].max(0));
        let mut payload = vec![0u8; len as usize];
        if len > 0 {
            let mut t = Tensor::zeros([len], (Kind::Uint8, self.device));
            self.group.broadcast(&mut t, 0)?;
            t.to_device(Device::Cpu).copy_data_u8(&mut payload, len as usize);
        }
        Ok(match tag {
            0 => Relayed::Setup(payload),
            1 => Relayed::Load(version),
            2 => Relayed::Generate(payload),
            3 => Relayed::Stop,
            4 => Relayed::Step(None),
            5 => Relayed::Step(Some(version)),
            other => bail!("tensor-parallel relay: unknown message {other}"),
        })
    }
}

/// The engine a rollout set-up asks for: whole, or this rank's share over `group`.
pub fn build_engine(
    setup: &RolloutSetup,
    device: Device,
    group: Option<&WeightGroup>,
) -> Result<NativeEngine> {
    let kind = if setup.bf16 { Kind::BFloat16 } else { Kind::Float };
    let mut engine = match group {
        Some(g) => {
            NativeEngine::tensor_parallel(&setup.config, device, kind, setup.max_batch, 0, g.group.clone())?
        }
        None => NativeEngine::new(&setup.config, device, kind, setup.max_batch, 0),
    };
    setup.engine.apply(&mut engine)?;
    Ok(engine)
}

/// A follower's life: do what the leader relays until it says stop.
pub fn follow(group: &WeightGroup) -> Result<()> {
    let mut engine = None;
    loop {
        match group.next()? {
            Relayed::Setup(bytes) => {
                let setup: RolloutSetup = decode(&bytes, "rollout set-up").map_err(anyhow::Error::msg)?;
                let mut built = build_engine(&setup, group.device, Some(group))?;
                if setup.in_flight {
                    built.set_weight_feed(Arc::new(FollowerFeed(group.clone())));
                }
                engine = Some(built);
            }
            Relayed::Load(version) => {
                let e = engine.as_mut().context("weights before set-up")?;
                if !group.receive_loading(|source| Ok(e.load(source, version)?))? {
                    bail!("the leader ended its weights");
                }
            }
            Relayed::Generate(bytes) => {
                let job: RolloutRequest = decode(&bytes, "rollout job").map_err(anyhow::Error::msg)?;
                let e = engine.as_mut().context("a rollout job before set-up")?;
                // The leader answers the run; a follower's completions are the same.
                generate(e, &job.requests, &job.params)?;
            }
            Relayed::Stop => return Ok(()),
            Relayed::Step(_) => bail!("tensor-parallel relay: a decode step's weights outside a job"),
        }
    }
}

/// In-flight updates on a split engine's leader: at each point where an engine takes newer
/// weights (before a job and between its decode steps, the same points on every rank, which
/// move in lockstep), it tells its followers whether a newer version from the inbox follows,
/// sends it, and loads it with them.
pub struct LeaderFeed {
    /// Where the leader's versions arrive.
    pub inbox: Arc<Inbox>,
    /// The engine's tensor-parallel group.
    pub group: WeightGroup,
}

fn relay_error(e: anyhow::Error) -> RolloutError {
    RolloutError::TensorParallel(format!("in-flight weights: {e:#}"))
}

impl WeightFeed for LeaderFeed {
    fn load_newer(
        &self,
        version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> rlvr_rollout::Result<()>,
    ) -> rlvr_rollout::Result<()> {
        let newer = self.inbox.take_newer(version);
        let step = Relayed::Step(newer.as_ref().map(Arrived::version));
        self.group.relay(&step).map_err(relay_error)?;
        match newer {
            Some(arrived) => {
                self.group
                    .send(arrived.source(), arrived.version())
                    .map_err(relay_error)?;
                load(arrived.source(), arrived.version())
            }
            None => Ok(()),
        }
    }
}

/// In-flight updates on a split engine's follower: at the same points, what the leader says.
struct FollowerFeed(WeightGroup);

impl WeightFeed for FollowerFeed {
    fn load_newer(
        &self,
        _version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> rlvr_rollout::Result<()>,
    ) -> rlvr_rollout::Result<()> {
        match self.0.next().map_err(relay_error)? {
            Relayed::Step(None) => Ok(()),
            Relayed::Step(Some(version)) => {
                let loaded = self
                    .0
                    .receive_loading(|source| Ok(load(source, version)?))
                    .map_err(relay_error)?;
                match loaded {
                    true => Ok(()),
                    false => Err(relay_error(anyhow::anyhow!("the leader ended its weights"))),
                }
            }
            other => Err(relay_error(anyhow::anyhow!(
                "expected a decode step's word from the leader, got {other:?}"
            ))),
        }
    }
}
