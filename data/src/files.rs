//! Data files, whatever their format: JSON lines (`.jsonl`), JSON (`.json`: an array of
//! objects, or JSON lines as the hub often stores them) and Parquet (`.parquet`, what the hub
//! stores data sets as). A file is counted first and only the rows a mix selects are decoded,
//! each into a JSON object, so every stage parses one kind of row whatever the format.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::DataError;

/// Extensions of the files a data set can be made of.
pub const DATA_EXTENSIONS: [&str; 3] = ["jsonl", "json", "parquet"];

/// Where a row came from, for error messages: the file and the 1-based line (JSON lines) or
/// row (JSON arrays, Parquet).
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The file.
    pub path: &'a str,
    /// 1-based line or row.
    pub row: usize,
}

impl At<'_> {
    /// An error about `field` of this row.
    pub fn bad(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::Row {
            path: self.path.to_string(),
            line: self.row,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A row as read: its 1-based line or row, and its JSON value (or why it is not JSON).
pub type RowRead = (usize, Result<Value, DataError>);

/// One data file, its rows counted.
#[derive(Debug)]
pub struct RowFile {
    path: PathBuf,
    name: String,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// JSON lines: the text and the byte range and line number of each non-blank line.
    Lines {
        text: String,
        lines: Vec<(usize, usize, usize)>,
    },
    /// A JSON array, parsed.
    Array(Vec<Value>),
    /// A Parquet file with this many rows.
    Parquet(usize),
}

impl RowFile {
    /// Open and count `path`; the format comes from its extension.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let name = path.display().to_string();
        let at = At { path: &name, row: 0 };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let body = match ext {
            "parquet" => Body::Parquet(crate::parquet::count_rows(path).map_err(|m| at.bad("", m))?),
            "jsonl" | "json" => {
                let text = std::fs::read_to_string(path).map_err(|e| at.bad("", e.to_string()))?;
                if ext == "json" && text.trim_start().starts_with('[') {
                    let rows: Vec<Value> = serde_json::from_str(&text)
                        .map_err(|e| at.bad("", format!("not a JSON array of objects: {e}")))?;
                    Body::Array(rows)
                } else {
                    let mut lines = Vec::new();
                    let mut start = 0;
                    for (i, line) in text.split_inclusive('\n').enumerate() {
                        if !line.trim().is_empty() {
                            lines.push((start, start + line.len(), i + 1));
                        }
                        start += line.len();
                    }
                    Body::Lines { text, lines }
                }
            }
            _ => {
                return Err(at.bad(
                    "",
                    format!(
                        "unknown data file type `.{ext}`; rlvr reads {}",
                        DATA_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                    ),
                ))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            name,
            body,
        })
    }

    /// The file's path as error messages print it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rows in the file.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Lines { lines, .. } => lines.len(),
            Body::Array(rows) => rows.len(),
            Body::Parquet(n) => *n,
        }
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `indices` (0-based, in any order, repeats allowed), each as a JSON value with the
    /// 1-based line or row it came from, in the order asked. A line that is not JSON is an
    /// error naming it.
    pub fn rows(&self, indices: &[usize]) -> Result<Vec<RowRead>, DataError> {
        let at = |row| At {
            path: &self.name,
            row,
        };
        Ok(match &self.body {
            Body::Lines { text, lines } => indices
                .iter()
                .map(|&i| {
                    let (start, end, line) = lines[i];
                    let parsed =
                        serde_json::from_str(&text[start..end]).map_err(|e| at(line).bad("", e.to_string()));
                    (line, parsed)
                })
                .collect(),
            Body::Array(rows) => indices.iter().map(|&i| (i + 1, Ok(rows[i].clone()))).collect(),
            Body::Parquet(_) => {
                let values = crate::parquet::read_rows(&self.path, indices).map_err(|m| at(0).bad("", m))?;
                indices.iter().zip(values).map(|(&i, v)| (i + 1, Ok(v))).collect()
            }
        })
    }
}
