//! Where a version's tensors lie in the device buckets a [`crate::WeightSync`] broadcasts, and
//! the filling of those buckets. Both sides compute the layout from the table alone
//! ([`Packing`]); the sender fills each bucket ([`Packer`]) either with each tensor as it comes
//! (a stream of tensors made one at a time, none held past its copy) or with one
//! concatenation once its last tensor has come (a snapshot: a launch or two a bucket, not one
//! a tensor).
//!
//! [`WeightPacker`] keeps the filled buckets: a [`PackedWeights`] is a snapshot of a version
//! (the learner steps on while engines load it) that is also exactly what goes over the wire,
//! so broadcasting it copies nothing more ([`crate::WeightSync::send_packed`]).

use rlvr_core::DType;
use tch::{Device, Kind, Tensor};

use crate::weights::{bad_table, dtype_of_kind, kind_of};
use crate::Result;

/// One tensor of a sync, as the table describes it.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<i64>,
}

impl Entry {
    pub(crate) fn bytes(&self) -> usize {
        self.shape.iter().product::<i64>().max(0) as usize * self.dtype.size()
    }

    /// The entry read out of the bucket it arrived in, at `offset`.
    pub(crate) fn view(&self, bucket: &Tensor, offset: usize) -> Result<Tensor> {
        bucket
            .narrow(0, offset as i64, self.bytes() as i64)
            .f_view_dtype(kind_of(self.dtype))
            .and_then(|t| t.f_reshape(&self.shape))
            .map_err(|err| bad_table(format!("`{}`: {err}", self.name)))
    }

    /// An entry of no bytes, which travels in no bucket.
    pub(crate) fn empty(&self, device: Device) -> Tensor {
        Tensor::empty(&self.shape, (kind_of(self.dtype), device))
    }
}

/// The table's entries from (name, element type, shape) triples.
pub(crate) fn entries_of(table: &[(String, Kind, Vec<i64>)]) -> Result<Vec<Entry>> {
    table
        .iter()
        .map(|(name, kind, shape)| {
            Ok(Entry {
                name: name.clone(),
                dtype: dtype_of_kind(name, *kind)?,
                shape: shape.clone(),
            })
        })
        .collect()
}

/// Where each tensor lies in the device buckets: consecutive tensors share a bucket of at most
/// `bucket_bytes`, each at an offset aligned to [`ALIGN`] so it can be viewed in its own type; a
/// tensor larger than a bucket travels alone.
pub(crate) struct Packing {
    /// Per bucket: its bytes and the (tensor index, offset) of each member.
    pub(crate) buckets: Vec<(usize, Vec<(usize, usize)>)>,
}

/// Byte alignment of a tensor inside a device bucket (enough for every element type).
const ALIGN: usize = 16;

impl Packing {
    pub(crate) fn new(entries: &[Entry], bucket_bytes: usize) -> Self {
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

/// A tensor's bytes as a flat `u8` tensor on its device (a view when it is contiguous).
pub(crate) fn bytes_of(name: &str, t: &Tensor) -> Result<Tensor> {
    t.contiguous()
        .reshape([-1])
        .f_view_dtype(Kind::Uint8)
        .map_err(|e| bad_table(format!("`{name}`: {e}")))
}

/// What one tensor given to a [`Packer`] completed.
pub(crate) enum Filled {
    /// Nothing yet: its bucket waits for more (or it has no bytes).
    Nothing,
    /// A bucket, full.
    Bucket(Tensor),
    /// The bytes of a tensor larger than a bucket, which travels alone: a view of the
    /// tensor's own memory when it is contiguous.
    Alone(Tensor),
}

/// How a [`Packer`] fills a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filling {
    /// Each tensor copied in as it comes: a stream's tensors (a ZeRO-3 learner's gathered
    /// units) are let go as soon as they are in.
    AsTheyCome,
    /// All at once, one concatenation when the bucket's last tensor has come: its tensors
    /// outlive the packing anyway (a snapshot of a learner's parameters).
    AtOnce,
}

/// Fills the buckets of a table's tensors, given one at a time in the table's order, on
/// `device`.
pub(crate) struct Packer {
    pub(crate) entries: Vec<Entry>,
    pub(crate) packing: Packing,
    /// Each entry's bucket and offset in it (`None`: no bytes).
    place: Vec<Option<(usize, usize)>>,
    /// The next entry expected.
    next: usize,
    device: Device,
    filling: Filling,
    /// The bucket being filled as its tensors come.
    bucket: Option<Tensor>,
    /// The bytes of the bucket to fill at once so far (its members and the gaps between them).
    pieces: Vec<Tensor>,
    /// How many bytes of that bucket `pieces` cover.
    filled: usize,
}

impl Packer {
    pub(crate) fn new(entries: Vec<Entry>, bucket_bytes: usize, device: Device, filling: Filling) -> Self {
        let packing = Packing::new(&entries, bucket_bytes);
        let mut place = vec![None; entries.len()];
        for (b, (_, members)) in packing.buckets.iter().enumerate() {
            for &(i, offset) in members {
                place[i] = Some((b, offset));
            }
        }
        Self {
            entries,
            packing,
            place,
            next: 0,
            device,
            filling,
            bucket: None,
            pieces: Vec::new(),
            filled: 0,
        }
    }

