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
//!   received, and no byte passes through host memory.

use std::time::Instant;

use rlvr_core::{DType, WeightChunk};
use tch::{Device, Kind, Tensor};

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

fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::Bf16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
    }
}

fn dtype_of_kind(name: &str, kind: Kind) -> Result<DType> {
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

fn bad_table(message: impl Into<String>) -> DistError {
    DistError::Shape {
        op: "weight sync",
        message: message.into(),
    }
}

/// One tensor of a sync, as the table describes it.
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<i64>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.shape.iter().product::<i64>().max(0) as usize * self.dtype.size()
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

/// Where each tensor lies in the device buckets: consecutive tensors share a bucket of at most
/// `bucket_bytes`, each at an offset aligned to [`ALIGN`] so it can be viewed in its own type; a
/// tensor larger than a bucket travels alone. Both sides compute it from the table.
struct Packing {
    /// Per bucket: its bytes and the (tensor index, offset) of each member.
    buckets: Vec<(usize, Vec<(usize, usize)>)>,
}

/// Byte alignment of a tensor inside a device bucket (enough for every element type).
const ALIGN: usize = 16;

impl Packing {
    fn new(entries: &[Entry], bucket_bytes: usize) -> Self {
        let mut buckets: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let bytes = e.bytes();
            if bytes == 0 {
                continue;
            }
            match buckets.last_mut() {
                Some((used, members)) if used.next_multiple_of(ALIGN) + bytes <= bucket_bytes => {
                    let offset = used.next_multiple_of(ALIGN);
                    members.push((i, offset));
                    *used = offset + bytes;
                }
                _ => buckets.push((bytes, vec![(i, 0)])),
            }
        }
        Self { buckets }
    }
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

/// A tensor's bytes as a flat `u8` tensor on its device (a view when it is contiguous).
fn bytes_of(name: &str, t: &Tensor) -> Result<Tensor> {
    t.contiguous()
        .reshape([-1])
        .f_view_dtype(Kind::Uint8)
        .map_err(|e| bad_table(format!("`{name}`: {e}")))
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
    /// time (beyond the chunks, the root holds one bucket of their bytes, never a copy of all).
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
        let mut staging = vec![0u8; self.bucket_bytes.min(total)];
        let mut buckets = 0;
        for (start, len) in self.bucket_ranges(total) {
            let bucket = &mut staging[..len];
            for (i, from, to, n) in pieces(&lens, start, len) {
                bucket[to..to + n].copy_from_slice(&chunks[i].data[from..from + n]);
            }
            let mut t = Tensor::from_slice(bucket).to_device(self.device);
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
        let mut staging = vec![0u8; self.bucket_bytes.min(total)];
        let mut buckets = 0;
        for (start, len) in self.bucket_ranges(total) {
            let mut t = Tensor::zeros([len as i64], (Kind::Uint8, self.device));
            self.group.broadcast(&mut t, self.root)?;
            let bucket = &mut staging[..len];
            t.to_device(Device::Cpu).copy_data_u8(bucket, len);
            for (i, from, to, n) in pieces(&lens, start, len) {
                data[i][from..from + n].copy_from_slice(&bucket[to..to + n]);
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

    /// On the root: send `tensors` (name and tensor, each on this sync's device) of policy
    /// `version` to every other rank without staging them in host memory.
    pub fn send_tensors(&self, tensors: &[(String, Tensor)], version: u64) -> Result<SyncStats> {
        let started = Instant::now();
        let entries = tensors
            .iter()
            .map(|(name, t)| {
                if t.device() != self.device {
                    return Err(bad_table(format!(
                        "`{name}` is on {:?}; this sync's buckets are on {:?}",
                        t.device(),
                        self.device
                    )));
                }
                Ok(Entry {
                    name: name.clone(),
                    dtype: dtype_of_kind(name, t.kind())?,
                    shape: t.size(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.table(Some(encode_table(version, &entries)))?;
        let packing = Packing::new(&entries, self.bucket_bytes);
        for (bytes, members) in &packing.buckets {
            let mut bucket = if let [(i, _)] = members.as_slice() {
                bytes_of(&tensors[*i].0, &tensors[*i].1)?
            } else {
                let bucket = Tensor::empty([*bytes as i64], (Kind::Uint8, self.device));
                for &(i, offset) in members {
                    let (name, t) = &tensors[i];
                    let src = bytes_of(name, t)?;
                    bucket.narrow(0, offset as i64, src.numel() as i64).copy_(&src);
                }
                bucket
            };
            self.group.broadcast(&mut bucket, self.root)?;
        }
        Ok(SyncStats {
            bytes: entries.iter().map(Entry::bytes).sum::<usize>() as u64,
            buckets: packing.buckets.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// On every other rank: receive the root's tensors, on this sync's device (views into the
    /// buckets they arrived in), with their policy version.
    pub fn receive_tensors(&self) -> Result<ReceivedTensors> {
        let started = Instant::now();
        let (version, entries) = decode_table(self.table(None)?)?;
        let packing = Packing::new(&entries, self.bucket_bytes);
        let mut tensors: Vec<Option<Tensor>> = entries.iter().map(|_| None).collect();
        for (bytes, members) in &packing.buckets {
            let mut bucket = Tensor::empty([*bytes as i64], (Kind::Uint8, self.device));
            self.group.broadcast(&mut bucket, self.root)?;
            for &(i, offset) in members {
                let e = &entries[i];
                let view = bucket
                    .narrow(0, offset as i64, e.bytes() as i64)
                    .f_view_dtype(kind_of(e.dtype))
                    .and_then(|t| t.f_reshape(&e.shape))
                    .map_err(|err| bad_table(format!("`{}`: {err}", e.name)))?;
                tensors[i] = Some(view);
            }
        }
        let stats = SyncStats {
            bytes: entries.iter().map(Entry::bytes).sum::<usize>() as u64,
            buckets: packing.buckets.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        };
        let tensors = entries
            .into_iter()
            .zip(tensors)
            .map(|(e, t)| {
                let t = t.unwrap_or_else(|| Tensor::empty(&e.shape, (kind_of(e.dtype), self.device)));
                (e.name, t)
            })
            .collect();
        Ok(ReceivedTensors {
            tensors,
            version,
            stats,
        })
    }
}
