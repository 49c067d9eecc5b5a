//! The Hugging Face hub: data sets and models by id and revision, through the `hf-hub` crate,
//! cached in the standard hub cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`) so that Python tools and rlvr share downloads. `HF_TOKEN` (else
//! the token file `huggingface-cli login` writes) authenticates; `HF_HUB_OFFLINE=1` reads the
//! cache only; `HF_ENDPOINT` points at a mirror. When the hub cannot be reached, files already
//! in the cache are used, as `huggingface_hub` does.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::files::DATA_EXTENSIONS;
use crate::DataError;

/// Files a model directory needs (those present on the hub are fetched).
const MODEL_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
];

/// Access to the hub and its local cache.
#[derive(Debug, Clone)]
pub struct Hub {
    cache: PathBuf,
    token: Option<String>,
    offline: bool,
    endpoint: Option<String>,
}

impl Hub {
    /// Settings from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Settings from `var` (the environment's variables by name), for callers that hold their
    /// own environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN")
            .filter(|t| !t.trim().is_empty())
            .or_else(|| std::fs::read_to_string(home.join("token")).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            cache,
            token,
            offline,
            endpoint: var("HF_ENDPOINT"),
        }
    }

    /// The hub cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Whether only the cache is read.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// The files of split `split` of data set `id` at `revision` (default `main`), downloaded
    /// into the cache when missing: the revision's commit and the local paths.
    pub fn dataset_files(
        &self,
        id: &str,
        revision: Option<&str>,
        split: &str,
    ) -> Result<(String, Vec<PathBuf>), DataError> {
        let repo = self.repo(id, RepoType::Dataset, revision);
        self.fetch(id, &repo, |names| split_files(names, split))
    }

    /// A local directory holding model `id` at `revision`: its configuration, tokenizer and
    /// safetensors weights, downloaded into the cache when missing.
    pub fn model_dir(&self, id: &str, revision: Option<&str>) -> Result<PathBuf, DataError> {
        let repo = self.repo(id, RepoType::Model, revision);
        let (_, files) = self.fetch(id, &repo, model_files)?;
        files
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "config.json"))
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .ok_or_else(|| hub_error(id, "the model has no config.json".into()))
    }

    /// A local directory holding the tokenizer files of model `id` at `revision`
    /// (`tokenizer.json` with the configs beside it), without its weights: what a look at the
    /// data needs.
    pub fn tokenizer_dir(&self, id: &str, revision: Option<&str>) -> Result<PathBuf, DataError> {
        let repo = self.repo(id, RepoType::Model, revision);
        let (_, files) = self.fetch(id, &repo, tokenizer_files)?;
        files
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .ok_or_else(|| hub_error(id, "the model has no tokenizer.json".into()))
    }

    fn repo(&self, id: &str, kind: RepoType, revision: Option<&str>) -> Repo {
        Repo::with_revision(id.to_string(), kind, revision.unwrap_or("main").to_string())
    }

    /// The files `pick` chooses among the repository's, from the hub (unless offline) or else
    /// from the cache.
    fn fetch(
        &self,
        id: &str,
        repo: &Repo,
        pick: impl Fn(&[String]) -> Result<Vec<String>, String>,
    ) -> Result<(String, Vec<PathBuf>), DataError> {
        let online = if self.offline {
            Err("HF_HUB_OFFLINE is set".to_string())
        } else {
            self.download(repo, &pick)
        };
        match online {
            Ok(found) => Ok(found),
            Err(online) => self.cached(repo, &pick).map_err(|cached| {
                hub_error(
                    id,
                    format!(
                        "not downloaded ({online}) and not in the cache {} ({cached})",
                        self.cache.display()
                    ),
                )
            }),
        }
    }

    fn download(
        &self,
        repo: &Repo,
        pick: &impl Fn(&[String]) -> Result<Vec<String>, String>,
    ) -> Result<(String, Vec<PathBuf>), String> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache.clone()))
            .with_token(self.token.clone())
            .with_progress(true);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let api = builder.build().map_err(|e| e.to_string())?;
        let remote = api.repo(repo.clone());
        let info = remote.info().map_err(|e| e.to_string())?;
        let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let paths = pick(&names)?
            .iter()
            .map(|name| remote.get(name).map_err(|e| format!("{name}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok((info.sha, paths))
    }

    /// The cached snapshot of `repo`: `refs/REVISION` names the commit (or the revision is
    /// the commit), whose files lie under `snapshots/COMMIT/`.
    fn cached(
        &self,
        repo: &Repo,
        pick: &impl Fn(&[String]) -> Result<Vec<String>, String>,
    ) -> Result<(String, Vec<PathBuf>), String> {
        let root = self.cache.join(repo.folder_name());
        let revision = repo.revision();
        let commit = std::fs::read_to_string(root.join("refs").join(revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        let snapshot = root.join("snapshots").join(&commit);
        if !snapshot.is_dir() {
            return Err(format!("no snapshot for revision `{revision}`"));
        }
        let mut names = Vec::new();
        list_files(&snapshot, "", &mut names).map_err(|e| e.to_string())?;
        let paths = pick(&names)?.iter().map(|n| snapshot.join(n)).collect();
        Ok((commit, paths))
    }
}

fn hub_error(id: &str, message: String) -> DataError {
    DataError::Hub {
        id: id.to_string(),
        message,
    }
}

/// Relative paths of the files under `dir`, hidden entries skipped, sorted.
pub(crate) fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // Snapshot entries are symbolic links into `blobs/`: follow them.
        if entry.path().is_dir() {
            list_files(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    out.sort();
    Ok(())
}

/// A model repository's tokenizer and the configs that name its special tokens.
fn tokenizer_files(names: &[String]) -> Result<Vec<String>, String> {
    if !names.iter().any(|n| n == "tokenizer.json") {
        return Err("the repository has no tokenizer.json".into());
    }
    let wanted = [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    Ok(wanted
        .iter()
        .filter(|w| names.iter().any(|n| n == *w))
        .map(|w| w.to_string())
        .collect())
}

/// The files of a model repository rlvr loads: configuration, tokenizer and safetensors
/// weights (one file, or the shards an index names).
fn model_files(names: &[String]) -> Result<Vec<String>, String> {
    let mut picked: Vec<String> = names
        .iter()
        .filter(|n| MODEL_FILES.contains(&n.as_str()) || (n.ends_with(".safetensors") && !n.contains('/')))
        .cloned()
        .collect();
    picked.sort();
    if !picked.iter().any(|n| n == "config.json") {
        return Err("the repository has no config.json".into());
    }
    if !picked.iter().any(|n| n.ends_with(".safetensors")) {
        return Err("the repository has no .safetensors weights".into());
    }
    Ok(picked)
}

/// The data files of split `split` among a data set repository's files, by the hub's
/// conventions: a file named after the split (`test.jsonl`, `data/train-00000-of-00002.parquet`,
/// `train_prefs-….parquet`), or in a directory named after it; a repository whose data files
/// name no split at all is all `train`.
pub fn split_files(names: &[String], split: &str) -> Result<Vec<String>, String> {
    let data: Vec<&String> = names
        .iter()
        .filter(|n| {
            let ext = Path::new(n.as_str())
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            DATA_EXTENSIONS.contains(&ext) && !n.split('/').any(|part| part.starts_with('.'))
        })
        .collect();
    let names_split = |path: &str, split: &str| {
        let mut parts = path.split('/').rev();
        let file = parts.next().unwrap_or("");
        let stem = file.split('.').next().unwrap_or("");
        stem == split
            || stem.starts_with(&format!("{split}-"))
            || stem.ends_with(&format!("-{split}"))
            || stem.contains(&format!("-{split}-"))
            || parts.any(|dir| dir == split)
    };
    let picked: Vec<String> = data
        .iter()
        .filter(|n| names_split(n, split))
        .map(|n| n.to_string())
        .collect();
    if !picked.is_empty() {
        return Ok(picked);
    }
    const SPLITS: [&str; 4] = ["train", "test", "validation", "dev"];
    let unsplit = data.iter().all(|n| !SPLITS.iter().any(|s| names_split(n, s)));
    if split == "train" && unsplit && !data.is_empty() {
        return Ok(data.iter().map(|n| n.to_string()).collect());
    }
    let shown: Vec<&str> = data.iter().take(12).map(|n| n.as_str()).collect();
    Err(if data.is_empty() {
        format!(
            "no data files ({}) in the repository",
            DATA_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
        )
    } else {
        format!("no files of split `{split}` among {}", shown.join(", "))
    })
}
