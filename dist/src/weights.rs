//! Weights from one rank to the others — a learner to rollout workers in other processes —
//! as c10d broadcasts in buckets: one call per bucket of up to `bucket_bytes`, not one per
//! tensor (one call per tensor is what made the anchors' users wait minutes on a sync). The
//! root first broadcasts the version and a table of names, element types and shapes; the
//! receivers cut the buckets back into [`WeightChunk`]s for their engines.

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
        other => Err(DistError::Shape {
            op: "weight sync",
            message: format!("unknown element type code {other} in the table"),
        }),
    }
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

    /// Broadcast `total` bytes in buckets: the root reads them from `data`, every other rank
    /// writes them there.
    fn buckets(&self, data: &mut [u8]) -> Result<u64> {
        let mut count = 0;
        for piece in data.chunks_mut(self.bucket_bytes) {
            let mut t = Tensor::from_slice(piece).to_device(self.device);
            self.group.broadcast(&mut t, self.root)?;
            if self.group.rank() != self.root {
                let t = t.to_device(Device::Cpu);
                t.copy_data_u8(piece, piece.len());
            }
            count += 1;
        }
        Ok(count)
    }

    /// On the root: send `chunks` (all of one version) to every other rank.
    pub fn send(&self, chunks: &[WeightChunk]) -> Result<SyncStats> {
        let started = Instant::now();
        let version = chunks.first().map_or(0, |c| c.version);
        // The table: version, count, then per chunk: element type, rank, shape, name length,
        // and the name's bytes one per entry.
        let mut table = vec![version as i64, chunks.len() as i64];
        for c in chunks {
            table.push(dtype_code(c.dtype));
            table.push(c.shape.len() as i64);
            table.extend(&c.shape);
            table.push(c.name.len() as i64);
            table.extend(c.name.bytes().map(i64::from));
        }
        self.table(Some(table))?;
        let mut data = Vec::with_capacity(chunks.iter().map(|c| c.data.len()).sum());
        for c in chunks {
            data.extend_from_slice(&c.data);
        }
        let buckets = self.buckets(&mut data)?;
        Ok(SyncStats {
            bytes: data.len() as u64,
            buckets,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// On every other rank: receive the root's weights.
    pub fn receive(&self) -> Result<(Vec<WeightChunk>, SyncStats)> {
        let started = Instant::now();
        let table = self.table(None)?;
        let bad = |message: &str| DistError::Shape {
            op: "weight sync",
            message: message.to_string(),
        };
        let mut it = table.into_iter();
        let mut next = || it.next().ok_or_else(|| bad("the table ends early"));
        let version = next()? as u64;
        let count = next()?;
        let mut chunks = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            let dtype = dtype_of(next()?)?;
            let rank = next()?;
            let shape = (0..rank).map(|_| next()).collect::<Result<Vec<i64>>>()?;
            let name_len = next()?;
            let name: Vec<u8> = (0..name_len)
                .map(|_| next().map(|b| b as u8))
                .collect::<Result<_>>()?;
            let name = String::from_utf8(name).map_err(|_| bad("a name is not UTF-8"))?;
            let bytes = shape.iter().product::<i64>().max(0) as usize * dtype.size();
            chunks.push(WeightChunk {
                name,
                dtype,
                shape,
                data: vec![0; bytes],
                version,
            });
        }
        let total: usize = chunks.iter().map(|c| c.data.len()).sum();
        let mut data = vec![0u8; total];
        let buckets = self.buckets(&mut data)?;
        let mut offset = 0;
        for c in &mut chunks {
            let n = c.data.len();
            c.data.copy_from_slice(&data[offset..offset + n]);
            offset += n;
        }
        Ok((
            chunks,
            SyncStats {
                bytes: total as u64,
                buckets,
                seconds: started.elapsed().as_secs_f64(),
            },
        ))
    }
}
