//! Every recipe key means something: each field of the recipe spec, and each key a catalogue
//! recipe sets, is read somewhere in the code that runs, plans or checks a recipe (a field
//! access `.key` outside the spec's own definition). A key that nothing reads fails here; the
//! remedy is to use it, to refuse the values rlvr does not run, or to remove it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The field names of the spec's structs (`pub name:` lines of `recipes/src/spec*`).
fn spec_fields() -> BTreeSet<String> {
    let mut files = vec![root().join("recipes/src/spec.rs")];
    rust_files(&root().join("recipes/src/spec"), &mut files);
    let mut fields = BTreeSet::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub ") {
                if let Some((name, _)) = rest.split_once(':') {
                    if name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        fields.insert(name.to_string());
                    }
                }
            }
        }
    }
    fields
}

/// The leaf keys every catalogue recipe sets.
fn catalogue_keys() -> BTreeSet<String> {
    fn walk(t: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            match v {
                toml::Value::Table(inner) if k != "dataset_verifiers" => {
                    out.insert(k.clone());
                    walk(inner, out);
                }
                _ => {
                    out.insert(k.clone());
                }
            }
        }
    }
    let mut files = Vec::new();
    let mut dirs = vec![root().join("recipes/catalog")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
    }
    let mut keys = BTreeSet::new();
    for f in files {
        let table: toml::Table = std::fs::read_to_string(&f).unwrap().parse().unwrap();
        walk(&table, &mut keys);
    }
    keys
}

/// The code that runs, plans and checks recipes, without the spec's definitions.
fn readers() -> String {
    let mut files = Vec::new();
    rust_files(&root().join("actors/src"), &mut files);
    for f in ["load.rs", "plan.rs", "catalog.rs", "lib.rs"] {
        files.push(root().join("recipes/src").join(f));
    }
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

fn is_read(key: &str, code: &str) -> bool {
    let needle = format!(".{key}");
    code.match_indices(&needle).any(|(i, _)| {
        let after = code[i + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn every_spec_field_and_catalogue_key_is_read_by_the_runtime() {
    let code = readers();
    let fields = spec_fields();
    assert!(fields.len() > 100, "found only {} spec fields", fields.len());
    let keys = catalogue_keys();
    // Top-level tables and recipe identity are read as a whole (`recipe.rlvr`, `recipe.name`).
    for k in &keys {
        assert!(fields.contains(k), "catalogue key `{k}` is no spec field");
    }
    let unread: Vec<&String> = fields.union(&keys).filter(|k| !is_read(k, &code)).collect();
    assert!(
        unread.is_empty(),
        "recipe keys nothing reads (use them, refuse what rlvr does not run, or remove them): {unread:?}"
    );
}

#[test]
fn the_check_itself_finds_an_unread_key() {
    assert!(is_read("num_mini_batches", "if rl.num_mini_batches != n {"));
    assert!(!is_read("num_mini_batches", "let rl.num_mini_batches_total = 1;"));
    assert!(!is_read("no_such_key_anywhere", &readers()));
}
