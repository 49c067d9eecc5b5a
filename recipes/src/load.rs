//! Loading a recipe: find it (catalogue name or path), follow its one `extends`, apply
//! `--set key=value` overrides through the same typed path, and check what a complete recipe
//! must have.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::catalog;
use crate::error::{RecipeError, Result};
use crate::spec::{Amount, Recipe, StageKind};

/// A recipe ready to run: one stage, or a pipeline of stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resolved {
    /// A single stage.
    Stage(Box<Recipe>),
    /// Stages run in order, each the output of the one before.
    Pipeline(Pipeline),
}

/// A pipeline with every stage resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// One line.
    pub description: String,
    /// Resolved stages in run order.
    pub stages: Vec<Recipe>,
}

impl Resolved {
    /// The recipe's name.
    pub fn name(&self) -> &str {
        match self {
            Resolved::Stage(r) => &r.name,
            Resolved::Pipeline(p) => &p.name,
        }
    }

    /// The stages in run order (one for a stage recipe).
    pub fn stages(&self) -> Vec<&Recipe> {
        match self {
            Resolved::Stage(r) => vec![r.as_ref()],
            Resolved::Pipeline(p) => p.stages.iter().collect(),
        }
    }

    /// The resolved recipe as pretty TOML (what runs save as `recipe.resolved.toml`).
    pub fn to_toml(&self) -> String {
        // Serialising plain structs of strings, numbers, tables and arrays cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Where a recipe's text came from, for error messages and resolving `extends`.
#[derive(Debug, Clone)]
enum Source {
    Catalog(String),
    File(PathBuf),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Catalog(name) => format!("recipes/catalog/{name}.toml"),
            Source::File(p) => p.display().to_string(),
        }
    }

    fn read(&self) -> Result<String> {
        match self {
            Source::Catalog(name) => catalog::text(name)
                .map(str::to_string)
                .ok_or_else(|| unknown(name)),
            Source::File(p) => std::fs::read_to_string(p).map_err(|source| RecipeError::Io {
                path: p.clone(),
                source,
            }),
        }
    }

    /// The parent named by `extends`: a file beside this one when it exists, else the catalogue.
    fn parent(&self, name: &str) -> Result<Source> {
        if let Source::File(p) = self {
            let dir = p.parent().unwrap_or(Path::new("."));
            for candidate in [dir.join(name), dir.join(format!("{name}.toml"))] {
                if candidate.is_file() {
                    return Ok(Source::File(candidate));
                }
            }
        }
        if catalog::text(name).is_some() {
            Ok(Source::Catalog(name.to_string()))
        } else {
            Err(unknown(name))
        }
    }
}

fn unknown(name: &str) -> RecipeError {
    RecipeError::UnknownRecipe {
        name: name.to_string(),
        known: catalog::names().iter().map(|s| s.to_string()).collect(),
    }
}

/// Load a recipe by catalogue name or by path to a `.toml` file, then apply `--set` overrides.
///
/// For a pipeline, an override whose first key segment is a stage kind (`sft.train.seed=1`)
/// or a stage's name applies to that stage only; any other override applies to every stage.
pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Resolved> {
    let source = if name_or_path.ends_with(".toml") || Path::new(name_or_path).is_file() {
        Source::File(PathBuf::from(name_or_path))
    } else {
        Source::Catalog(name_or_path.to_string())
    };
    let table = load_table(&source, &mut Vec::new())?;
    let recipe = to_recipe(&table, &source.label())?;
    if recipe.pipeline.is_empty() {
        let recipe = apply_overrides(table, overrides, None)?;
        validate(&recipe)?;
        return Ok(Resolved::Stage(Box::new(recipe)));
    }
    let mut stages = Vec::with_capacity(recipe.pipeline.len());
    for stage_name in &recipe.pipeline {
        let stage_source = source.parent(stage_name)?;
        let stage_table = load_table(&stage_source, &mut Vec::new())?;
        let stage = apply_overrides(stage_table, overrides, Some(&recipe.pipeline))?;
        validate(&stage)?;
        if stage.kind.is_none() {
            return Err(RecipeError::Invalid {
                recipe: recipe.name.clone(),
                key: "pipeline".into(),
                message: format!("`{stage_name}` is a pipeline, not a stage"),
            });
        }
        stages.push(stage);
    }
    if let Some(bad) = overrides.iter().find(|o| !applies_anywhere(o, &stages)) {
        return Err(RecipeError::Override {
            key: bad.clone(),
            message: "names no stage of this pipeline".into(),
        });
    }
    Ok(Resolved::Pipeline(Pipeline {
        name: recipe.name,
        description: recipe.description,
        stages,
    }))
}

