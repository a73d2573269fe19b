//! Activations quantized to int8 blocks of 32, as GGML's `q8_0` / `q8_1` blocks: the input side
//! of the quantized matmul ([`super::packed`]), quantized once per matmul.

use super::isa;
use half::f16;

/// Values per block, on both sides of the quantized matmul.
pub(super) const BLOCK: usize = 32;

/// Activations quantized to int8 blocks, block-major: block `b` of token `t` is entry
/// `b · tokens + t` of every field ([`Q8Rows::at`]), so a micro-kernel finds one block of all
/// its tokens side by side, at fixed offsets from one pointer.
pub(super) struct Q8Rows {
    pub tokens: usize,
    /// 32 values per entry.
    pub qs: Vec<i8>,
    pub scales: Vec<f32>,
    /// For q4_1 and q5_1: `dx · Σ qx` per block, what the offsets `m` multiply.
    pub sums: Vec<f32>,
    /// For shifted weights: `-shift · Σ qx` per block, the integer dot product's starting value.
    pub start: Vec<i32>,
}

impl Q8Rows {
    /// The entry of block `block` of token `token`.
    pub fn at(&self, token: usize, block: usize) -> usize {
        block * self.tokens + token
    }
}

/// `rows` rows of `cols` values → int8 blocks. With `q8_1` the sums are rounded to f16 as
/// GGML's q8_1 blocks (the partner of q4_1) store them, so q4_1 results stay within float
/// rounding of GGML's.
pub(super) fn quantize_rows(
    x: &[f32],
    (rows, cols): (usize, usize),
    q8_1: bool,
    shift: i32,
) -> Q8Rows {
    let blocks = cols / BLOCK;
    let mut out = Q8Rows {
        tokens: rows,
        qs: vec![0i8; rows * cols],
        scales: vec![0f32; rows * blocks],
        sums: vec![0f32; if q8_1 { rows * blocks } else { 0 }],
        start: vec![0i32; if shift != 0 { rows * blocks } else { 0 }],
    };
    if cols == 0 {
        return out;
    }
    for (t, row) in x[..rows * cols].chunks_exact(cols).enumerate() {
        for (b, src) in row.chunks_exact(BLOCK).enumerate() {
            let i = out.at(t, b);
            let (d, s) = quantize_block(src, &mut out.qs[i * BLOCK..][..BLOCK]);
            if shift != 0 {
                out.start[i] = -shift * s;
            }
            // The scale is kept in f16, as GGML's q8 blocks store it.
            let d16 = f16::from_f32(d);
            out.scales[i] = d16.to_f32();
            if q8_1 {
                out.sums[i] = (f16::from_f32(s as f32) * d16).to_f32();
            }
        }
    }
    out
}

/// One block of 32 activations → int8 values `round(v / d)` with `d = max|v| / 127`, rounding
/// halves away from zero as GGML's reference does; returns `d` and the sum of the values.
fn quantize_block(src: &[f32], dst: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if isa::simd() {
        // SAFETY: the CPU has AVX2 and FMA; both slices hold a whole block.
        return unsafe { quantize_block_avx2(src, dst) };
    }
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (q, v) in dst.iter_mut().zip(src) {
        let v = (v * inv).round() as i32;
        *q = v as i8;
        s += v;
    }
    (d, s)
}

/// [`quantize_block`] with AVX2: it runs once per matmul for every activation block, where a
/// scalar loop (libm's `roundf` per value) costs several microseconds per decode matmul.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(src: &[f32], dst: &mut [i8]) -> (f32, i32) {
    // SAFETY: the caller guarantees AVX2 and FMA; the assert above makes both slices one block of
    // 32, so the four loads and the one store stay inside them.
    unsafe {
        use std::arch::x86_64::*;
        assert!(src.len() == BLOCK && dst.len() == BLOCK);
        let sign = _mm256_set1_ps(-0.0);
        let v = [0, 1, 2, 3].map(|k| _mm256_loadu_ps(src.as_ptr().add(8 * k)));
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let q = v.map(|v| {
            let x = _mm256_mul_ps(v, inv);
            // Round half away from zero: truncate, then step one away from zero where the part
            // cut off was at least a half.
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let cut = _mm256_andnot_ps(sign, _mm256_sub_ps(x, t));
            let step = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(cut, half),
                _mm256_or_ps(_mm256_and_ps(x, sign), one),
            );
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let total = _mm_add_epi32(
            _mm256_castsi256_si128(total),
            _mm256_extracti128_si256(total, 1),
        );
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b01_00_11_10>(total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b10_11_00_01>(total));
        // int32 → int8 (the values are within ±127, so nothing saturates); the packs work per
        // 128-bit lane, and the permutation puts the values back in order.
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, bytes);
        (d, _mm_cvtsi128_si32(total))
    }
}

/// Values per super-block of the K formats (GGML's `QK_K`), on both sides of their matmul.
pub(super) const SUPER: usize = 256;