    /// The next tensor of the table: `name`, of the table's element type and shape, on any
    /// device (moved to the packer's when it is elsewhere).
    pub(crate) fn push(&mut self, name: &str, t: &Tensor) -> Result<Filled> {
        let i = self.next;
        let Some(e) = self.entries.get(i) else {
            return Err(bad_table(format!(
                "`{name}` is past the table's {} tensors",
                self.entries.len()
            )));
        };
        if e.name != name || dtype_of_kind(name, t.kind())? != e.dtype || t.size() != e.shape {
            return Err(bad_table(format!(
                "`{name}` ({:?}, {:?}) where the table has `{}` ({:?}, {:?}) next",
                t.kind(),
                t.size(),
                e.name,
                e.dtype,
                e.shape
            )));
        }
        self.next += 1;
        let Some((index, offset)) = self.place[i] else {
            return Ok(Filled::Nothing);
        };
        let bytes = match t.device() == self.device {
            true => bytes_of(name, t)?,
            false => bytes_of(name, &t.to_device(self.device))?,
        };
        let (size, members) = &self.packing.buckets[index];
        if members.len() == 1 {
            return Ok(Filled::Alone(bytes));
        }
        let fail = |err: tch::TchError| bad_table(format!("bucket {index}: {err}"));
        let new_bucket = || Tensor::empty([*size as i64], (Kind::Uint8, self.device));
        match self.filling {
            Filling::AsTheyCome => {
                let bucket = self.bucket.get_or_insert_with(new_bucket);
                bucket
                    .narrow(0, offset as i64, e.bytes() as i64)
                    .f_copy_(&bytes)
                    .map_err(fail)?;
            }
            Filling::AtOnce => {
                if offset > self.filled {
                    let gap = (offset - self.filled) as i64;
                    self.pieces.push(Tensor::zeros([gap], (Kind::Uint8, self.device)));
                }
                self.filled = offset + e.bytes();
                self.pieces.push(bytes);
            }
        }
        if members.last().is_none_or(|&(last, _)| last != i) {
            return Ok(Filled::Nothing);
        }
        let bucket = match (self.filling, self.bucket.take()) {
            (Filling::AsTheyCome, Some(bucket)) => bucket,
            _ => {
                self.filled = 0;
                Tensor::f_cat_out(&new_bucket(), &std::mem::take(&mut self.pieces), 0).map_err(fail)?
            }
        };
        Ok(Filled::Bucket(bucket))
    }

    /// An error unless every tensor of the table was given.
    pub(crate) fn finished(&self) -> Result<()> {
        match self.entries.get(self.next) {
            Some(e) => Err(bad_table(format!(
                "the version ended before `{}` ({} of {} tensors given)",
                e.name,
                self.next,
                self.entries.len()
            ))),
            None => Ok(()),
        }
    }
}

/// Makes a [`PackedWeights`] from a version's tensors given one at a time in its table's order
/// (as [`crate::TensorStream`] sends them, but kept).
pub struct WeightPacker {
    packer: Packer,
    version: u64,
    bucket_bytes: usize,
    buckets: Vec<Tensor>,
}

impl WeightPacker {
    /// Pack policy `version`, whose tensors' names, element types and shapes are `table`, into
    /// buckets of at most `bucket_bytes` on `device` (the same bucket size as the
    /// [`crate::WeightSync`] that will send it).
    pub fn new(
        table: &[(String, Kind, Vec<i64>)],
        version: u64,
        bucket_bytes: usize,
        device: Device,
    ) -> Result<Self> {
        let bucket_bytes = bucket_bytes.max(1);
        Ok(Self {
            packer: Packer::new(entries_of(table)?, bucket_bytes, device, Filling::AtOnce),
            version,
            bucket_bytes,
            buckets: Vec::new(),
        })
    }

    /// The next tensor of the table, copied into its bucket.
    pub fn push(&mut self, name: &str, t: &Tensor) -> Result<()> {
        match self.packer.push(name, t)? {
            Filled::Nothing => {}
            Filled::Bucket(bucket) => self.buckets.push(bucket),
            // A snapshot owns its bytes: a tensor larger than a bucket is copied too.
            Filled::Alone(bytes) => self.buckets.push(bytes.copy()),
        }
        Ok(())
    }

    /// The packed version, once every tensor of the table was given.
    pub fn finish(self) -> Result<PackedWeights> {
        self.packer.finished()?;
        let Packer {
            entries,
            place,
            device,
            ..
        } = self.packer;
        let mut tensors = Vec::with_capacity(entries.len());
        for (e, place) in entries.iter().zip(place) {
            let t = match place {
                Some((b, offset)) => e.view(&self.buckets[b], offset)?,
                None => e.empty(device),
            };
            tensors.push((e.name.clone(), t));
        }
        Ok(PackedWeights {
            version: self.version,
            bucket_bytes: self.bucket_bytes,
            entries,
            buckets: self.buckets,
            tensors,
            device,
        })
    }
}

/// A version's tensors copied into the buckets a sync broadcasts ([`WeightPacker`]): a
/// snapshot whose tensors ([`PackedWeights::tensors`]) are views into those buckets, and which
/// [`crate::WeightSync::send_packed`] broadcasts as it lies.
pub struct PackedWeights {
    version: u64,
    bucket_bytes: usize,
    pub(crate) entries: Vec<Entry>,
    pub(crate) buckets: Vec<Tensor>,
    tensors: Vec<(String, Tensor)>,
    device: Device,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl PackedWeights {
    /// The policy version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every tensor by name, in the table's order: views into the buckets.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// Bytes per bucket it was packed for.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    /// The device its buckets are on.
    pub fn device(&self) -> Device {
        self.device
    }
}
