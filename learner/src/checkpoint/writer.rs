//! Writing a model unit by unit into Hugging Face's sharded layout ([`ShardedWriter`]), as a
//! ZeRO-3 rank gathers one unit at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::{io, torch};
use crate::error::{LearnerError, Result};

/// The most bytes of tensors one safetensors file of a sharded checkpoint holds (Hugging
/// Face's `max_shard_size` default, 5 GB).
pub const SHARD_BYTES: u64 = 5_000_000_000;

/// A model written unit by unit into Hugging Face's sharded layout, as a ZeRO-3 rank gathers
/// one unit at a time: consecutive units fill `model-0000i-of-0000N.safetensors` files of at
/// most 5 GB (`SHARD_BYTES`; a unit is never split), indexed by `model.safetensors.index.json`; one
/// file is plain `model.safetensors`. The writer holds one file's tensors at a time.
pub struct ShardedWriter {
    dir: PathBuf,
    /// The file each unit goes to.
    file_of_unit: Vec<usize>,
    files: usize,
    /// Host copies of the current file's tensors.
    pending: Vec<(String, Tensor)>,
    weight_map: BTreeMap<String, String>,
    total_bytes: u64,
}

impl ShardedWriter {
    /// Start writing into `dir` (its `config.json` now) a model whose units hold `unit_bytes`.
    pub fn new(dir: &Path, config: &serde_json::Value, unit_bytes: &[u64]) -> Result<Self> {
        Self::with_shard_bytes(dir, config, unit_bytes, SHARD_BYTES)
    }

    /// [`ShardedWriter::new`] with files of at most `shard_bytes`.
    pub fn with_shard_bytes(
        dir: &Path,
        config: &serde_json::Value,
        unit_bytes: &[u64],
        shard_bytes: u64,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cfg_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(config).unwrap_or_default();
        std::fs::write(&cfg_path, json).map_err(io(&cfg_path))?;
        let (mut file_of_unit, mut file, mut in_file) = (Vec::with_capacity(unit_bytes.len()), 0, 0u64);
        for &bytes in unit_bytes {
            if in_file > 0 && in_file + bytes > shard_bytes {
                file += 1;
                in_file = 0;
            }
            in_file += bytes;
            file_of_unit.push(file);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files: file + 1,
            file_of_unit,
            pending: Vec::new(),
            weight_map: BTreeMap::new(),
            total_bytes: unit_bytes.iter().sum(),
        })
    }

    fn file_name(&self, file: usize) -> String {
        match self.files {
            1 => "model.safetensors".to_string(),
            n => format!("model-{:05}-of-{n:05}.safetensors", file + 1),
        }
    }

    /// Add unit `unit`'s named tensors (copied to the host); a file is written when its last
    /// unit is in.
    pub fn add_unit(&mut self, unit: usize, names: &[String], tensors: &[Tensor]) -> Result<()> {
        let file = *self
            .file_of_unit
            .get(unit)
            .ok_or(LearnerError::Order("a unit the writer was not told of"))?;
        for (name, t) in names.iter().zip(tensors) {
            self.pending
                .push((name.clone(), t.detach().to_device(Device::Cpu).copy()));
            self.weight_map.insert(name.clone(), self.file_name(file));
        }
        if self.file_of_unit.get(unit + 1) != Some(&file) {
            let path = self.dir.join(self.file_name(file));
            self.pending.sort_by(|a, b| a.0.cmp(&b.0));
            Tensor::write_safetensors(&self.pending, &path)
                .map_err(torch(format!("writing {}", path.display())))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Write the index (when there is more than one file).
    pub fn finish(self) -> Result<()> {
        if self.files == 1 {
            return Ok(());
        }
        let index = serde_json::json!({
            "metadata": {"total_size": self.total_bytes},
            "weight_map": self.weight_map,
        });
        let path = self.dir.join("model.safetensors.index.json");
        std::fs::write(&path, serde_json::to_string_pretty(&index).unwrap_or_default()).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{load_dir, weight_files};
    use tch::nn::VarStore;
    use tch::Kind;

    /// Units written one at a time into files of at most 100 bytes: one file per unit here,
    /// an index naming each tensor's file, and the directory loads back whole.
    #[test]
    fn a_model_written_unit_by_unit_loads_back_from_its_shards() {
        let dir = std::env::temp_dir().join(format!("rlvr-sharded-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let units: Vec<Vec<(String, Tensor)>> = (0..3)
            .map(|u| {
                (0..2)
                    .map(|i| {
                        (
                            format!("w{u}_{i}"),
                            Tensor::arange(12, (Kind::Float, Device::Cpu)) * (u * 2 + i) as f64,
                        )
                    })
                    .collect()
            })
            .collect();
        let bytes: Vec<u64> = units
            .iter()
            .map(|u| u.iter().map(|(_, t)| 4 * t.numel() as u64).sum())
            .collect();
        let mut writer = ShardedWriter::with_shard_bytes(&dir, &serde_json::json!({}), &bytes, 100).unwrap();
        for (i, unit) in units.iter().enumerate() {
            let (names, tensors): (Vec<String>, Vec<Tensor>) =
                unit.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).unzip();
            writer.add_unit(i, &names, &tensors).unwrap();
        }
        writer.finish().unwrap();
        let files = weight_files(&dir).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files[2].ends_with("model-00003-of-00003.safetensors"));
        let vs = VarStore::new(Device::Cpu);
        for (name, _) in units.iter().flatten() {
            let _ = vs.root().var(name, &[12], tch::nn::Init::Const(0.0));
        }
        load_dir(&vs, &dir).unwrap();
        let loaded = vs.variables();
        for (name, t) in units.iter().flatten() {
            assert!(loaded[name].equal(t), "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
