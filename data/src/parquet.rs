//! Parquet rows as JSON objects, through the `parquet` crate's record reader: nested lists and
//! structs (a `messages` column is `list<struct<role, content>>`) become arrays and objects.
//! Row groups that hold no wanted row are not decoded.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

fn open(path: &Path) -> Result<SerializedFileReader<File>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    SerializedFileReader::new(file).map_err(|e| format!("not a readable Parquet file: {e}"))
}

/// Rows in the file, from its footer.
pub(crate) fn count_rows(path: &Path) -> Result<usize, String> {
    Ok(open(path)?.metadata().file_metadata().num_rows().max(0) as usize)
}

/// Rows `indices` (0-based, repeats allowed) as JSON objects, in the order asked.
pub(crate) fn read_rows(path: &Path, indices: &[usize]) -> Result<Vec<Value>, String> {
    let reader = open(path)?;
    let mut wanted: Vec<usize> = indices.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found: HashMap<usize, Value> = HashMap::with_capacity(wanted.len());
    let mut first = 0usize;
    let mut next = wanted.iter().peekable();
    for g in 0..reader.num_row_groups() {
        let rows = reader.metadata().row_group(g).num_rows().max(0) as usize;
        let end = first + rows;
        if next.peek().is_some_and(|&&i| i < end) {
            let group = reader
                .get_row_group(g)
                .map_err(|e| format!("row group {g}: {e}"))?;
            let iter = group
                .get_row_iter(None)
                .map_err(|e| format!("row group {g}: {e}"))?;
            for (offset, row) in iter.enumerate() {
                let index = first + offset;
                if next.peek() == Some(&&index) {
                    let row = row.map_err(|e| format!("row {}: {e}", index + 1))?;
                    found.insert(index, row.to_json_value());
                    next.next();
                }
                if next.peek().is_none_or(|&&i| i >= end) {
                    break;
                }
            }
        }
        first = end;
    }
    indices
        .iter()
        .map(|i| {
            found
                .get(i)
                .cloned()
                .ok_or_else(|| format!("row {} is past the end ({first} rows)", i + 1))
        })
        .collect()
}
