//! Embeds an rpath to libtorch into every binary and test of this crate, so they run without
//! `LD_LIBRARY_PATH`. `torch-sys` (a direct dependency, `links = "tch"`) publishes the
//! directory as `DEP_TCH_LIBTORCH_LIB`. Where that directory holds libtorch's OpenMP runtime
//! (`libgomp.so.1`, as PyPI's torch does), it is linked and `rlvr_gomp` set: the CPU decode
//! kernel (`src/model/skinny.rs`) shares its work out over libtorch's OpenMP threads.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(rlvr_gomp)");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:libtorch_lib={dir}");
        if std::path::Path::new(&dir).join("libgomp.so.1").is_file() {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
            println!("cargo:rustc-cfg=rlvr_gomp");
        }
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
