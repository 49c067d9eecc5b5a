//! Hugging Face checkpoint files: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`; plus the training state rlvr adds for exact resume
//! (`optimizer.safetensors`, `trainer_state.json`).

use std::collections::BTreeMap;
use std::path::Path;

use rlvr_core::{DType, WeightChunk};
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

/// Every tensor of a model directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
pub fn read_weights(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Tensor::read_safetensors(&single).map_err(torch(format!("reading {}", single.display())));
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
    let mut out = Vec::new();
    for shard in shards {
        let path = dir.join(shard);
        out.extend(Tensor::read_safetensors(&path).map_err(torch(format!("reading {}", path.display())))?);
    }
    Ok(out)
}

/// Copy `tensors` into the variables of `vs` with the same names. Every variable must be
/// present with its shape; a checkpoint's extra `lm_head.weight` is accepted for tied models.
pub fn load_into(vs: &VarStore, tensors: &[(String, Tensor)], source: &Path) -> Result<()> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let err = |message: String| LearnerError::Checkpoint {
        path: source.display().to_string(),
        message,
    };
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let t = by_name
                .get(name.as_str())
                .ok_or_else(|| err(format!("tensor `{name}` is missing")))?;
            if t.size() != var.size() {
                return Err(err(format!(
                    "tensor `{name}`: shape {:?}, the model expects {:?}",
                    t.size(),
                    var.size()
                )));
            }
            var.f_copy_(t).map_err(torch(format!("copying `{name}`")))?;
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