/// Read back a recipe written by [`Resolved::to_toml`] (a run's `recipe.resolved.toml`).
pub fn load_resolved(path: &Path) -> Result<Resolved> {
    let label = path.display().to_string();
    let text = Source::File(path.to_path_buf()).read()?;
    let resolved: Resolved = toml::from_str(&text).map_err(|e| parse_error(&label, &text, &e))?;
    for stage in resolved.stages() {
        validate(stage)?;
    }
    Ok(resolved)
}

/// Read one file and its `extends` chain into one table (child keys win).
fn load_table(source: &Source, chain: &mut Vec<String>) -> Result<Table> {
    let label = source.label();
    if chain.contains(&label) {
        chain.push(label.clone());
        return Err(RecipeError::ExtendsCycle {
            file: label,
            chain: chain.clone(),
        });
    }
    chain.push(label.clone());
    let text = source.read()?;
    // Typed parse of the file alone: unknown keys and wrong types are reported with a line.
    let typed: Recipe = toml::from_str(&text).map_err(|e| parse_error(&label, &text, &e))?;
    let table: Table = toml::from_str(&text).map_err(|e| parse_error(&label, &text, &e))?;
    match typed.extends {
        None => Ok(table),
        Some(parent) => {
            let mut base = load_table(&source.parent(&parent)?, chain)?;
            merge(&mut base, table);
            base.remove("extends");
            Ok(base)
        }
    }
}

fn parse_error(file: &str, text: &str, e: &toml::de::Error) -> RecipeError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1);
    RecipeError::Parse {
        file: file.to_string(),
        line,
        message: e.message().to_string(),
    }
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn to_recipe(table: &Table, label: &str) -> Result<Recipe> {
    Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| RecipeError::Parse {
            file: label.to_string(),
            line: 1,
            message: e.message().to_string(),
        })
}

/// Apply the overrides that concern this recipe. `pipeline` is the list of stage names when the
/// recipe is a stage of a pipeline (then stage-scoped keys are matched and stripped).
fn apply_overrides(mut table: Table, overrides: &[String], pipeline: Option<&[String]>) -> Result<Recipe> {
    let label = table
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = table
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for raw in overrides {
        let (key, value) = raw.split_once('=').ok_or_else(|| RecipeError::Override {
            key: raw.clone(),
            message: "expected KEY=VALUE".into(),
        })?;
        let mut path: Vec<&str> = key.trim().split('.').collect();
        if let Some(names) = pipeline {
            let scoped = is_scope(path[0], names);
            if scoped && path[0] != kind && path[0] != label {
                continue;
            }
            if scoped {
                path.remove(0);
            }
        }
        if path.iter().any(|p| p.is_empty()) {
            return Err(RecipeError::Override {
                key: key.to_string(),
                message: "empty key segment".into(),
            });
        }
        set_path(&mut table, &path, parse_value(value.trim()));
        to_recipe(&table, "").map_err(|e| RecipeError::Override {
            key: key.to_string(),
            message: match e {
                RecipeError::Parse { message, .. } => message,
                other => other.to_string(),
            },
        })?;
    }
    to_recipe(&table, &label)
}

fn is_scope(segment: &str, stage_names: &[String]) -> bool {
    StageKind::ALL.iter().any(|k| k.as_str() == segment) || stage_names.iter().any(|n| n == segment)
}

fn applies_anywhere(raw: &str, stages: &[Recipe]) -> bool {
    let first = raw.split(['.', '=']).next().unwrap_or("");
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    !is_scope(first, &names)
        || stages
            .iter()
            .any(|s| s.name == first || s.kind.map(StageKind::as_str) == Some(first))
}

/// A `--set` value as TOML (numbers, booleans, arrays, inline tables), else a plain string.
fn parse_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty key path");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        cur = entry.as_table_mut().expect("just made a table");
    }
    cur.insert(last.to_string(), value);
}

