//! The recipes that ship inside the binary (`recipes/catalog/*.toml`). Files under `base/`
//! hold shared model shapes; they are parents for `extends`, not runnable recipes.

include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));

/// The text of a catalogue file by name (`tulu3-8b-sft`, `base/llama-3.1-8b`).
pub fn text(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Names of the runnable recipes, sorted.
pub fn names() -> Vec<&'static str> {
    FILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !n.starts_with("base/"))
        .collect()
}
