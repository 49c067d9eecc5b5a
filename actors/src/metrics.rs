//! `metrics.jsonl`: one JSON object per logged step, appended as the run goes so a crash loses
//! nothing already logged; on resume, records past the checkpoint are dropped so the file reads
//! as one uninterrupted run.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// An open `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open (creating) the log for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Drop the records of `stage` whose `step` is past `step` (and any stage-less lines left
    /// half-written by a crash).
    pub fn truncate_after(&mut self, stage: &str, step: u64) -> Result<()> {
        let reader = BufReader::new(
            File::open(&self.path).with_context(|| format!("reading {}", self.path.display()))?,
        );
        let mut kept = Vec::new();
        for line in reader.lines() {
            let line = line?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let same_stage = v.get("stage").and_then(Value::as_str) == Some(stage);
            let past = v.get("step").and_then(Value::as_u64).is_some_and(|s| s > step);
            if !(same_stage && past) {
                kept.push(line);
            }
        }
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(&self.path, text).with_context(|| format!("rewriting {}", self.path.display()))?;
        *self = Self::open(&self.path.clone())?;
        Ok(())
    }

    /// `(step, value)` of each record of `stage` that holds a number under `key`, in file order
    /// (on resume: what the run logged before its checkpoint).
    pub fn series(&self, stage: &str, key: &str) -> Result<Vec<(u64, f64)>> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r.get("stage").and_then(Value::as_str) == Some(stage))
            .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get(key)?.as_f64()?)))
            .collect())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same file (for a stage that logs from its own thread).
    pub fn reopen(&self) -> Result<Self> {
        Self::open(&self.path)
    }

    /// Append one record.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}
