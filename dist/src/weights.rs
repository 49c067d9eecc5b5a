//! Weights from one rank to the others — a learner to rollout workers in other processes —
//! as c10d broadcasts in buckets: one call per bucket of up to `bucket_bytes`, not one per
//! tensor (one call per tensor is what made the anchors' users wait minutes on a sync). The
//! root first broadcasts the version and a table of names, element types and shapes; then the
//! bytes follow in one of two ways:
//! - [`WeightSync::send`] / [`WeightSync::receive`]: [`WeightChunk`]s, host bytes, staged on
//!   the sync's device bucket by bucket (what the actor messages carry);
//! - [`WeightSync::send_tensors`] / [`WeightSync::receive_tensors`]: tensors that stay on the
//!   device — the root packs its tensors' bytes into device buckets (a tensor larger than a
//!   bucket is broadcast from its own memory), the receivers get views into the buckets they
//!   received, and no byte passes through host memory (unless a receiver asks for its copy
//!   there). [`WeightSync::stream`] sends the same way tensors that are made one at a time.

use std::time::Instant;

use rlvr_core::{DType, WeightChunk};
use tch::{Device, Kind, Tensor};

use crate::buckets::{entries_of, Entry, Filled, Filling, PackedWeights, Packer, Packing};
use crate::{DistError, ProcessGroup, Result};

/// What one sync moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncStats {
    /// Bytes of weights.
    pub bytes: u64,
    /// Broadcast calls for them.
    pub buckets: u64,
    /// Seconds from the first broadcast to the last.
    pub seconds: f64,
}

/// What [`WeightSync::receive_tensors`] returns.
#[derive(Debug)]
pub struct ReceivedTensors {
    /// Every tensor by name, on the sync's device, in the root's order.
    pub tensors: Vec<(String, Tensor)>,
    /// Their policy version.
    pub version: u64,
    /// What the sync moved.
    pub stats: SyncStats,
}

/// Broadcasts weights from rank `root` of a group, in buckets staged on `device` (the CPU for
/// Gloo, the rank's GPU for NCCL).
#[derive(Clone, Copy)]
pub struct WeightSync<'a> {
    group: &'a ProcessGroup,
    root: usize,
    bucket_bytes: usize,
    device: Device,
}

fn dtype_code(d: DType) -> i64 {
    match d {
        DType::F32 => 0,
        DType::Bf16 => 1,
        DType::F16 => 2,
    }
}

fn dtype_of(code: i64) -> Result<DType> {
    match code {
        0 => Ok(DType::F32),
        1 => Ok(DType::Bf16),
        2 => Ok(DType::F16),
        other => Err(bad_table(format!(
            "unknown element type code {other} in the table"
        ))),
    }
}

pub(crate) fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::Bf16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
    }
}

pub(crate) fn dtype_of_kind(name: &str, kind: Kind) -> Result<DType> {
    match kind {
        Kind::Float => Ok(DType::F32),
        Kind::BFloat16 => Ok(DType::Bf16),
        Kind::Half => Ok(DType::F16),
        other => Err(DistError::Shape {
            op: "weight sync",
            message: format!("`{name}` is {other:?}; weights travel as f32, bf16 or f16"),
        }),
    }
}

pub(crate) fn bad_table(message: impl Into<String>) -> DistError {
    DistError::Shape {
        op: "weight sync",
        message: message.into(),
    }
}

/// The table the root broadcasts first: version, count, then per tensor: element type, rank,
/// shape, name length, and the name's bytes one per entry.
fn encode_table(version: u64, entries: &[Entry]) -> Vec<i64> {
    let mut table = vec![version as i64, entries.len() as i64];
    for e in entries {
        table.push(dtype_code(e.dtype));
        table.push(e.shape.len() as i64);
        table.extend(&e.shape);
        table.push(e.name.len() as i64);
        table.extend(e.name.bytes().map(i64::from));
    }
    table
}

