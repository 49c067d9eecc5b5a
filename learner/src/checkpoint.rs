//! Hugging Face checkpoint files: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`; plus the training state rlvr adds for exact resume
//! (`optimizer.safetensors`, `trainer_state.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rlvr_core::{DType, WeightChunk};
use safetensors::{Dtype, SafeTensors};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{LearnerError, Result};
use crate::llama::Config;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LearnerError + '_ {
    move |source| LearnerError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn torch(context: String) -> impl FnOnce(tch::TchError) -> LearnerError {
    move |source| LearnerError::Torch { context, source }
}

/// Read `config.json` from a model directory.
pub fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Config::from_hf_json(&text).map_err(|e| LearnerError::Checkpoint {
        path: path.display().to_string(),
        message: format!("line {}: {e}", e.line()),
    })
}

/// Write `config.json` and `model.safetensors` (every variable of `vs`, by name) into `dir`.
pub fn save_model(vs: &VarStore, config: &Config, dir: &Path) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let tensors: Vec<(String, Tensor)> = vars.into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    write_model(dir, &config.to_hf_json(), &tensors)
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

/// Copy the tensors of safetensors `files` into the variables of `vs` with the same names,
/// converting the element type (an f32 model loads bf16 weights and the reverse). The files are
/// memory-mapped and read one tensor at a time, so loading needs the model's memory and one
/// tensor more, not a second copy of the checkpoint. Every variable must be present with its
/// shape; a checkpoint's extra tensors (`lm_head.weight` of a tied model) are ignored.
pub fn load_files(vs: &VarStore, files: &[PathBuf], source: &Path) -> Result<()> {
    let err = |path: &Path, message: String| LearnerError::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    let maps = files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(f).map_err(io(f))?;
            // SAFETY: the map is read-only and lives only while loading; a checkpoint rewritten
            // by another process meanwhile would be read torn, as with any reader.
            unsafe { memmap2::Mmap::map(&file) }.map_err(io(f))
        })
        .collect::<Result<Vec<_>>>()?;
    let parsed = files
        .iter()
        .zip(&maps)
        .map(|(f, m)| SafeTensors::deserialize(m).map_err(|e| err(f, format!("not safetensors: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let found = files
                .iter()
                .zip(&parsed)
                .find_map(|(f, st)| st.tensor(&name).ok().map(|v| (f, v)));
            let Some((file, view)) = found else {
                return Err(err(source, format!("tensor `{name}` is missing")));
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(err(
                    file,
                    format!(
                        "tensor `{name}`: shape {shape:?}, the model expects {:?}",
                        var.size()
                    ),
                ));
            }
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::BF16 => Kind::BFloat16,
                Dtype::F16 => Kind::Half,
                Dtype::F64 => Kind::Double,
                other => {
                    return Err(err(
                        file,
                        format!("tensor `{name}`: unsupported element type {other:?}"),
                    ))
                }
            };
            let t = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(torch(format!("reading `{name}`")))?;
            var.f_copy_(&t).map_err(torch(format!("copying `{name}`")))?;
        }
        Ok(())
    })
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
        .map(|(name, t)| {
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
        })
        .collect()
}
