//! Hugging Face checkpoint files: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`; plus the training state rlvr adds for exact resume
//! (`optimizer.safetensors`, `trainer_state.json`). [`ShardedWriter`] writes a model unit by
//! unit into the sharded layout.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rlvr_core::{DType, WeightChunk};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{LearnerError, Result};
use crate::model::Config;

mod writer;
pub use writer::ShardedWriter;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LearnerError + '_ {
    move |source| LearnerError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn torch(context: String) -> impl FnOnce(tch::TchError) -> LearnerError {
    move |source| LearnerError::Torch { context, source }
}

/// Read `config.json` from a model directory, refusing a configuration rlvr does not
/// implement ([`LearnerError::Unsupported`], naming the field and what is supported).
pub fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(LearnerError::Unsupported {
            path: dir.display().to_string(),
            message: "no config.json: not a Hugging Face model directory".into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Config::from_hf_json(&text).map_err(|e| LearnerError::Unsupported {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The `torch_dtype` name of an element type.
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Write `config.json` (the true architecture, `torch_dtype` the variables' type) and
/// `model.safetensors` (every variable of `vs`, by name) into `dir`.
pub fn save_model(vs: &VarStore, config: &Config, dir: &Path) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let kind = vars.values().next().map_or(Kind::Float, Tensor::kind);
    let tensors: Vec<(String, Tensor)> = vars.into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    write_model(dir, &config.to_hf_json(dtype_name(kind)), &tensors)
}

/// Write `config.json` (`config`, as given) and `model.safetensors` (`tensors`) into `dir`.
pub fn write_model(dir: &Path, config: &serde_json::Value, tensors: &[(String, Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg_path = dir.join("config.json");
    let json = serde_json::to_string_pretty(config).unwrap_or_default();
    std::fs::write(&cfg_path, json).map_err(io(&cfg_path))?;
    let path = dir.join("model.safetensors");
    Tensor::write_safetensors(tensors, &path).map_err(torch(format!("writing {}", path.display())))
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        let pickled = dir.join("pytorch_model.bin").is_file();
        return Err(LearnerError::Unsupported {
            path: dir.display().to_string(),
            message: format!(
                "no model.safetensors or model.safetensors.index.json{}",
                if pickled {
                    " (pytorch_model.bin is not read: save the model with safe_serialization=True)"
                } else {
                    ""
                }
            ),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(io(&index))?;
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
        path: index.display().to_string(),
        message: format!("line {}: {e}", e.line()),
    })?;
    let map = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LearnerError::Checkpoint {
            path: index.display().to_string(),
            message: "no `weight_map` object".into(),
        })?;
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// Copy the weights of a model directory (one file or shards) into the variables of `vs` with
/// the same names; see [`load_files`].
pub fn load_dir(vs: &VarStore, dir: &Path) -> Result<()> {
    load_files(vs, &weight_files(dir)?, dir)
}

/// Where one tensor of a safetensors file lies.
struct Stored {
    file: usize,
    kind: Kind,
    shape: Vec<i64>,
    /// Byte range in the file.
    start: u64,
    end: u64,
}

/// The tensors of safetensors `files`, by name, from their headers alone.
fn stored_tensors(files: &[PathBuf]) -> Result<BTreeMap<String, Stored>> {
    let mut found = BTreeMap::new();
    for (i, path) in files.iter().enumerate() {
        let bad = |message: String| LearnerError::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        let file = std::fs::File::open(path).map_err(io(path))?;
        let mut len = [0u8; 8];
        file.read_exact_at(&mut len, 0).map_err(io(path))?;
        let n = u64::from_le_bytes(len);
        if n > 100_000_000 {
            return Err(bad(format!("not safetensors: a header of {n} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8).map_err(io(path))?;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let data_start = 8 + n;
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or_default();
            let kind = match dtype {
                "F32" => Kind::Float,
                "BF16" => Kind::BFloat16,
                "F16" => Kind::Half,
                "F64" => Kind::Double,
                other => {
                    return Err(LearnerError::Unsupported {
                        path: path.display().to_string(),
                        message: format!(
                            "tensor `{name}`: element type {other} is not supported; supported: F32, BF16, F16, F64"
                        ),
                    })
                }
            };
            let shape: Option<Vec<i64>> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|dims| dims.iter().filter_map(|d| d.as_i64()).collect());
            let offsets: Option<Vec<u64>> = info
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .map(|o| o.iter().filter_map(|d| d.as_u64()).collect());
            let (Some(shape), Some([start, end])) = (shape, offsets.as_deref()) else {
                return Err(bad(format!("tensor `{name}`: no shape or data_offsets")));
            };
            let bytes = shape.iter().product::<i64>() as u64 * kind.elt_size_in_bytes() as u64;
            if end - start != bytes {
                return Err(bad(format!(
                    "tensor `{name}`: {} bytes for shape {shape:?}",
                    end - start
                )));
            }
            let stored = Stored {
                file: i,
                kind,
                shape,
                start: data_start + start,
                end: data_start + end,
            };
            if found.insert(name.clone(), stored).is_some() {
                return Err(bad(format!("tensor `{name}` is stored in two files")));
            }
        }
    }
    Ok(found)
}

/// Bytes read at once when a tensor is converted on its way in (another element type, or a
/// device other than the CPU).
const PIECE_BYTES: usize = 4 << 20;

/// Read `stored` from `file` into `var`: straight into its memory when it is a contiguous CPU
/// tensor of the stored type, otherwise through a buffer of at most [`PIECE_BYTES`] converted
/// piece by piece. Loading so holds the model and a piece per thread, never a second copy.
fn read_into(file: &std::fs::File, stored: &Stored, var: &Tensor, path: &Path, name: &str) -> Result<()> {
    let elt = stored.kind.elt_size_in_bytes();
    let bytes = (stored.end - stored.start) as usize;
    if var.device() == Device::Cpu && var.kind() == stored.kind && var.is_contiguous() {
        // SAFETY: `var` is a contiguous CPU tensor of `bytes` bytes (same shape and element
        // size as stored, checked by the caller) that nothing else reads meanwhile.
        let dst = unsafe { std::slice::from_raw_parts_mut(var.data_ptr() as *mut u8, bytes) };
        return file.read_exact_at(dst, stored.start).map_err(io(path));
    }
    let flat = var.view([-1]);
    let per_piece = (PIECE_BYTES / elt).max(1);
    let mut buf = vec![0u8; bytes.min(per_piece * elt)];
    let numel = bytes / elt;
    let mut first = 0;
    while first < numel {
        let count = per_piece.min(numel - first);
        let piece = &mut buf[..count * elt];
        file.read_exact_at(piece, stored.start + (first * elt) as u64)
            .map_err(io(path))?;
        let src = Tensor::f_from_data_size(piece, &[count as i64], stored.kind)
            .map_err(torch(format!("reading `{name}`")))?;
        flat.narrow(0, first as i64, count as i64)
            .f_copy_(&src)
            .map_err(torch(format!("copying `{name}`")))?;
        first += count;
    }
    Ok(())
}

/// Tensors an older checkpoint may carry that are computed, not learned: rotary frequency
/// buffers that transformers once saved with Llama checkpoints.
fn derived_buffer(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Copy the tensors of safetensors `files` into the variables of `vs` with the same names,
/// converting the element type (an f32 model loads bf16 weights and the reverse), straight to
/// the variables' device. Each tensor is read from the file into its variable (see
/// `read_into`; a few threads share the reading), so loading needs the model's memory and a
/// 4 MiB piece per reading thread, not a second copy of the checkpoint. Every variable must be
/// present with its shape, and every stored tensor must be a variable
/// ([`LearnerError::Unsupported`] otherwise): the one exception is the `lm_head.weight` some
/// writers store beside a tied embedding, accepted when it equals the embedding, and rotary
/// buffers older transformers saved.
pub fn load_files(vs: &VarStore, files: &[PathBuf], source: &Path) -> Result<()> {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    Matched::new(&vars, files, source)?.read(&vars)
}

/// A checkpoint checked against a model's variables ([`load_files`]' checks), ready to read
/// in parts: ZeRO-3 reads one parameter unit at a time.
pub struct Matched {
    files: Vec<PathBuf>,
    stored: BTreeMap<String, Stored>,
    handles: Vec<std::fs::File>,
}

impl Matched {
    /// Match the weights of a model directory (one file or shards) against `vars`.
    pub fn dir(vars: &[(String, Tensor)], dir: &Path) -> Result<Self> {
        Self::new(vars, &weight_files(dir)?, dir)
    }

    /// Match safetensors `files` against `vars` (name, variable): every variable stored with
    /// its shape, every stored tensor a variable (or an allowed exception).
    pub fn new(vars: &[(String, Tensor)], files: &[PathBuf], source: &Path) -> Result<Self> {
        let unsupported = |path: &Path, message: String| LearnerError::Unsupported {
            path: path.display().to_string(),
            message,
        };
        let stored = stored_tensors(files)?;
        let vars: BTreeMap<&str, &Tensor> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, s) in &stored {
            if vars.contains_key(name.as_str()) || derived_buffer(name) {
                continue;
            }
            let tied_copy = name == "lm_head.weight"
                && stored
                    .get("model.embed_tokens.weight")
                    .is_some_and(|e| same_bytes(files, e, s).unwrap_or(false));
            if !tied_copy {
                return Err(unsupported(
                    &files[s.file],
                    format!(
                        "tensor `{name}` is stored but the model config.json describes has no such parameter; a tensor the model would not use is refused, not dropped"
                    ),
                ));
            }
        }
        let missing: Vec<&&str> = vars.keys().filter(|n| !stored.contains_key(**n)).collect();
        if let Some(first) = missing.first() {
            return Err(unsupported(
                source,
                format!(
                    "tensor `{first}` is missing ({} missing in all): the model config.json describes needs it",
                    missing.len()
                ),
            ));
        }
        if let Some((name, s, var)) = vars
            .iter()
            .filter_map(|(n, v)| Some((n, stored.get(*n)?, v)))
            .find(|(_, s, v)| s.shape != v.size())
        {
            return Err(unsupported(
                &files[s.file],
                format!(
                    "tensor `{name}`: shape {:?}, the model config.json describes expects {:?}",
                    s.shape,
                    var.size()
                ),
            ));
        }
        let handles = files
            .iter()
            .map(|f| std::fs::File::open(f).map_err(io(f)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            files: files.to_vec(),
            stored,
            handles,
        })
    }

    /// Read the stored tensors of `vars` (a part of the matched variables) into them.
    pub fn read(&self, vars: &[(String, Tensor)]) -> Result<()> {
        let found = vars
            .iter()
            .map(|(name, var)| {
                let s = self.stored.get(name).ok_or_else(|| LearnerError::Unsupported {
                    path: self
                        .files
                        .first()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    message: format!("tensor `{name}` is not in the checkpoint"),
                })?;
                Ok((name.clone(), var.shallow_clone(), s))
            })
            .collect::<Result<Vec<_>>>()?;
        read_all(found, &self.files, &self.handles)
    }
}

/// A variable to fill: its name, the variable, and where its tensor is stored.
type Loadable<'a> = (String, Tensor, &'a Stored);

/// Read every `(name, variable, stored)` on a few threads, the tensors dealt out largest first
/// to the lane with the fewest bytes: reading is mostly first touches of fresh memory and
/// copies, which two cores do in about half the time of one.
fn read_all(found: Vec<Loadable<'_>>, files: &[PathBuf], handles: &[std::fs::File]) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut lanes: Vec<(u64, Vec<Loadable>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    let mut found = found;
    found.sort_by_key(|(_, _, s)| std::cmp::Reverse(s.end - s.start));
    for item in found {
        if let Some(lane) = lanes.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lane.0 += item.2.end - item.2.start;
            lane.1.push(item);
        }
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = lanes
            .into_iter()
            .map(|(_, lane)| {
                scope.spawn(move || {
                    tch::no_grad(|| {
                        lane.iter().try_for_each(|(name, var, s)| {
                            read_into(&handles[s.file], s, var, &files[s.file], name)
                        })
                    })
                })
            })
            .collect();
        running.into_iter().try_for_each(|lane| {
            lane.join().unwrap_or(Err(LearnerError::Order(
                "a thread reading the checkpoint panicked",
            )))
        })
    })
}

/// Whether two stored tensors hold the same bytes.
fn same_bytes(files: &[PathBuf], a: &Stored, b: &Stored) -> Result<bool> {
    if a.kind != b.kind || a.shape != b.shape {
        return Ok(false);
    }
    let read = |s: &Stored| -> Result<Vec<u8>> {
        let path = &files[s.file];
        let file = std::fs::File::open(path).map_err(io(path))?;
        let mut bytes = vec![0u8; (s.end - s.start) as usize];
        file.read_exact_at(&mut bytes, s.start).map_err(io(path))?;
        Ok(bytes)
    };
    Ok(read(a)? == read(b)?)
}

/// Write named tensors to a safetensors file.
pub fn write_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    Tensor::write_safetensors(tensors, path).map_err(torch(format!("writing {}", path.display())))
}

/// Read named tensors from a safetensors file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(torch(format!("reading {}", path.display())))
}

/// Every variable of `vs` as a [`WeightChunk`] (CPU bytes) tagged with `version`, in name order.
pub fn export_chunks(vs: &VarStore, version: u64) -> Result<Vec<WeightChunk>> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    vars.into_iter()
        .map(|(name, t)| export_chunk(name, &t, version))
        .collect()
}

/// One tensor as a [`WeightChunk`] (CPU bytes) tagged with `version`.
pub fn export_chunk(name: String, t: &Tensor, version: u64) -> Result<WeightChunk> {
    let dtype = match t.kind() {
        Kind::Float => DType::F32,
        Kind::BFloat16 => DType::Bf16,
        Kind::Half => DType::F16,
        other => {
            return Err(LearnerError::Checkpoint {
                path: name,
                message: format!("unsupported element type {other:?}"),
            })
        }
    };
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let mut data = vec![0u8; t.numel() * dtype.size()];
    t.f_copy_data_u8(&mut data, t.numel())
        .map_err(torch(format!("exporting `{name}`")))?;
    Ok(WeightChunk {
        name,
        dtype,
        shape: t.size(),
        data,
        version,
    })
}
