//! The x86-64 vector instruction sets the CPU kernels (`skinny.rs`, `decode_attention.rs`) are
//! compiled for, and which of them this CPU runs: detected once, shared by both.

/// An instruction set a kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) enum Isa {
    /// 8-lane AVX2 vectors with FMA.
    Avx2,
    /// 16-lane AVX-512F vectors.
    Avx512,
}

impl Isa {
    /// Those this CPU runs, narrowest first: none without AVX2 and FMA (or off x86-64).
    pub(super) fn supported() -> &'static [Isa] {
        #[cfg(target_arch = "x86_64")]
        {
            static SUPPORTED: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
            SUPPORTED.get_or_init(|| {
                let mut isas = Vec::new();
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    isas.push(Isa::Avx2);
                    if is_x86_feature_detected!("avx512f") {
                        isas.push(Isa::Avx512);
                    }
                }
                isas
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            &[]
        }
    }

    /// The widest this CPU runs.
    pub(super) fn widest() -> Option<Isa> {
        Self::supported().last().copied()
    }
}
