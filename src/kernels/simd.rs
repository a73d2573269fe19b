//! AVX2 building blocks the kernels share: `e^x` eight floats at a time, for the softmax of
//! attention and the SiLU of the feed-forward block (libm's `expf`, one value per call, is a
//! visible share of both); [`Widen`], f32 or f16 values read as f32 lanes, so one dot product
//! and one attention kernel serve an f32 and an f16 KV cache; the dot product itself; and
//! [`or_bit_plane`], the quantized tiles' plane of single weight bits.

use super::isa;
use candle_core::WithDType;
use half::f16;

/// `e^x` for 8 floats: `2^n · e^r` with `n` the nearest integer to `x / ln 2` and `e^r`
/// (|r| ≤ ln 2 / 2) from its Taylor series to `r^6`, whose truncation error is 1.2e-7 relative
/// (Cephes' split of ln 2 keeps `r` exact).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // Below -87, e^x is under f32's smallest normal number (0 for a softmax's purposes); above
    // 88, over its largest (SiLU's `x / (1 + e^-x)` is then 0 either way).
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
}

/// Merges a plane of single weight bits into the four weight vectors of one half (`h`) of a
/// tile, `wq[j]` holding slot `j` of every lane. The plane is 32 bytes laid out as the q5
/// formats keep their fifth bits: lanes of half `h` in nibble `h` of each byte, slot `j`'s bit at
/// bit `j` of it. Each bit moves to bit `TO` of its weight byte: 4 for a fifth bit above a nibble
/// (`q5_0`, `q5_1`, `q5_K`), 2 for `q3_K`'s third bit above two.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn or_bit_plane<const TO: i32>(
    wq: &mut [std::arch::x86_64::__m256i; 4],
    plane: std::arch::x86_64::__m256i,
    h: usize,
) {
    // SAFETY: the caller guarantees AVX2 (the function is inlined into its AVX2 kernel);
    // only register operations follow.
    unsafe {
        use std::arch::x86_64::*;
        let hb = if h == 0 {
            plane
        } else {
            _mm256_srli_epi16::<4>(plane)
        };
        // The 16-bit shifts carry bits across bytes; the mask keeps only bit TO of each.
        let top = match TO {
            4 => [
                _mm256_slli_epi16::<4>(hb),
                _mm256_slli_epi16::<3>(hb),
                _mm256_slli_epi16::<2>(hb),
                _mm256_slli_epi16::<1>(hb),
            ],
            2 => [
                _mm256_slli_epi16::<2>(hb),
                _mm256_slli_epi16::<1>(hb),
                hb,
                _mm256_srli_epi16::<1>(hb),
            ],
            _ => unreachable!("weight bits go to bit 2 or 4"),
        };
        let bit = _mm256_set1_epi8((1i32 << TO) as i8);
        for (wq, top) in wq.iter_mut().zip(top) {
            *wq = _mm256_or_si256(*wq, _mm256_and_si256(top, bit));
        }
    }
}

/// [`or_bit_plane`] for the AVX-512 tiles, whose 64-byte vectors hold all 64 lanes: lanes
/// 0..32 take their bits from the plane's low nibbles, lanes 32..64 from its high ones.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn or_bit_plane_512<const TO: i32>(
    wq: &mut [std::arch::x86_64::__m512i; 4],
    plane: std::arch::x86_64::__m256i,
) {
    // SAFETY: the caller guarantees AVX-512F and BW (the function is inlined into its VNNI
    // kernel); only register operations follow.
    unsafe {
        use std::arch::x86_64::*;
        // The high nibbles shifted down are low nibbles too.
        let h =
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(plane), _mm256_srli_epi16::<4>(plane));
        // The 16-bit shifts carry bits across bytes; the mask keeps only bit TO of each.
        let top = match TO {
            4 => [
                _mm512_slli_epi16::<4>(h),
                _mm512_slli_epi16::<3>(h),
                _mm512_slli_epi16::<2>(h),
                _mm512_slli_epi16::<1>(h),
            ],
            2 => [
                _mm512_slli_epi16::<2>(h),
                _mm512_slli_epi16::<1>(h),
                h,
                _mm512_srli_epi16::<1>(h),
            ],
            _ => unreachable!("weight bits go to bit 2 or 4"),
        };
        let bit = _mm512_set1_epi8((1i32 << TO) as i8);
        for (wq, top) in wq.iter_mut().zip(top) {
            *wq = _mm512_or_si512(*wq, _mm512_and_si512(top, bit));
        }
    }
}