fn decode_table(table: Vec<i64>) -> Result<(u64, Vec<Entry>)> {
    let mut it = table.into_iter();
    let mut next = || it.next().ok_or_else(|| bad_table("the table ends early"));
    let version = next()? as u64;
    let count = next()?;
    let mut entries = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        let dtype = dtype_of(next()?)?;
        let rank = next()?;
        let shape = (0..rank).map(|_| next()).collect::<Result<Vec<i64>>>()?;
        let name_len = next()?;
        let name: Vec<u8> = (0..name_len)
            .map(|_| next().map(|b| b as u8))
            .collect::<Result<_>>()?;
        let name = String::from_utf8(name).map_err(|_| bad_table("a name is not UTF-8"))?;
        entries.push(Entry { name, dtype, shape });
    }
    Ok((version, entries))
}

/// Where bytes `start..start + len` of the stream that concatenates segments of lengths `lens`
/// lie: per segment touched, (segment, offset in it, offset in the range, bytes).
fn pieces(lens: &[usize], start: usize, len: usize) -> Vec<(usize, usize, usize, usize)> {
    let (end, mut out, mut seg_start) = (start + len, Vec::new(), 0);
    for (i, &l) in lens.iter().enumerate() {
        let (a, b) = (start.max(seg_start), end.min(seg_start + l));
        if a < b {
            out.push((i, a - seg_start, a - start, b - a));
        }
        seg_start += l;
        if seg_start >= end {
            break;
        }
    }
    out
}

impl<'a> WeightSync<'a> {
    /// A sync over `group` from `root`, `bucket_bytes` per broadcast (at least 1).
    pub fn new(group: &'a ProcessGroup, root: usize, bucket_bytes: usize, device: Device) -> Self {
        Self {
            group,
            root,
            bucket_bytes: bucket_bytes.max(1),
            device,
        }
    }

    /// Broadcast an i64 table from the root (its length first).
    fn table(&self, values: Option<Vec<i64>>) -> Result<Vec<i64>> {
        let mut len =
            Tensor::from_slice(&[values.as_ref().map_or(0, |v| v.len() as i64)]).to_device(self.device);
        self.group.broadcast(&mut len, self.root)?;
        let n = len.int64_value(&[0]);
        let mut t = match values {
            Some(v) => Tensor::from_slice(&v).to_device(self.device),
            None => Tensor::zeros([n], (Kind::Int64, self.device)),
        };
        self.group.broadcast(&mut t, self.root)?;
        Vec::<i64>::try_from(t.to_device(Device::Cpu)).map_err(|e| DistError::C10d(e.to_string()))
    }