/// Activations quantized as GGML's `q8_K`, the partner of its K formats: one f32 scale per 256
/// values and the sums of each 16, one row per token. Within every 32 values the bytes are in
/// the order the K kernels read them ([`k_slot`]).
pub(super) struct Q8KRows {
    pub qs: Vec<i8>,
    pub scales: Vec<f32>,
    /// Per super-block, the sums of its 16 groups of 16 values ...
    pub sums16: Vec<i16>,
    /// ... and of its 8 groups of 32.
    pub sums32: Vec<i16>,
}

/// Where the K kernels keep value `v` (0..32) of a 32-value group: slot `8j + e` of the four
/// 8-byte lanes `j`, values 0..16 in bytes `e < 4` and 16..32 in bytes `e ≥ 4`. A 4-byte
/// product sum then never mixes the two halves, which have their own scales in `q6_K`.
pub(super) fn k_slot(v: usize) -> usize {
    let (half, i) = (v / 16, v % 16);
    8 * (i / 4) + 4 * half + i % 4
}

/// `rows` rows of `cols` values (a multiple of [`SUPER`]) → `q8_K` blocks, rounded as GGML's
/// reference does (`-127 / max` with max the value of largest magnitude, ties to even).
pub(super) fn quantize_rows_k(x: &[f32], (rows, cols): (usize, usize)) -> Q8KRows {
    let blocks = rows * cols / SUPER;
    let mut out = Q8KRows {
        qs: vec![0; rows * cols],
        scales: vec![0.0; blocks],
        sums16: vec![0; 16 * blocks],
        sums32: vec![0; 8 * blocks],
    };
    let slots: [usize; 32] = std::array::from_fn(k_slot);
    for (b, src) in x[..rows * cols].chunks_exact(SUPER).enumerate() {
        let max = src
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        if max == 0.0 {
            continue;
        }
        let iscale = -127.0 / max;
        let mut q = [0i8; SUPER];
        for (q, &v) in q.iter_mut().zip(src) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        out.scales[b] = 1.0 / iscale;
        for (g, group) in q.chunks_exact(16).enumerate() {
            out.sums16[16 * b + g] = group.iter().map(|&v| v as i16).sum();
        }
        for g in 0..8 {
            out.sums32[8 * b + g] = out.sums16[16 * b + 2 * g] + out.sums16[16 * b + 2 * g + 1];
        }
        let dst = &mut out.qs[b * SUPER..][..SUPER];
        for (group, src) in dst.chunks_exact_mut(32).zip(q.chunks_exact(32)) {
            for (v, &value) in src.iter().enumerate() {
                group[slots[v]] = value;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On every path: the AVX2 one where the CPU has it, the plain one otherwise.
    #[test]
    fn activations_round_half_away_from_zero_as_ggml_does() {
        // A block whose largest value is 127 has the scale 1, so the halves stay halves.
        let mut x: Vec<f32> = (0..BLOCK).map(|i| (i as f32 * 0.77).sin() * 90.0).collect();
        x[..8].copy_from_slice(&[127.0, 0.5, -0.5, 1.5, -2.5, 2.49, -126.5, 0.0]);
        for block in [
            x.clone(),
            vec![0.0; BLOCK],
            x.iter().map(|v| v * 1e-3).collect(),
        ] {
            let mut got = vec![0i8; BLOCK];
            let (d, sum) = quantize_block(&block, &mut got);
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(d, amax / 127.0);
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let expected: Vec<i8> = block.iter().map(|v| (v * inv).round() as i8).collect();
            assert_eq!(got, expected);
            assert_eq!(sum, expected.iter().map(|&q| q as i32).sum::<i32>());
        }
        assert_eq!(quantize_block(&x, &mut [0i8; BLOCK]).0, 1.0);
    }

    #[test]
    fn k_slots_keep_each_half_in_its_own_four_bytes() {
        let mut seen = [false; 32];
        for v in 0..32 {
            let slot = k_slot(v);
            assert!(!seen[slot]);
            seen[slot] = true;
            assert_eq!(slot % 8 / 4, v / 16, "value {v} in slot {slot}");
        }
    }

    #[test]
    fn q8_k_rows_scale_back_to_the_activations() {
        let x: Vec<f32> = (0..2 * SUPER)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let q = quantize_rows_k(&x, (1, 2 * SUPER));
        for b in 0..2 {
            for v in 0..SUPER {
                let got = q.scales[b] * q.qs[b * SUPER + v / 32 * 32 + k_slot(v % 32)] as f32;
                assert!((got - x[b * SUPER + v]).abs() <= q.scales[b].abs() / 2.0 + 1e-6);
            }
            let total: i32 = q.qs[b * SUPER..][..SUPER].iter().map(|&v| v as i32).sum();
            let sum16: i32 = q.sums16[16 * b..][..16].iter().map(|&v| v as i32).sum();
            let sum32: i32 = q.sums32[8 * b..][..8].iter().map(|&v| v as i32).sum();
            assert_eq!((total, total), (sum16, sum32));
        }
    }
}
