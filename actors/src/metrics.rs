//! `metrics.jsonl`: one JSON object per logged step, appended as the run goes so a crash loses
//! nothing already logged; on resume, records past the checkpoint are dropped so the file reads
//! as one uninterrupted run. A stage's handle ([`MetricsLog::for_stage`]) tags each record with
//! the stage's name (`stage_name`; `stage` is its kind) and writes its numbers to TensorBoard
//! event files in `tensorboard/<stage name>/` as well.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::tensorboard::EventWriter;

/// An open `metrics.jsonl`, for the run or for one of its stages.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    stage_name: Option<String>,
    board: Option<Arc<Mutex<EventWriter>>>,
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
            stage_name: None,
            board: None,
        })
    }

    /// The log for stage `name`: its records carry `stage_name` and go to TensorBoard too, in
    /// `tensorboard/<name>/` beside the log (a new event file each time a stage starts).
    pub fn for_stage(&self, name: &str) -> Result<Self> {
        let dir = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("tensorboard")
            .join(name);
        let mut log = Self::open(&self.path)?;
        log.stage_name = Some(name.to_string());
        log.board = Some(Arc::new(Mutex::new(EventWriter::create(&dir)?)));
        Ok(log)
    }

    /// Whether `record` belongs to `stage` (a kind): by its `stage_name` when this is a
    /// stage's log and the record has one, else by its kind.
    fn owns(&self, record: &Value, stage: &str) -> bool {
        match (&self.stage_name, record.get("stage_name").and_then(Value::as_str)) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => record.get("stage").and_then(Value::as_str) == Some(stage),
        }
    }

    /// Drop the records of `stage` (of this stage's name, when it has one) whose `step` is
    /// past `step` (and any lines left half-written by a crash); TensorBoard is told to drop
    /// its events past `step` too.
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
            let same_stage = self.owns(&v, stage);
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
        self.file = Self::open(&self.path)?.file;
        if let Some(board) = &self.board {
            board
                .lock()
                .map_err(|_| anyhow!("TensorBoard writer poisoned"))?
                .restart_at(step + 1)?;
        }
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
            .filter(|r| self.owns(r, stage))
            .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get(key)?.as_f64()?)))
            .collect())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same file and event file (for a stage that logs from its own
    /// thread).
    pub fn reopen(&self) -> Result<Self> {
        let mut log = Self::open(&self.path)?;
        log.stage_name = self.stage_name.clone();
        log.board = self.board.clone();
        Ok(log)
    }

    /// Append one record (with this stage's name), and its numbers to TensorBoard at its step.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        let mut record = record.clone();
        if let (Some(name), Value::Object(fields)) = (&self.stage_name, &mut record) {
            fields.insert("stage_name".into(), Value::String(name.clone()));
        }
        writeln!(self.file, "{record}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        if let (Some(board), Some(step)) = (&self.board, record.get("step").and_then(Value::as_u64)) {
            let mut board = board.lock().map_err(|_| anyhow!("TensorBoard writer poisoned"))?;
            board.scalars(step, &record)?;
        }
        Ok(())
    }
}