/// Check what a complete recipe must have and the ranges of its values.
pub fn validate(r: &Recipe) -> Result<()> {
    let bad = |key: &str, message: String| {
        Err(RecipeError::Invalid {
            recipe: r.name.clone(),
            key: key.to_string(),
            message,
        })
    };
    if r.name.is_empty() {
        return bad("name", "missing".into());
    }
    if !r.pipeline.is_empty() {
        if r.kind.is_some() {
            return bad("kind", "a pipeline has no kind; its stages do".into());
        }
        return Ok(());
    }
    let Some(kind) = r.kind else {
        return bad("kind", "missing: one of pretrain, sft, dpo, rm, rlvr".into());
    };
    let t = &r.train;
    if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
        return bad(
            "train.learning_rate",
            format!("must be > 0, got {}", t.learning_rate),
        );
    }
    for (key, v) in [
        ("train.warmup_ratio", t.warmup_ratio),
        ("train.decay_ratio", t.decay_ratio),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return bad(key, format!("must be within [0, 1], got {v}"));
        }
    }
    for (key, v) in [
        ("train.per_device_train_batch_size", t.per_device_train_batch_size),
        ("train.gradient_accumulation_steps", t.gradient_accumulation_steps),
        ("train.num_train_epochs", t.num_train_epochs),
        ("train.logging_steps", t.logging_steps),
        ("data.max_seq_length", r.data.max_seq_length),
        ("launch.gpus", r.launch.gpus),
        ("launch.nodes", r.launch.nodes),
        ("learner.world_size", r.learner.world_size),
    ] {
        if v == 0 {
            return bad(key, "must be >= 1".into());
        }
    }
    if r.data.mix.is_empty() {
        return bad("data.mix", "at least one dataset is needed".into());
    }
    if let (Some(rl), StageKind::Rlvr) = (&r.rlvr, kind) {
        let tp = rl.vllm_tensor_parallel_size;
        if tp == 0 {
            return bad("rlvr.vllm_tensor_parallel_size", "must be >= 1".into());
        }
        if tp > 1 && r.launch.gpus <= 1 {
            return bad(
                "rlvr.vllm_tensor_parallel_size",
                format!(
                    "{tp} splits each engine over {tp} launched engine ranks, which need launch.gpus > 1 (here {}); with one device the engines run whole: set it to 1",
                    r.launch.gpus
                ),
            );
        }
    }
    if let Some(g) = r.rollout.kv_cache_gib {
        if !(g > 0.0 && g.is_finite()) {
            return bad(
                "rollout.kv_cache_gib",
                format!("must be a positive number of GiB, got {g}"),
            );
        }
    }
    for (i, device) in r.rollout.devices.iter().enumerate() {
        if !crate::spec::is_device_name(device) {
            return bad(
                &format!("rollout.devices[{i}]"),
                format!("`{device}`: expected cpu, cuda or cuda:N"),
            );
        }
    }
    for (i, m) in r.data.mix.iter().chain(&r.data.eval_mix).enumerate() {
        if let Amount::Fraction(f) = m.amount {
            if !(f > 0.0 && f.is_finite()) {
                return bad(
                    &format!("data.mix[{i}].amount"),
                    format!("a fraction must be positive, got {f}; use an integer for a row count"),
                );
            }
        }
    }
    let c = &r.model.config;
    if c.hidden_size == 0 || c.num_hidden_layers == 0 || c.vocab_size == 0 {
        return bad(
            "model.config",
            "hidden_size, num_hidden_layers and vocab_size must be set".into(),
        );
    }
    if c.num_attention_heads == 0
        || c.num_key_value_heads == 0
        || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
    {
        return bad(
            "model.config",
            "num_attention_heads must divide hidden_size and be a multiple of num_key_value_heads".into(),
        );
    }
    if !r.eval.tasks.is_empty() && !matches!(kind, StageKind::Rlvr | StageKind::Dpo) {
        return bad(
            "eval.tasks",
            format!(
                "evaluation on test sets runs in rlvr and dpo stages, this is {}",
                kind.as_str()
            ),
        );
    }
    if r.eval.max_new_tokens == 0 {
        return bad("eval.max_new_tokens", "must be >= 1".into());
    }
    match (kind, r.dpo.is_some(), r.rlvr.is_some()) {
        (StageKind::Dpo, false, _) => bad("dpo", "a dpo stage needs a [dpo] table".into()),
        (StageKind::Rlvr, _, false) => bad("rlvr", "an rlvr stage needs an [rlvr] table".into()),
        (k, true, _) if k != StageKind::Dpo => bad(
            "dpo",
            format!("only dpo stages take [dpo], this is {}", k.as_str()),
        ),
        (k, _, true) if k != StageKind::Rlvr => bad(
            "rlvr",
            format!("only rlvr stages take [rlvr], this is {}", k.as_str()),
        ),
        _ => Ok(()),
    }
}
