//! Embeds an rpath to libtorch into the example's binary, as rlvr's own build does (the
//! directory comes from `rlvr-actors`, whose build publishes it).
fn main() {
    if let Ok(dir) = std::env::var("DEP_RLVR_ACTORS_LIBTORCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_RLVR_ACTORS_LIBTORCH_LIBTORCH_LIB");
}
