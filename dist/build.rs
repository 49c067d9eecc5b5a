//! Compiles the c10d shim (`csrc/c10d.cpp`) and, with feature `nccl`, the CUDA graph shim
//! (`csrc/cuda_graph.cpp`) against the headers of the libtorch that `torch-sys`
//! links (it publishes its `lib` directory as `DEP_TCH_LIBTORCH_LIB`; the headers sit beside it
//! in `include`), and embeds an rpath to that directory. With feature `nccl` the shim also
//! builds `ProcessGroupNCCL`, which lives in `libtorch_cuda.so` and needs the CUDA runtime and
//! NCCL headers that PyPI's nvidia packages install next to torch.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib =
        PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys sets DEP_TCH_LIBTORCH_LIB"));
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/c10d.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("csrc")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-w");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        if !lib.join("libtorch_cuda.so").is_file() {
            panic!(
                "feature `nccl` needs a CUDA build of libtorch: {} has no libtorch_cuda.so (point LIBTORCH at a CUDA torch)",
                lib.display()
            );
        }
        let nvidia = lib.join("../../nvidia");
        for dir in ["cu13/include", "nccl/include"] {
            build.include(nvidia.join(dir));
        }
        build
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("RLVR_NCCL", None)
            .file("csrc/cuda_graph.cpp");
        // Nothing in Rust names these libraries, so --as-needed would drop them.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    build.compile("rlvr_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", Path::new(&lib).display());
}
