//! The dataset mixer, with open-instruct's semantics (`dataset_mixer_list name amount ...`): an
//! entry takes a count of rows or a fraction of its data set (`floor(fraction × rows)`); a
//! target above the data set's size takes every row as many whole times as fit, and the
//! remainder as a seeded sample without replacement (so does a target below it). Entries are
//! concatenated in order. Where an entry's rows come from is resolved here too: `builtin:NAME`
//! (generated, so only a count makes sense), a local file or directory, or a hub data set.
//!
//! [`MixReport`] says what was resolved — files, revisions, rows available and taken, rows
//! skipped as bad — for the run's log and its saved record.

use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use crate::arith::Split;
use crate::files::{At, RowFile};
use crate::hub::{list_files, split_files, Hub};
use crate::{Builtin, DataError};

/// How much of a data set an entry takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Exactly this many rows.
    Count(u64),
    /// This fraction of the rows (above 1 repeats rows).
    Fraction(f64),
}

/// One data set of a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `builtin:NAME`, a local file or directory, or a hub data set id.
    pub dataset: String,
    /// How much of it.
    pub take: Take,
    /// The split (a file's name or directory says which files hold it).
    pub split: String,
    /// A hub revision (branch, tag or commit); `main` when absent.
    pub revision: Option<String>,
}

/// What to do with a row that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRows {
    /// Stop, naming the file, row and field.
    #[default]
    Fail,
    /// Leave it out and count it in the report.
    Skip,
}

/// A mix as resolved: per entry where its rows came from and how many were taken.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// The seed of the row selection.
    pub seed: u64,
    /// Rows of the mix, all entries together.
    pub rows: u64,
    /// Each entry, in order.
    pub entries: Vec<EntryReport>,
}

/// One resolved entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    /// The entry's data set, as the recipe names it.
    pub dataset: String,
    /// Its split.
    pub split: String,
    /// `builtin`, `local` or `hub`.
    pub source: &'static str,
    /// The hub commit the files were read at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The files read.
    pub files: Vec<String>,
    /// Rows the data set has (`None` for a generated one).
    pub available: Option<u64>,
    /// Rows the entry asked for.
    pub target: u64,
    /// Rows taken.
    pub taken: u64,
    /// Bad rows left out ([`BadRows::Skip`]).
    pub skipped: u64,
    /// Rows the stage's reader filtered out (too long for the stage, for one).
    pub filtered: u64,
}

impl MixReport {
    /// One line per entry, for logs.
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let available = e
                    .available
                    .map_or("generated".to_string(), |n| format!("{n} rows"));
                let mut line = format!(
                    "{} [{}] ({}, {available}): {} rows",
                    e.dataset, e.split, e.source, e.taken
                );
                if e.available.is_some_and(|n| e.target > n) {
                    line.push_str(&format!(
                        " (upsampled x{:.2})",
                        e.target as f64 / e.available.unwrap_or(1) as f64
                    ));
                }
                if e.filtered > 0 {
                    line.push_str(&format!(", {} filtered out", e.filtered));
                }
                if e.skipped > 0 {
                    line.push_str(&format!(", {} bad rows skipped", e.skipped));
                }
                if let Some(c) = &e.commit {
                    line.push_str(&format!(", commit {}", &c[..c.len().min(12)]));
                }
                line
            })
            .collect()
    }
}

/// How a mix's rows are read.
#[derive(Debug, Clone)]
pub struct MixOptions {
    /// Seed of the row selection.
    pub seed: u64,
    /// What to do with bad rows.
    pub bad_rows: BadRows,
    /// The hub (ids that are not local paths).
    pub hub: Hub,
}

/// Rows of a mix, each converted by the stage's reader.
pub struct Mixed<T> {
    /// The rows, entries concatenated in order.
    pub rows: Vec<T>,
    /// What was resolved.
    pub report: MixReport,
}

/// Indices of `target` rows out of `len`, open-instruct's way: every row `target / len` whole
/// times in order, then `target % len` distinct rows drawn with `seed`.
pub fn select(len: usize, target: usize, seed: u64) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    let mut out: Vec<usize> = (0..target / len).flat_map(|_| 0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    out.extend(sample(&mut rng, len, target % len));
    out
}

/// The files of a local entry: the file itself, or a directory's files of the split.
fn local_files(path: &Path, split: &str) -> Result<Vec<PathBuf>, DataError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut names = Vec::new();
    list_files(path, "", &mut names).map_err(|e| DataError::Row {
        path: path.display().to_string(),
        line: 0,
        field: String::new(),
        message: e.to_string(),
    })?;
    let picked = split_files(&names, split).map_err(|message| DataError::Row {
        path: path.display().to_string(),
        line: 0,
        field: String::new(),
        message,
    })?;
    Ok(picked.iter().map(|n| path.join(n)).collect())
}

/// Whether a name can be a hub repository id (`name` or `org/name`, optionally `@revision`)
/// rather than a path.
pub fn is_hub_id(name: &str) -> bool {
    let name = name.split_once('@').map_or(name, |(id, _)| id);
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !crate::files::DATA_EXTENSIONS
            .iter()
            .any(|e| name.ends_with(&format!(".{e}")))
}

/// Where an entry's rows come from.
enum Origin {
    /// Generated by index: rows `0..count`.
    Generated(Builtin, u64),
    /// Compiled-in rows.
    Fixed(Vec<Value>),
    /// Data files, local or from the hub.
    Files {
        source: &'static str,
        commit: Option<String>,
        paths: Vec<PathBuf>,
    },
}