    /// The buckets of a stream of `total` bytes: (start, length) of each, in order.
    fn bucket_ranges(&self, total: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..total)
            .step_by(self.bucket_bytes)
            .map(move |start| (start, self.bucket_bytes.min(total - start)))
    }

    /// On the root: send `chunks` (all of one version) to every other rank, one bucket at a
    /// time, each byte copied once into it (beyond the chunks, the root holds one bucket of
    /// their bytes, never a copy of all).
    pub fn send(&self, chunks: &[WeightChunk]) -> Result<SyncStats> {
        let started = Instant::now();
        let version = chunks.first().map_or(0, |c| c.version);
        let entries: Vec<Entry> = chunks
            .iter()
            .map(|c| Entry {
                name: c.name.clone(),
                dtype: c.dtype,
                shape: c.shape.clone(),
            })
            .collect();
        self.table(Some(encode_table(version, &entries)))?;
        let lens: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
        let total: usize = lens.iter().sum();
        let staging = Tensor::empty([self.bucket_bytes.min(total) as i64], (Kind::Uint8, Device::Cpu));
        let mut buckets = 0;
        for (start, len) in self.bucket_ranges(total) {
            let bucket = staging.narrow(0, 0, len as i64);
            for (i, from, to, n) in pieces(&lens, start, len) {
                let piece = &chunks[i].data[from..from + n];
                // SAFETY: `view` reads `piece` in place, and is dropped (after `f_copy_` has read
                // it) before this iteration ends, while `chunks` is still borrowed.
                let view = unsafe {
                    Tensor::f_from_blob(piece.as_ptr(), &[n as i64], &[1], Kind::Uint8, Device::Cpu)
                };
                view.and_then(|view| bucket.narrow(0, to as i64, n as i64).f_copy_(&view))
                    .map_err(|e| DistError::C10d(e.to_string()))?;
            }
            let mut t = match self.device {
                Device::Cpu => bucket,
                device => bucket.to_device(device),
            };
            self.group.broadcast(&mut t, self.root)?;
            buckets += 1;
        }
        Ok(SyncStats {
            bytes: total as u64,
            buckets,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// On every other rank: receive the root's weights, each bucket's bytes copied straight
    /// into the chunks they belong to (beyond the chunks, one bucket in host memory).
    pub fn receive(&self) -> Result<(Vec<WeightChunk>, SyncStats)> {
        let started = Instant::now();
        let (version, entries) = decode_table(self.table(None)?)?;
        let lens: Vec<usize> = entries.iter().map(Entry::bytes).collect();
        let total: usize = lens.iter().sum();
        let mut data: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0u8; n]).collect();
        let mut buckets = 0;
        for (start, len) in self.bucket_ranges(total) {
            let mut t = Tensor::empty([len as i64], (Kind::Uint8, self.device));
            self.group.broadcast(&mut t, self.root)?;
            let bucket = t.to_device(Device::Cpu);
            for (i, from, to, n) in pieces(&lens, start, len) {
                bucket
                    .narrow(0, to as i64, n as i64)
                    .copy_data_u8(&mut data[i][from..from + n], n);
            }
            buckets += 1;
        }
        let chunks = entries
            .into_iter()
            .zip(data)
            .map(|(e, data)| WeightChunk {
                data,
                name: e.name,
                dtype: e.dtype,
                shape: e.shape,
                version,
            })
            .collect();
        Ok((
            chunks,
            SyncStats {
                bytes: total as u64,
                buckets,
                seconds: started.elapsed().as_secs_f64(),
            },
        ))
    }

    /// On the root: send `tensors` (name and tensor) of policy `version` to every other rank
    /// without staging them in host memory when they are on this sync's device.
    pub fn send_tensors(&self, tensors: &[(String, Tensor)], version: u64) -> Result<SyncStats> {
        let table = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.kind(), t.size()))
            .collect::<Vec<_>>();
        let mut stream = self.stream(&table, version)?;
        for (name, t) in tensors {
            stream.push(name, t)?;
        }
        stream.finish()
    }

    /// On the root: start sending policy `version`, whose tensors' names, element types and
    /// shapes are `table`, to every other rank, the tensors given one at a time in the table's
    /// order ([`TensorStream::push`]); they receive it as [`WeightSync::send_tensors`]'. A
    /// sender that makes each tensor just before it goes (a ZeRO-3 learner gathering one unit
    /// at a time) holds at most one bucket of the version beyond what it makes.
    pub fn stream(&self, table: &[(String, Kind, Vec<i64>)], version: u64) -> Result<TensorStream<'a>> {
        let entries = entries_of(table)?;
        let started = Instant::now();
        self.table(Some(encode_table(version, &entries)))?;
        Ok(TensorStream {
            sync: *self,
            packer: Packer::new(entries, self.bucket_bytes, self.device, Filling::AsTheyCome),
            started,
        })
    }

    /// On the root: send a version packed for this sync ([`crate::WeightPacker`], the same
    /// bucket size, on this sync's device) to every other rank, each bucket broadcast as it
    /// lies; they receive it as [`WeightSync::send_tensors`]'.
    pub fn send_packed(&self, packed: &PackedWeights) -> Result<SyncStats> {
        if packed.bucket_bytes() != self.bucket_bytes || packed.device() != self.device {
            return Err(bad_table(format!(
                "policy version {} was packed in buckets of {} bytes on {:?}; this sync sends buckets of {} bytes on {:?}",
                packed.version(),
                packed.bucket_bytes(),
                packed.device(),
                self.bucket_bytes,
                self.device
            )));
        }
        let started = Instant::now();
        self.table(Some(encode_table(packed.version(), &packed.entries)))?;
        for bucket in &packed.buckets {
            self.group.broadcast(&mut bucket.shallow_clone(), self.root)?;
        }
        Ok(SyncStats {
            bytes: packed.entries.iter().map(Entry::bytes).sum::<usize>() as u64,
            buckets: packed.buckets.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// On every other rank: receive the root's tensors onto `into` (views into the buckets
    /// they arrived in, each moved there from this sync's device when `into` is another: the
    /// host, for a version too large to sit beside an engine on its GPU), with their policy
    /// version.
    pub fn receive_tensors(&self, into: Device) -> Result<ReceivedTensors> {
        let mut tensors = Vec::new();
        let (version, stats) = self.receive_each(into, |name, t| {
            tensors.push((name, t));
            Ok::<_, DistError>(())
        })?;
        Ok(ReceivedTensors {
            tensors,
            version,
            stats,
        })
    }

    /// On every other rank: receive the root's tensors one at a time onto `into` (as
    /// [`WeightSync::receive_tensors`]), each given to `f` as soon as its bucket has arrived,
    /// in the root's order; returns their policy version and what the sync moved. Beyond what
    /// `f` keeps, a receiver holds one bucket at a time.
    pub fn receive_each<E: From<DistError>>(
        &self,
        into: Device,
        mut f: impl FnMut(String, Tensor) -> std::result::Result<(), E>,
    ) -> std::result::Result<(u64, SyncStats), E> {
        let started = Instant::now();
        let (version, entries) = decode_table(self.table(None)?)?;
        let packing = Packing::new(&entries, self.bucket_bytes);
        // Entries of no bytes travel in no bucket: each is given in its turn, empty.
        let mut next = 0;
        for (bytes, members) in &packing.buckets {
            let mut bucket = Tensor::empty([*bytes as i64], (Kind::Uint8, self.device));
            self.group.broadcast(&mut bucket, self.root)?;
            let bucket = match into == self.device {
                true => bucket,
                false => bucket.to_device(into),
            };
            for &(i, offset) in members {
                for e in &entries[next..i] {
                    f(e.name.clone(), e.empty(into))?;
                }
                let e = &entries[i];
                f(e.name.clone(), e.view(&bucket, offset)?)?;
                next = i + 1;
            }
        }
        for e in &entries[next..] {
            f(e.name.clone(), e.empty(into))?;
        }
        let stats = SyncStats {
            bytes: entries.iter().map(Entry::bytes).sum::<usize>() as u64,
            buckets: packing.buckets.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((version, stats))
    }
}

/// A version going out one tensor at a time ([`WeightSync::stream`]): each tensor is copied
/// into its bucket as it comes, and each bucket is broadcast once its last tensor is in (a
/// tensor larger than a bucket from its own memory).
pub struct TensorStream<'a> {
    sync: WeightSync<'a>,
    packer: Packer,
    started: Instant,
}

impl TensorStream<'_> {
    /// The next tensor of the table: `name`, of the table's element type and shape, on any
    /// device (moved to the sync's when it is elsewhere).
    pub fn push(&mut self, name: &str, t: &Tensor) -> Result<()> {
        match self.packer.push(name, t)? {
            Filled::Nothing => Ok(()),
            Filled::Bucket(mut bytes) | Filled::Alone(mut bytes) => {
                self.sync.group.broadcast(&mut bytes, self.sync.root)
            }
        }
    }

    /// After the table's last tensor: what the sync moved. An error if some were not given.
    pub fn finish(self) -> Result<SyncStats> {
        self.packer.finished()?;
        Ok(SyncStats {
            bytes: self.packer.entries.iter().map(Entry::bytes).sum::<usize>() as u64,
            buckets: self.packer.packing.buckets.len() as u64,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}
