//! Weights over a c10d group (NCCL between GPUs, Gloo on the CPU), from the group's rank 0 to
//! the others: how a run's rank 0 sends every policy version to the leaders of its launched
//! engine ranks (the run's *weight group*, as open-instruct and OpenRLHF broadcast to their
//! vLLM engines), and how a tensor-parallel engine's leader relays what it loads to its other
//! ranks. A learner's snapshot on its device goes as tensors that never touch host memory; a
//! ZeRO-3 learner's weights go as tensors straight from its device while its ranks gather
//! them unit by unit ([`WeightGroup::send_learner`]), and arrive in the engines' host memory
//! (a large model's whole version does not sit beside the engine on its GPU); a version in
//! host memory (a run's starting weights) goes as chunks staged bucket by bucket
//! ([`rlvr_dist::WeightSync`]).
//!
//! An engine rank's leader receives on a thread of its own ([`Inbox`]), so rank 0's broadcast
//! never waits for the engine to finish a job: the newest version waits in the inbox until the
//! run tells the engine to load it, between jobs, or, with in-flight updates, until the engine
//! takes it between decode steps.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rlvr_core::WeightChunk;
use rlvr_dist::{PackedWeights, ProcessGroup, ReceivedTensors, SyncStats, WeightSync};
use rlvr_learner::Learner;
use rlvr_rollout::{WeightFeed, WeightSource};
use tch::{Device, Tensor};

/// Bytes per broadcast.
pub(super) const BUCKET_BYTES: usize = 64 << 20;

/// What the header before each sync says follows: the end, host chunks, tensors that stay on
/// the receivers' devices, or tensors the receivers keep in host memory.
const END: i64 = 0;
const CHUNKS: i64 = 1;
const TENSORS: i64 = 2;
const HOST_TENSORS: i64 = 3;

/// A c10d group whose rank 0 sends weights to the others, and the device its collectives stage
/// on (NCCL needs its tensors on the rank's GPU).
#[derive(Clone)]
pub struct WeightGroup {
    /// The group: rank 0 sends.
    pub group: Arc<ProcessGroup>,
    /// This rank's device.
    pub device: Device,
}

/// Weights as they arrived over a group.
#[derive(Debug)]
pub enum Arrived {
    /// Host bytes, and their policy version.
    Chunks(Vec<WeightChunk>, u64),
    /// Tensors on this rank's device (views into the buckets they arrived in).
    Tensors(ReceivedTensors),
    /// Tensors in host memory (each bucket moved there as it arrived).
    HostTensors(ReceivedTensors),
}

impl Arrived {
    /// The weights' policy version.
    pub fn version(&self) -> u64 {
        match self {
            Arrived::Chunks(_, version) => *version,
            Arrived::Tensors(received) | Arrived::HostTensors(received) => received.version,
        }
    }

    /// How they came, for the log.
    fn route(&self) -> &'static str {
        match self {
            Arrived::Chunks(..) => "staged through host memory",
            Arrived::Tensors(_) => "device to device",
            Arrived::HostTensors(_) => "into host memory",
        }
    }

    /// The weights as an engine loads them.
    pub fn source(&self) -> WeightSource<'_> {
        match self {
            Arrived::Chunks(chunks, _) => WeightSource::Chunks(chunks),
            Arrived::Tensors(received) | Arrived::HostTensors(received) => {
                WeightSource::Tensors(&received.tensors)
            }
        }
    }
}