/// q5's fifth bits for the wide VNNI tiles: byte `L` of the 64-byte `plane` holds, in bit `j`,
/// the fifth bit of lane `L` of `wq[j]`; each goes to bit 4 of its byte.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn or_bit_plane_wide(
    wq: &mut [std::arch::x86_64::__m512i; 8],
    plane: std::arch::x86_64::__m512i,
) {
    // SAFETY: the caller guarantees AVX-512F and BW (the function is inlined into its VNNI
    // kernel); only register operations follow.
    unsafe {
        use std::arch::x86_64::*;
        // The 16-bit shifts carry bits across bytes; the mask keeps only bit 4 of each.
        let top = [
            _mm512_slli_epi16::<4>(plane),
            _mm512_slli_epi16::<3>(plane),
            _mm512_slli_epi16::<2>(plane),
            _mm512_slli_epi16::<1>(plane),
            plane,
            _mm512_srli_epi16::<1>(plane),
            _mm512_srli_epi16::<2>(plane),
            _mm512_srli_epi16::<3>(plane),
        ];
        let bit = _mm512_set1_epi8(0x10);
        for (wq, top) in wq.iter_mut().zip(top) {
            // wq | (top & bit) in one instruction: 0xF0 | (0xCC & 0xAA).
            *wq = _mm512_ternarylogic_epi32::<0xF8>(*wq, top, bit);
        }
    }
}

/// Values the AVX2 kernels read as f32 lanes: f32 itself, or f16, the KV cache of a quantized
/// model (`Attention::cache_dtype`), widened eight at a time.
pub(crate) trait Widen: WithDType {
    /// The rows as f32, borrowed when they already are.
    fn widen(rows: &[Self]) -> std::borrow::Cow<'_, [f32]>;

    /// Eight elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// AVX2 and F16C; `p` points at 8 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// Sixteen elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// AVX-512F; `p` points at 16 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Widen for f32 {
    fn widen(rows: &[Self]) -> std::borrow::Cow<'_, [f32]> {
        rows.into()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: `p` points at 8 readable f32 values (this method's contract).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: the CPU has AVX-512F and `p` points at 16 readable f32 values (this method's
        // contract).
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl Widen for f16 {
    fn widen(rows: &[Self]) -> std::borrow::Cow<'_, [f32]> {
        use half::slice::HalfFloatSliceExt;
        let mut wide = vec![0f32; rows.len()];
        rows.convert_to_f32_slice(&mut wide);
        wide.into()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has F16C and `p` points at 8 readable f16 values (this method's
        // contract).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has AVX-512F and `p` points at 16 readable f16 values (this method's
        // contract).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

/// `x ← e^x` for every value, eight at a time with [`exp_avx2`] where the CPU has AVX2 (which
/// gives about 1e-38, not 0, below -87).
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa::simd() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { exp_in_place_avx2(xs) };
        return;
    }
    for x in xs {
        *x = x.exp();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: AVX2 and FMA per this function's target features; `c` holds 8 floats.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(c.as_ptr()))) };
    }
    for x in chunks.into_remainder() {
        *x = x.exp();
    }
}

/// `Σ a·b` (`b` at least as long as `a`), with AVX2 FMA where the CPU has it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa::simd() {
        // SAFETY: the CPU has AVX2, FMA and F16C; `b` is at least as long as `a`.
        return unsafe { dot_avx2(a, &b[..a.len()]) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `Σ a·b` with AVX2 FMA, `b` in f32 or f16 (a cached key, [`Widen`]).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C, and `b` at least `a.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dot_avx2<E: Widen>(a: &[f32], b: &[E]) -> f32 {
    // SAFETY: the caller guarantees AVX2, FMA and F16C and `b.len() >= a.len()`; every load reads
    // at `i + 8 ≤ n = a.len()`.
    unsafe {
        use std::arch::x86_64::*;
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let va = _mm256_loadu_ps(pa.add(i + 8 * k));
                let vb = E::load8(pb.add(i + 8 * k));
                *acc = _mm256_fmadd_ps(va, vb, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), E::load8(pb.add(i)), acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut sum = _mm_cvtss_f32(s);
        while i < n {
            sum += a[i] * b[i].to_f64() as f32;
            i += 1;
        }
        sum
    }
}

/// The largest absolute difference between two tensors of one shape: how the kernels' tests
/// measure a result against the plain tensor computation.
#[cfg(test)]
pub(super) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
        .expect("two tensors of one shape")
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_float_rounding_of_libm() {
        use std::arch::x86_64::*;
        if !super::isa::simd() {
            return;
        }
        for i in -1760..2000 {
            let x = -(i as f32) * 0.05;
            let mut out = [0f32; 8];
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), super::exp_avx2(_mm256_set1_ps(x))) };
            let exact = x.exp();
            let tolerance = 1e-6 * exact + 1e-37;
            assert!(
                (out[0] - exact).abs() <= tolerance,
                "e^{x}: {} vs {exact}",
                out[0]
            );
        }
    }
}
