//! The x86-64 vector instruction sets the CPU kernels (`skinny.rs`, `decode_attention.rs`,
//! `token_choice.rs`) are compiled for, which of them this CPU runs (detected once), [`Lanes`]:
//! the vector operations the kernels are written in, once for each set, and the row maximum and
//! exponential they share ([`max_of`], [`exp_below_zero`]).

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

/// One vector register of f32 lanes: the operations the kernels need, inlined into the
/// functions each kernel compiles for an instruction set (`__m256` for [`Isa::Avx2`],
/// `__m512` for [`Isa::Avx512`]). Callers must run on a CPU with that set.
#[cfg(target_arch = "x86_64")]
pub(super) trait Lanes: Copy {
    /// Lanes per vector.
    const WIDTH: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `WIDTH` floats from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// The lanes to `WIDTH` floats at `p`.
    unsafe fn store(self, p: *mut f32);
    /// `a · b + acc`, fused.
    unsafe fn fma(a: Self, b: Self, acc: Self) -> Self;
    /// Lane by lane `a + b`.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// Lane by lane `a · b`.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// Lane by lane the larger of `a` and `b`.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// `2^n` for lanes holding integers in `-126..=127`: `n + 127` put in the exponent bits.
    unsafe fn exp2_of_integers(n: Self) -> Self;
    /// `self`'s lanes where `x`'s are at least `limit`'s; zero where they are below it or NaN.
    unsafe fn where_at_least(self, x: Self, limit: Self) -> Self;
    /// The sum of the lanes.
    unsafe fn sum(self) -> f32;
}

/// The largest of `row` (NaNs aside; `-∞` when empty), a vector at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn max_of<V: Lanes>(row: &[f32]) -> f32 {
    let (len, p) = (row.len(), row.as_ptr());
    let whole = len / V::WIDTH * V::WIDTH;
    let mut maxes = V::splat(f32::NEG_INFINITY);
    for i in (0..whole).step_by(V::WIDTH) {
        maxes = V::max(maxes, V::load(p.add(i)));
    }
    let mut lanes = [0f32; 16];
    maxes.store(lanes.as_mut_ptr());
    lanes[..V::WIDTH]
        .iter()
        .chain(&row[whole..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Where [`exp_below_zero`] stops following `e^x`.
#[cfg(target_arch = "x86_64")]
pub(super) const EXP_FLOOR: f32 = -87.0;

/// `e^x` lane by lane for `x ≤ 0`, where libm's `expf` is a call per element: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, `e^r` by its Taylor series to the `r^6` term (truncation below 2e-7
/// relative), times `2^n` built in the exponent bits; within 2.3e-7 of `e^x` relative, a few
/// ulp (the test measures it). Below [`EXP_FLOOR`] (`e^x` under 2^-125, a weight no f32
/// softmax sum can see) it gives `e^-87`; slightly above zero (rounding) it still holds.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn exp_below_zero<V: Lanes>(x: V) -> V {
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer in f32.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = V::max(x, V::splat(EXP_FLOOR));
    let n = V::add(
        V::fma(x, V::splat(std::f32::consts::LOG2_E), V::splat(ROUND)),
        V::splat(-ROUND),
    );
    let r = V::fma(n, V::splat(-LN2_LO), V::fma(n, V::splat(-LN2_HI), x));
    let mut p = V::splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = V::fma(p, r, V::splat(c));
    }
    V::mul(p, V::exp2_of_integers(n))
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;

    use super::Lanes;

    impl Lanes for __m256 {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, acc: Self) -> Self {
            _mm256_fmadd_ps(a, b, acc)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn exp2_of_integers(n: Self) -> Self {
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn where_at_least(self, x: Self, limit: Self) -> Self {
            _mm256_and_ps(self, _mm256_cmp_ps::<_CMP_GE_OQ>(x, limit))
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            let half = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps::<1>(self));
            let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)))
        }
    }

    impl Lanes for __m512 {
        const WIDTH: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, acc: Self) -> Self {
            _mm512_fmadd_ps(a, b, acc)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn exp2_of_integers(n: Self) -> Self {
            let biased = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
        }
        #[inline(always)]
        unsafe fn where_at_least(self, x: Self, limit: Self) -> Self {
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, limit), self)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            _mm512_reduce_add_ps(self)
        }
    }
}
