//! Embeds an rpath to libtorch into every binary and test of this crate, so they run without
//! `LD_LIBRARY_PATH`. `torch-sys` (a direct dependency, `links = "tch"`) publishes the
//! directory as `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:libtorch_lib={dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
