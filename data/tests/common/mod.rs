//! Helpers shared by the data tests.

use std::path::Path;

use rlvr_data::{At, DataError, RowFile};

/// Every row of `path`, in file order, through `read`.
pub fn read_all<T>(
    path: &Path,
    read: impl Fn(&serde_json::Value, At<'_>) -> Result<T, DataError>,
) -> Result<Vec<T>, DataError> {
    let file = RowFile::open(path)?;
    let all: Vec<usize> = (0..file.len()).collect();
    file.rows(&all)?
        .into_iter()
        .map(|(row, value)| {
            value.and_then(|v| {
                read(
                    &v,
                    At {
                        path: file.name(),
                        row,
                    },
                )
            })
        })
        .collect()
}