impl WeightGroup {
    fn sync(&self) -> WeightSync<'_> {
        WeightSync::new(&self.group, 0, BUCKET_BYTES, self.device)
    }

    /// Broadcast from rank 0 what follows and its version; every rank returns them.
    fn header(&self, what: i64, version: u64) -> Result<(i64, u64)> {
        let mut t = Tensor::from_slice(&[what, version as i64]).to_device(self.device);
        self.group.broadcast(&mut t, 0)?;
        let header = Vec::<i64>::try_from(t.to_device(Device::Cpu))?;
        Ok((header[0], header[1] as u64))
    }

    /// On rank 0: send `source` as policy `version` to every other rank. Tensors arrive where
    /// they are here: on the receivers' devices, or in their host memory when these are in
    /// host memory.
    pub fn send(&self, source: WeightSource<'_>, version: u64) -> Result<SyncStats> {
        Ok(match source {
            WeightSource::Chunks(chunks) => {
                self.header(CHUNKS, version)?;
                self.sync().send(chunks)?
            }
            WeightSource::Tensors(tensors) => {
                let on_host = self.device != Device::Cpu
                    && tensors.first().is_some_and(|(_, t)| t.device() == Device::Cpu);
                self.header(if on_host { HOST_TENSORS } else { TENSORS }, version)?;
                self.sync().send_tensors(tensors, version)?
            }
        })
    }

    /// On rank 0: send a version packed for this group ([`super::broadcast::Weights::snapshot`]),
    /// its buckets as they lie, or, packed on another device than this group's, its tensors
    /// as [`WeightGroup::send`] sends them.
    pub fn send_packed(&self, packed: &PackedWeights) -> Result<SyncStats> {
        if packed.device() != self.device {
            return self.send(WeightSource::Tensors(packed.tensors()), packed.version());
        }
        self.header(TENSORS, packed.version())?;
        Ok(self.sync().send_packed(packed)?)
    }

    /// On rank 0: send `learner`'s weights as policy `version` while it gathers them, one
    /// tensor at a time from its device ([`Learner::visit_weights`]). Under ZeRO-3 this is a
    /// collective of the learner's ranks, which the others join by exporting the same version
    /// ([`Learner::export_weights`]): each unit is whole only while its tensors go out, so no
    /// rank ever holds the whole model. The other ranks of this group keep it in host memory.
    pub fn send_learner(&self, learner: &Learner, version: u64) -> Result<SyncStats> {
        let table = learner.weight_table()?;
        self.header(HOST_TENSORS, version)?;
        let mut stream = self.sync().stream(&table, version)?;
        learner.visit_weights(|name, t| Ok(stream.push(name, t)?))?;
        Ok(stream.finish()?)
    }

    /// On rank 0: tell the other ranks that no more weights follow.
    pub fn end(&self) -> Result<()> {
        self.header(END, 0).map(drop)
    }

    /// On every other rank: the next weights rank 0 sends and what moving them took (from
    /// their first broadcast to their last), or `None` at its end.
    pub fn receive(&self) -> Result<Option<(Arrived, SyncStats)>> {
        let (what, version) = self.header(END, 0)?;
        Ok(match what {
            END => None,
            CHUNKS => {
                let (chunks, stats) = self.sync().receive()?;
                Some((Arrived::Chunks(chunks, version), stats))
            }
            TENSORS => {
                let received = self.sync().receive_tensors(self.device)?;
                let stats = received.stats;
                Some((Arrived::Tensors(received), stats))
            }
            HOST_TENSORS => {
                let received = self.sync().receive_tensors(Device::Cpu)?;
                let stats = received.stats;
                Some((Arrived::HostTensors(received), stats))
            }
            other => bail!("weights over a c10d group: unknown header {other}"),
        })
    }

    /// On every other rank: the next weights rank 0 sends, each piece given to `load` as soon
    /// as it has arrived (tensors one at a time, host chunks all at once), so that a rank that
    /// loads them straight into its engine (a tensor-parallel follower, which keeps only its
    /// share of each tensor) never holds a whole version; `false` at the group's end.
    pub fn receive_loading(&self, mut load: impl FnMut(WeightSource<'_>) -> Result<()>) -> Result<bool> {
        let (what, _) = self.header(END, 0)?;
        let into = match what {
            END => return Ok(false),
            CHUNKS => {
                let (chunks, _) = self.sync().receive()?;
                load(WeightSource::Chunks(&chunks))?;
                return Ok(true);
            }
            // Each tensor is held only until it is loaded: on this rank's device, wherever
            // rank 0's were.
            TENSORS | HOST_TENSORS => self.device,
            other => bail!("weights over a c10d group: unknown header {other}"),
        };
        self.sync()
            .receive_each(into, |name, t| load(WeightSource::Tensors(&[(name, t)])))?;
        Ok(true)
    }
}

