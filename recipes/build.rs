//! Embeds every `catalog/**/*.toml` into the crate, so `rlvr` runs recipes by name from any
//! directory and a new file needs no code change.
use std::path::Path;

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("catalog directory")
        .map(|e| e.expect("catalog entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            let rel = path.strip_prefix(root).expect("under root").with_extension("");
            out.push((
                rel.to_string_lossy().replace('\\', "/"),
                path.display().to_string(),
            ));
        }
    }
}

fn main() {
    // Read at run time, not baked in with env!(): a build script binary cached from another
    // checkout of this crate must still embed this checkout's files.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("catalog");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let mut code =
        String::from("/// Every catalogue file: (name, text).\npub static FILES: &[(&str, &str)] = &[\n");
    for (name, path) in &files {
        println!("cargo:rerun-if-changed={path}");
        code.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("catalog_files.rs");
    std::fs::write(out, code).expect("write catalog_files.rs");
}
