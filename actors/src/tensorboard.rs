//! TensorBoard event files: each stage's numeric metrics as scalars in
//! `tensorboard/<stage name>/events.out.tfevents.<seconds>.<host>`, beside `metrics.jsonl`
//! (which stays the primary record). The format's few pieces are written here: TFRecord framing
//! (length, masked CRC-32C of the length, payload, masked CRC-32C of the payload) around
//! `tensorflow.Event` protocol buffers — a `file_version` event first, then one event per record
//! with a `Summary` of `simple_value`s tagged by metric name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::Value;

/// An open event file.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Create a new event file in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
        let name = format!("events.out.tfevents.{}.{}", now.as_secs(), host.trim());
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = Self {
            path,
            file: BufWriter::new(file),
        };
        let mut event = Vec::new();
        put_double(&mut event, 1, now.as_secs_f64());
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every number at the top level of `record` (and one level down, as `outer/inner`) as a
    /// scalar at `step`; strings, arrays and the `step` itself are left out.
    pub fn scalars(&mut self, step: u64, record: &Value) -> Result<()> {
        let mut values = Vec::new();
        if let Value::Object(fields) = record {
            for (key, v) in fields {
                match v {
                    Value::Number(n) if key != "step" => {
                        values.push((key.clone(), n.as_f64().unwrap_or(f64::NAN)))
                    }
                    Value::Object(inner) => values.extend(
                        inner
                            .iter()
                            .filter_map(|(k, v)| Some((format!("{key}/{k}"), v.as_f64()?))),
                    ),
                    _ => {}
                }
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_float(&mut v, 2, value as f32);
            put_bytes(&mut summary, 1, &v);
        }
        self.record(&event(step, 5, &summary))
    }

    /// Tell readers that the run restarted at `step` (a resume): TensorBoard drops the events
    /// at and past it logged before (`SessionLog` START).
    pub fn restart_at(&mut self, step: u64) -> Result<()> {
        let mut session_log = Vec::new();
        put_varint_field(&mut session_log, 1, 1);
        self.record(&event(step, 6, &session_log))
    }

    /// One TFRecord, flushed so a reader (or a crash) sees whole records.
    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc(&len).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc(data).to_le_bytes())?;
        self.file
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// An `Event` now at `step` carrying `payload` as its field `field` (5: a `Summary`, 6: a
/// `SessionLog`).
fn event(step: u64, field: u64, payload: &[u8]) -> Vec<u8> {
    let mut event = Vec::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    put_double(&mut event, 1, now.as_secs_f64());
    put_varint_field(&mut event, 2, step);
    put_bytes(&mut event, field, payload);
    event
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u64, v: f64) {
    put_varint(out, (field << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u64, v: f32) {
    put_varint(out, (field << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// CRC-32C (Castagnoli), bit by bit: event files are small and written once per step.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C of "123456789" is 0xE3069283 (RFC 3720, iSCSI).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn records_frame_their_payload_with_checked_lengths() {
        let dir = std::env::temp_dir().join(format!("rlvr-tb-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(
            3,
            &serde_json::json!({"step": 3, "loss": 0.5, "stage": "rlvr", "sampling": {"rounds": 2}}),
        )
        .unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut at = 0;
        let mut payloads = Vec::new();
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            payloads.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(payloads.len(), 2);
        assert!(payloads[0].windows(13).any(|w| w == b"brain.Event:2"));
        // step 3 as field 2, the two tags, and 0.5 as a little-endian f32.
        assert!(payloads[1].windows(2).any(|w| w == [0x10, 3]));
        assert!(payloads[1].windows(4).any(|w| w == b"loss"));
        assert!(payloads[1].windows(15).any(|w| w == b"sampling/rounds"));
        assert!(payloads[1].windows(4).any(|w| w == 0.5f32.to_le_bytes()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