fn resolve(i: usize, entry: &Entry, hub: &Hub) -> Result<Origin, DataError> {
    if entry.dataset.starts_with("builtin:") {
        let builtin = Builtin::parse(&entry.dataset)?;
        if let Some(rows) = builtin.fixed_rows() {
            return Ok(Origin::Fixed(rows));
        }
        return match entry.take {
            Take::Count(n) => Ok(Origin::Generated(builtin, n)),
            Take::Fraction(_) => Err(DataError::Mix {
                entry: i,
                message: format!(
                    "`{}` is generated: give a row count, not a fraction",
                    entry.dataset
                ),
            }),
        };
    }
    let local = Path::new(&entry.dataset);
    if local.exists() {
        let paths = local_files(local, &entry.split)?;
        return Ok(Origin::Files {
            source: "local",
            commit: None,
            paths,
        });
    }
    if !is_hub_id(&entry.dataset) {
        return Err(DataError::Mix {
            entry: i,
            message: format!(
                "`{}` is neither a file, a directory, nor a hub data set id",
                entry.dataset
            ),
        });
    }
    // `org/name@revision` names a revision too; the entry's own `revision` wins.
    let (id, at) = match entry.dataset.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (entry.dataset.as_str(), None),
    };
    let (commit, paths) = hub.dataset_files(id, entry.revision.as_deref().or(at), &entry.split)?;
    Ok(Origin::Files {
        source: "hub",
        commit: Some(commit),
        paths,
    })
}

/// Read a mix. A generated built-in entry gives its rows `0..count` of its split through
/// `generated` (`Ok(None)`: the data set holds nothing this stage reads); the selected rows of
/// files and compiled-in samples go through `read` with their origin, which may filter a row
/// out (`Ok(None)`, counted). Rows that `read` refuses stop the load, or are skipped and
/// counted with [`BadRows::Skip`].
pub fn load<T>(
    entries: &[Entry],
    options: &MixOptions,
    generated: impl Fn(Builtin, u64, Split) -> Result<Option<T>, DataError>,
    read: impl Fn(&Value, At) -> Result<Option<T>, DataError>,
) -> Result<Mixed<T>, DataError> {
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let seed = options.seed.wrapping_add(i as u64);
        let before = rows.len();
        let mut report = EntryReport {
            dataset: entry.dataset.clone(),
            split: entry.split.clone(),
            source: "builtin",
            commit: None,
            files: Vec::new(),
            available: None,
            target: 0,
            taken: 0,
            skipped: 0,
            filtered: 0,
        };
        let mut keep = |result: Result<Option<T>, DataError>, report: &mut EntryReport| match result {
            Ok(Some(row)) => {
                rows.push(row);
                Ok(())
            }
            Ok(None) => {
                report.filtered += 1;
                Ok(())
            }
            Err(e) if options.bad_rows == BadRows::Skip => {
                report.skipped += 1;
                if report.skipped <= 3 {
                    tracing::warn!("skipping bad row: {e}");
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        match resolve(i, entry, &options.hub)? {
            Origin::Generated(builtin, n) => {
                let split = if entry.split == "test" {
                    Split::Test
                } else {
                    Split::Train
                };
                report.target = n;
                for index in 0..n {
                    let row = generated(builtin, index, split)?.ok_or_else(|| DataError::Mix {
                        entry: i,
                        message: format!("`{}` holds no rows of the kind this stage reads", entry.dataset),
                    })?;
                    keep(Ok(Some(row)), &mut report)?;
                }
            }
            Origin::Fixed(fixed) => {
                report.available = Some(fixed.len() as u64);
                report.target = target(entry, fixed.len()) as u64;
                for index in select(fixed.len(), report.target as usize, seed) {
                    let at = At {
                        path: &entry.dataset,
                        row: index + 1,
                    };
                    keep(read(&fixed[index], at), &mut report)?;
                }
            }
            Origin::Files {
                source,
                commit,
                paths,
            } => {
                let files = paths
                    .iter()
                    .map(|p| RowFile::open(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let available: usize = files.iter().map(RowFile::len).sum();
                let picked = select(available, target(entry, available), seed);
                // Read file by file, then put the rows back in selection order.
                let mut order: Vec<(usize, usize)> =
                    picked.iter().enumerate().map(|(slot, &g)| (g, slot)).collect();
                order.sort_unstable();
                let mut slots: Vec<Option<Result<Option<T>, DataError>>> =
                    (0..picked.len()).map(|_| None).collect();
                let mut offset = 0;
                for file in &files {
                    let end = offset + file.len();
                    let lo = order.partition_point(|&(g, _)| g < offset);
                    let hi = order.partition_point(|&(g, _)| g < end);
                    let indices: Vec<usize> = order[lo..hi].iter().map(|&(g, _)| g - offset).collect();
                    for (&(_, slot), (row, value)) in order[lo..hi].iter().zip(file.rows(&indices)?) {
                        let at = At {
                            path: file.name(),
                            row,
                        };
                        slots[slot] = Some(value.and_then(|v| read(&v, at)));
                    }
                    offset = end;
                }
                for result in slots.into_iter().flatten() {
                    keep(result, &mut report)?;
                }
                report.source = source;
                report.commit = commit;
                report.files = paths.iter().map(|p| p.display().to_string()).collect();
                report.available = Some(available as u64);
                report.target = picked.len() as u64;
            }
        }
        report.taken = (rows.len() - before) as u64;
        reports.push(report);
    }
    let report = MixReport {
        seed: options.seed,
        rows: rows.len() as u64,
        entries: reports,
    };
    Ok(Mixed { rows, report })
}

/// Rows an entry asks of a data set of `available` rows.
fn target(entry: &Entry, available: usize) -> usize {
    match entry.take {
        Take::Count(n) => n as usize,
        Take::Fraction(f) => (f * available as f64).floor() as usize,
    }
}