/// The newest weights an engine rank's leader has received over the run's weight group.
pub struct Inbox {
    state: Mutex<InboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct InboxState {
    /// The newest version received and not yet taken.
    newest: Option<Arrived>,
    /// The newest version received at all.
    received: Option<u64>,
    /// Rank 0 said no more weights follow.
    ended: bool,
    /// Why receiving stopped, if it failed.
    failed: Option<String>,
}

impl Inbox {
    /// Receive every version rank 0 sends over `group`, on a thread of its own, until its end.
    pub fn start(group: WeightGroup) -> Arc<Self> {
        let inbox = Arc::new(Self {
            state: Mutex::new(InboxState::default()),
            changed: Condvar::new(),
        });
        let filled = inbox.clone();
        std::thread::spawn(move || loop {
            let next = group.receive();
            let mut state = filled.lock();
            match next {
                Ok(Some((arrived, stats))) => {
                    tracing::info!(
                        "engine: policy version {} arrived over the run's weight group ({:.1} MB {} in {:.3} s)",
                        arrived.version(),
                        stats.bytes as f64 / 1e6,
                        arrived.route(),
                        stats.seconds
                    );
                    state.received = Some(arrived.version());
                    state.newest = Some(arrived);
                }
                Ok(None) => state.ended = true,
                Err(e) => state.failed = Some(format!("receiving weights from the run: {e:#}")),
            }
            let stop = state.ended || state.failed.is_some();
            drop(state);
            filled.changed.notify_all();
            if stop {
                return;
            }
        });
        inbox
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait up to `wait` for policy `version` or a newer one to arrive; take the newest when
    /// it is newer than `have` (the engine's version; `None` when it holds no weights yet),
    /// else `None` (the engine holds it already). An engine holding no weights gets an error
    /// when nothing is left to take.
    pub fn take(&self, version: u64, have: Option<u64>, wait: Duration) -> Result<Option<Arrived>, String> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        while state.received.is_none_or(|v| v < version) {
            if let Some(why) = &state.failed {
                return Err(why.clone());
            }
            if state.ended {
                return Err(format!("the run ended before policy version {version} arrived"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "policy version {version} did not arrive over the run's weight group within {} s",
                    wait.as_secs()
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        match (state.newest.take(), have) {
            (Some(arrived), have) if have.is_none_or(|v| arrived.version() > v) => Ok(Some(arrived)),
            // An engine with no weights yet must get some: what arrived went elsewhere.
            (None, None) => Err(format!(
                "policy version {version} arrived over the run's weight group but was taken before this engine loaded any weights"
            )),
            _ => Ok(None),
        }
    }

    /// The newest version, taken, if one newer than `version` is waiting; never waits.
    pub fn take_newer(&self, version: u64) -> Option<Arrived> {
        let mut state = self.lock();
        match &state.newest {
            Some(arrived) if arrived.version() > version => state.newest.take(),
            _ => None,
        }
    }

    /// Wait up to `wait` for rank 0's end (or a failure); whether it came.
    pub fn wait_end(&self, wait: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, wait, |s| !s.ended && s.failed.is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.ended || state.failed.is_some()
    }
}

/// An engine fed from the inbox (in-flight updates) takes the newest version between decode
/// steps; the run's word to load it then finds it there.
impl WeightFeed for Inbox {
    fn load_newer(
        &self,
        version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> rlvr_rollout::Result<()>,
    ) -> rlvr_rollout::Result<()> {
        match self.take_newer(version) {
            Some(arrived) => load(arrived.source(), arrived.version()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rlvr_core::{DType, WeightChunk};
    use rlvr_rollout::WeightSource;
    use tch::{Device, Kind, Tensor};

    use super::{Arrived, Inbox, WeightFeed, WeightGroup};

    /// Version `v`'s weights: an f32 matrix and a bf16 vector whose values say their version
    /// (no random generator: the ranks are threads of one process, which shares it).
    fn tensors(v: u64) -> Vec<(String, Tensor)> {
        let values = |n: i64| Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.25 + v as f64;
        vec![
            ("a.weight".into(), values(15).reshape([5, 3])),
            ("b.bias".into(), values(7).to_kind(Kind::BFloat16)),
        ]
    }

    fn chunks(tensors: &[(String, Tensor)], version: u64) -> Vec<WeightChunk> {
        tensors
            .iter()
            .map(|(name, t)| {
                let len = t.numel() * t.kind().elt_size_in_bytes();
                let mut data = vec![0u8; len];
                t.view_dtype(Kind::Uint8)
                    .flatten(0, -1)
                    .copy_data_u8(&mut data, len);
                WeightChunk {
                    name: name.clone(),
                    dtype: if t.kind() == Kind::Float {
                        DType::F32
                    } else {
                        DType::Bf16
                    },
                    shape: t.size(),
                    data,
                    version,
                }
            })
            .collect()
    }

    /// The arrived weights as tensors, by name.
    fn as_tensors(arrived: &Arrived) -> Vec<(String, Tensor)> {
        match arrived.source() {
            WeightSource::Tensors(t) => t.iter().map(|(n, t)| (n.clone(), t.copy())).collect(),
            WeightSource::Chunks(chunks) => chunks
                .iter()
                .map(|c| {
                    let kind = if c.dtype == DType::F32 {
                        Kind::Float
                    } else {
                        Kind::BFloat16
                    };
                    (c.name.clone(), Tensor::from_data_size(&c.data, &c.shape, kind))
                })
                .collect(),
        }
    }

    fn same(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
                na == nb && ta.kind() == tb.kind() && ta.size() == tb.size() && ta.equal(tb)
            })
    }

    fn group(g: rlvr_dist::ProcessGroup) -> WeightGroup {
        WeightGroup {
            group: Arc::new(g),
            device: Device::Cpu,
        }
    }

    /// On rank 0: version 1 as tensors, version 2 as host chunks, version 3 packed as a
    /// learner's snapshot is, then the end.
    fn send_each_way(g: &WeightGroup) {
        g.send(WeightSource::Tensors(&tensors(1)), 1).unwrap();
        g.send(WeightSource::Chunks(&chunks(&tensors(2), 2)), 2).unwrap();
        let table: Vec<_> = tensors(3)
            .iter()
            .map(|(n, t)| (n.clone(), t.kind(), t.size()))
            .collect();
        let mut packer = rlvr_dist::WeightPacker::new(&table, 3, super::BUCKET_BYTES, Device::Cpu).unwrap();
        for (name, t) in tensors(3) {
            packer.push(&name, &t).unwrap();
        }
        g.send_packed(&packer.finish().unwrap()).unwrap();
        g.end().unwrap();
    }

    /// Rank 0 sends tensors, host chunks and a packed version, then its end; the others
    /// receive each as sent.
    #[test]
    fn weights_go_over_a_group_as_tensors_chunks_or_packed_until_rank_0_ends() {
        let received = rlvr_dist::on_thread_ranks(3, |g| {
            let g = group(g);
            if g.group.rank() == 0 {
                send_each_way(&g);
                return Vec::new();
            }
            std::iter::from_fn(|| g.receive().unwrap().map(|(arrived, _)| arrived)).collect()
        })
        .unwrap();
        for arrived in &received[1..] {
            assert_eq!(arrived.len(), 3);
            assert!(matches!(arrived[0], Arrived::Tensors(_)));
            assert!(matches!(arrived[1], Arrived::Chunks(..)));
            assert!(matches!(arrived[2], Arrived::Tensors(_)));
            for (a, version) in arrived.iter().zip([1, 2, 3]) {
                assert_eq!(a.version(), version);
                assert!(same(&as_tensors(a), &tensors(version)), "version {version}");
            }
        }
    }

    /// A rank that loads as it receives gets tensors one at a time (never a whole version at
    /// once) and host chunks all at once, each as sent, then rank 0's end.
    #[test]
    fn a_loading_receiver_gets_tensors_one_at_a_time_and_chunks_at_once() {
        let received = rlvr_dist::on_thread_ranks(2, |g| {
            let g = group(g);
            if g.group.rank() == 0 {
                send_each_way(&g);
                return Vec::new();
            }
            let mut calls: Vec<Vec<(String, Tensor)>> = Vec::new();
            let mut more = true;
            while more {
                more = g
                    .receive_loading(|source| {
                        calls.push(match source {
                            WeightSource::Tensors(t) => {
                                t.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
                            }
                            WeightSource::Chunks(c) => as_tensors(&Arrived::Chunks(c.to_vec(), 2)),
                        });
                        Ok(())
                    })
                    .unwrap();
            }
            calls
        })
        .unwrap();
        let calls = &received[1];
        assert_eq!(
            calls.len(),
            5,
            "two tensors, one call with both chunks, two tensors"
        );
        let one_by_one = |calls: &[Vec<(String, Tensor)>]| -> Vec<(String, Tensor)> {
            assert!(calls.iter().all(|c| c.len() == 1));
            calls
                .iter()
                .flatten()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        };
        assert!(same(&one_by_one(&calls[..2]), &tensors(1)));
        assert!(same(&calls[2], &tensors(2)));
        assert!(same(&one_by_one(&calls[3..]), &tensors(3)));
    }

    /// An inbox keeps the newest version rank 0 sent; it gives it to an engine that holds an
    /// older one (or none), nothing to one that holds it, and an error for a version that can
    /// no longer come.
    #[test]
    fn an_inbox_gives_the_newest_version_rank_0_sent() {
        let ok = rlvr_dist::on_thread_ranks(3, |g| {
            let g = group(g);
            let wait = Duration::from_secs(30);
            if g.group.rank() == 0 {
                for v in 1..=3 {
                    g.send(WeightSource::Tensors(&tensors(v)), v).unwrap();
                }
                g.end().unwrap();
                return true;
            }
            let inbox = Inbox::start(g);
            let first = inbox.take(1, None, wait).unwrap().unwrap();
            assert!(same(&as_tensors(&first), &tensors(first.version())));
            assert!(inbox.wait_end(wait));
            let have = first.version();
            match inbox.take(have, Some(have), wait).unwrap() {
                Some(newest) => {
                    assert_eq!(newest.version(), 3);
                    assert!(same(&as_tensors(&newest), &tensors(3)));
                }
                None => assert_eq!(have, 3, "nothing newer than {have} left"),
            }
            assert!(inbox.take(3, Some(3), wait).unwrap().is_none());
            let err = inbox.take(3, None, wait).unwrap_err();
            assert!(err.contains("taken before this engine loaded any"), "{err}");
            let err = inbox.take(4, Some(3), wait).unwrap_err();
            err.contains("ended before policy version 4")
        })
        .unwrap();
        assert_eq!(ok, [true, true, true]);
    }

    /// As an engine's weight feed, the inbox hands the newest version to an engine behind it,
    /// once, and nothing to one that holds it.
    #[test]
    fn an_inbox_feeds_an_engine_the_newest_version_between_decode_steps() {
        let loaded = rlvr_dist::on_thread_ranks(2, |g| {
            let g = group(g);
            if g.group.rank() == 0 {
                for v in 1..=2 {
                    g.send(WeightSource::Tensors(&tensors(v)), v).unwrap();
                }
                g.end().unwrap();
                return Vec::new();
            }
            let inbox = Inbox::start(g);
            assert!(inbox.wait_end(Duration::from_secs(30)));
            let mut loaded = Vec::new();
            for have in [0, 2, 0] {
                inbox
                    .load_newer(have, &mut |source, version| {
                        let WeightSource::Tensors(t) = source else {
                            panic!("tensors were sent")
                        };
                        assert!(same(t, &tensors(version)));
                        loaded.push(version);
                        Ok(())
                    })
                    .unwrap();
            }
            loaded
        })
        .unwrap();
        assert_eq!(loaded[1], [2], "version 2, once");
    }
}
