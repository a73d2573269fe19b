//! The micro-kernels of GGML's K formats (`q2_K` to `q6_K`): a tile of [`ROWS`] weight rows
//! times up to `tiles::MAX_TOKENS` tokens of `q8_K` activations, one per instruction set. The layout
//! is `packed::k_quants`'s; the activations are [`super::q8::quantize_rows_k`]'s.
//!
//! The arithmetic is GGML's `vec_dot_q*_K_q8_K`: per super-block, the integer products of
//! each group are multiplied by the group's integer scale and summed in int32, then scaled
//! once by `d·dx`; the offsets (`q2_K`'s, `q4_K`'s and `q5_K`'s `dmin·m`, `q6_K`'s `-32` and
//! `q3_K`'s `-4`) come out of the activations' group sums, `Σ m·Σqx`, scaled by `dmin·dx` (or
//! `32·d·dx`, `4·d·dx`). Integer sums are exact, so results differ from GGML's only in the order
//! of float additions.

use super::q8::{Q8KRows, SUPER};
#[cfg(target_arch = "x86_64")]
use super::simd::{or_bit_plane, or_bit_plane_512};
use super::tiles::{Accumulators, ROWS};
use candle_core::quantized::GgmlDType;
use half::f16;

/// Bytes of one 32-value group of a tile in the layout.
pub(super) fn group_bytes(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q2K => 64,
        GgmlDType::Q3K => 96,
        GgmlDType::Q4K => 128,
        GgmlDType::Q5K => 160,
        _ => 192,
    }
}

/// Whether `dtype` keeps two bits per weight in a vector of its own (`q2_K`, and `q3_K` beside
/// a plane of third bits) instead of nibbles.
pub(super) fn two_bit(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q2K | GgmlDType::Q3K)
}

/// What the K micro-kernels read of a packed matrix (see `packed::k_quants` for the layout).
pub(super) struct KTileWeights<'a> {
    pub dtype: GgmlDType,
    /// Super-blocks per row.
    pub blocks: usize,
    pub d: &'a [f16],
    pub dmin: &'a [f16],
    pub sub_scales: &'a [i8],
    pub sub_mins: &'a [i8],
    pub qs: &'a [u8],
}

/// The matrix, the tile of rows, the activations, the first token, and where the results go.
pub(super) type KTileArgs<'a> = (
    &'a KTileWeights<'a>,
    usize,
    &'a Q8KRows,
    usize,
    &'a mut Accumulators,
);

/// Per row of the tile (lane `r`), the integer offset sum of super-block `at` against the
/// activation block `xb`: `Σ m·Σ₃₂qx` (`q4_K`, `q5_K`), `Σ m·Σ₁₆qx` (`q2_K`) or `Σ sc·Σ₁₆qx`
/// (`q6_K`, `q3_K`), one `vpmaddwd` per pair of groups.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn offset_sums(
    w: &KTileWeights,
    at: usize,
    q8: &Q8KRows,
    xb: usize,
) -> std::arch::x86_64::__m256i {
    // SAFETY: the caller guarantees AVX2 and that `at` and `xb` are blocks of `w` and `q8`, so
    // the 16-byte loads of `(pairs)` × 16 coefficients and the 4-byte sum pairs stay inside.
    unsafe {
        use std::arch::x86_64::*;
        let (coefficients, sums, pairs) = match w.dtype {
            GgmlDType::Q4K | GgmlDType::Q5K => {
                (w.sub_mins.as_ptr().add(at * 64), &q8.sums32[8 * xb..], 4)
            }
            // q2_K's `m` is the high nibble beside its scale.
            _ => (
                w.sub_scales.as_ptr().add(at * 128),
                &q8.sums16[16 * xb..],
                8,
            ),
        };
        let mut total = _mm256_setzero_si256();
        for p in 0..pairs {
            let mut bytes = _mm_loadu_si128(coefficients.add(16 * p) as *const __m128i);
            if w.dtype == GgmlDType::Q2K {
                bytes = _mm_and_si128(_mm_srli_epi16::<4>(bytes), _mm_set1_epi8(0x0F));
            }
            let c = _mm256_cvtepi8_epi16(bytes);
            let x = _mm256_set1_epi32((sums.as_ptr().add(2 * p) as *const i32).read_unaligned());
            total = _mm256_add_epi32(total, _mm256_madd_epi16(c, x));
        }
        total
    }
}

/// Per row, what the offset sums are scaled by before `dx`: `dmin`, or `32·d` for `q6_K` and
/// `4·d` for `q3_K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn offset_scales(w: &KTileWeights, at: usize) -> std::arch::x86_64::__m256 {
    // SAFETY: the caller guarantees F16C and that `at` is a block of `w`: 8 f16 per block.
    unsafe {
        use std::arch::x86_64::*;
        let shift = match w.dtype {
            GgmlDType::Q6K => 32.0,
            GgmlDType::Q3K => 4.0,
            _ => {
                return _mm256_cvtph_ps(_mm_loadu_si128(
                    w.dmin.as_ptr().add(at * ROWS) as *const __m128i
                ))
            }
        };
        let d = _mm256_cvtph_ps(_mm_loadu_si128(
            w.d.as_ptr().add(at * ROWS) as *const __m128i
        ));
        _mm256_mul_ps(d, _mm256_set1_ps(shift))
    }
}

/// The eight activation bytes `8j..8j + 8` of group `g` of block `xb`, as one 64-bit lane.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn x_lane(q8: &Q8KRows, xb: usize, g: usize, j: usize) -> i64 {
    // SAFETY: the caller guarantees that block `xb` is one of `q8`'s, `g < 8` and `j < 4`.
    unsafe { (q8.qs.as_ptr().add(xb * SUPER + 32 * g + 8 * j) as *const i64).read_unaligned() }
}

/// [`k_tile_vnni`] for a tile of `tokens` tokens, any number from 1 to
/// [`super::tiles::MAX_TOKENS`], each width its own copy (see `tile_vnni_tokens`).
///
/// # Safety
/// As [`k_tile_vnni`]'s.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn k_tile_vnni_tokens(tokens: usize, args: KTileArgs) {
    macro_rules! widths {
        ($($t:literal)*) => {
            match tokens {
                $($t => k_tile_vnni::<$t>(args),)*
                _ => unreachable!("a K tile takes 1 to 9 tokens, not {tokens}"),
            }
        };
    }
    // SAFETY: the caller guarantees what `k_tile_vnni` needs, for `tokens` tokens.
    unsafe { widths!(1 2 3 4 5 6 7 8 9) }
}

/// A tile of `ROWS` rows × `T` tokens with AVX-512 VNNI: per 32-value group, four `vpdpbusd`
/// per token (lanes `2r` and `2r + 1` hold row `r`'s two halves), one `vpmulld` by the halves'
/// scales, and per super-block one convert and FMA for all eight rows. Every K format: two-bit
/// fields (`q2_K`, `q3_K`) or nibbles, with a plane of single bits (`q3_K`, `q5_K`) or of bit
/// pairs (`q6_K`) on top.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn k_tile_vnni<const T: usize>((w, tile, q8, i, out): KTileArgs) {
    // SAFETY: the caller (`PackedMatrix::tile`) guarantees AVX-512 VNNI, a tile of the matrix
    // (rows are padded to whole tiles) and tokens `i..i + T` within `q8`, so every super-block
    // `at` of `w` and `xb` of `q8` read below exists; each load stays inside its group's
    // `group_bytes` (64 for q2_K, 96 for q3_K: one vector and a half), and prefetches never fault.
    unsafe {
        use std::arch::x86_64::*;
        let n = w.blocks;
        let q6 = w.dtype == GgmlDType::Q6K;
        let q5 = w.dtype == GgmlDType::Q5K;
        let q3 = w.dtype == GgmlDType::Q3K;
        let q2 = w.dtype == GgmlDType::Q2K;
        let two_bits = two_bit(w.dtype);
        let group = group_bytes(w.dtype);
        let low = _mm512_set1_epi8(0x0F);
        let three = _mm512_set1_epi8(3);
        let pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut offsets = [_mm256_setzero_ps(); T];
        for b in 0..n {
            let at = tile * n + b;
            let qs = w.qs.as_ptr().add(at * 8 * group);
            let mut isum = [_mm512_setzero_si512(); T];
            for g in 0..8 {
                let p = qs.add(g * group);
                for line in 0..group / 64 {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * group + 64 * line) as *const i8);
                }
                let mut wq = if two_bits {
                    let b = _mm512_loadu_si512(p as *const __m512i);
                    [
                        _mm512_and_si512(b, three),
                        _mm512_and_si512(_mm512_srli_epi16::<2>(b), three),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(b), three),
                        _mm512_and_si512(_mm512_srli_epi16::<6>(b), three),
                    ]
                } else {
                    let p0 = _mm512_loadu_si512(p as *const __m512i);
                    let p1 = _mm512_loadu_si512(p.add(64) as *const __m512i);
                    [
                        _mm512_and_si512(p0, low),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(p0), low),
                        _mm512_and_si512(p1, low),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(p1), low),
                    ]
                };
                if q3 {
                    // The third bits, laid out as q5_K's fifth: the 32 bytes after the two-bit
                    // vector.
                    let plane = _mm256_loadu_si256(p.add(64) as *const __m256i);
                    or_bit_plane_512::<2>(&mut wq, plane);
                }
                if q6 {
                    let h = _mm512_loadu_si512(p.add(128) as *const __m512i);
                    let top = [
                        _mm512_and_si512(h, three),
                        _mm512_and_si512(_mm512_srli_epi16::<2>(h), three),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(h), three),
                        _mm512_and_si512(_mm512_srli_epi16::<6>(h), three),
                    ];
                    for (wq, top) in wq.iter_mut().zip(top) {
                        *wq = _mm512_or_si512(*wq, _mm512_slli_epi16::<4>(top));
                    }
                }
                if q5 {
                    // The fifth bits: the group's last 32 bytes.
                    let plane = _mm256_loadu_si256(p.add(128) as *const __m256i);
                    or_bit_plane_512::<4>(&mut wq, plane);
                }
                let mut scale_bytes =
                    _mm_loadu_si128(w.sub_scales.as_ptr().add(at * 128 + 16 * g) as *const __m128i);
                if q2 {
                    // q2_K's scale is the low nibble; its `m` (the high one) is an offset.
                    scale_bytes = _mm_and_si128(scale_bytes, _mm_set1_epi8(0x0F));
                }
                let scales = _mm512_cvtepi8_epi32(scale_bytes);
                for (t, isum) in isum.iter_mut().enumerate() {
                    let xb = (i + t) * n + b;
                    let mut dot = _mm512_setzero_si512();
                    for (j, wq) in wq.iter().enumerate() {
                        dot =
                            _mm512_dpbusd_epi32(dot, *wq, _mm512_set1_epi64(x_lane(q8, xb, g, j)));
                    }
                    *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(dot, scales));
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(
                w.d.as_ptr().add(at * ROWS) as *const __m128i
            ));
            let d = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(d));
            let dm = offset_scales(w, at);
            for t in 0..T {
                let xb = (i + t) * n + b;
                let dx = q8.scales[xb];
                acc[t] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum[t]),
                    _mm512_mul_ps(d, _mm512_set1_ps(dx)),
                    acc[t],
                );
                offsets[t] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(offset_sums(w, at, q8, xb)),
                    _mm256_mul_ps(dm, _mm256_set1_ps(dx)),
                    offsets[t],
                );
            }
        }
        for t in 0..T {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc[t]);
            let mut off = [0f32; 8];
            _mm256_storeu_ps(off.as_mut_ptr(), offsets[t]);
            for (r, o) in out[t].iter_mut().take(ROWS).enumerate() {
                *o = lanes[2 * r] + lanes[2 * r + 1] - off[r];
            }
        }
    }
}

/// [`k_tile_avx2`] for a tile of `tokens` tokens, 1 to [`super::tiles::AVX2_TOKENS`].
///
/// # Safety
/// As [`k_tile_avx2`]'s.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn k_tile_avx2_tokens(tokens: usize, args: KTileArgs) {
    // SAFETY: the caller guarantees what `k_tile_avx2` needs, for `tokens` tokens.
    unsafe {
        match tokens {
            1 => k_tile_avx2::<1>(args),
            2 => k_tile_avx2::<2>(args),
            3 => k_tile_avx2::<3>(args),
            4 => k_tile_avx2::<4>(args),
            _ => unreachable!("an AVX2 K tile takes 1 to 4 tokens, not {tokens}"),
        }
    }
}

/// A tile of `ROWS` rows × `T` tokens with AVX2: the VNNI kernel's scheme on 256-bit
/// registers, four rows at a time; `vpmaddubsw` gives int16 pair sums and `vpmaddwd` against
/// the halves' scales widens and scales them in one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_tile_avx2<const T: usize>((w, tile, q8, i, out): KTileArgs) {
    // SAFETY: the caller (`PackedMatrix::tile`) guarantees AVX2, FMA and F16C, a tile of the
    // matrix (rows are padded to whole tiles) and tokens `i..i + T` within `q8`, so every
    // super-block `at` of `w` and `xb` of `q8` read below exists; prefetches never fault.
    unsafe {
        use std::arch::x86_64::*;
        let n = w.blocks;
        let q6 = w.dtype == GgmlDType::Q6K;
        let q5 = w.dtype == GgmlDType::Q5K;
        let q3 = w.dtype == GgmlDType::Q3K;
        let q2 = w.dtype == GgmlDType::Q2K;
        let two_bits = two_bit(w.dtype);
        let group = group_bytes(w.dtype);
        let low = _mm256_set1_epi8(0x0F);
        let three = _mm256_set1_epi8(3);
        let pairs = [
            _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0),
            _mm256_set_epi32(7, 7, 6, 6, 5, 5, 4, 4),
        ];
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        let mut offsets = [_mm256_setzero_ps(); T];
        for b in 0..n {
            let at = tile * n + b;
            let qs = w.qs.as_ptr().add(at * 8 * group);
            let mut isum = [[_mm256_setzero_si256(); 2]; T];
            for g in 0..8 {
                let p = qs.add(g * group);
                for line in 0..group / 64 {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * group + 64 * line) as *const i8);
                }
                // Each row's two half scales, each twice: the int16 lanes of its products
                // (q2_K's are the low nibbles).
                let mut scale_bytes =
                    _mm_loadu_si128(w.sub_scales.as_ptr().add(at * 128 + 16 * g) as *const __m128i);
                if q2 {
                    scale_bytes = _mm_and_si128(scale_bytes, _mm_set1_epi8(0x0F));
                }
                let scales = _mm256_cvtepi8_epi16(scale_bytes);
                let halves = [
                    _mm256_castsi256_si128(scales),
                    _mm256_extracti128_si256::<1>(scales),
                ];
                // Rows 4h..4h + 4 are the h-th half of every 64-byte vector.
                for (h, half) in halves.into_iter().enumerate() {
                    let sc = _mm256_set_m128i(
                        _mm_unpackhi_epi16(half, half),
                        _mm_unpacklo_epi16(half, half),
                    );
                    let p = p.add(32 * h);
                    let mut wq = if two_bits {
                        let b = _mm256_loadu_si256(p as *const __m256i);
                        [
                            _mm256_and_si256(b, three),
                            _mm256_and_si256(_mm256_srli_epi16::<2>(b), three),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(b), three),
                            _mm256_and_si256(_mm256_srli_epi16::<6>(b), three),
                        ]
                    } else {
                        let p0 = _mm256_loadu_si256(p as *const __m256i);
                        let p1 = _mm256_loadu_si256(p.add(64) as *const __m256i);
                        [
                            _mm256_and_si256(p0, low),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(p0), low),
                            _mm256_and_si256(p1, low),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(p1), low),
                        ]
                    };
                    if q3 {
                        // The third bits: the 32 bytes after the two-bit vector (`p` is
                        // already 32h further on).
                        let plane = _mm256_loadu_si256(p.add(64 - 32 * h) as *const __m256i);
                        or_bit_plane::<2>(&mut wq, plane, h);
                    }
                    if q6 {
                        let hb = _mm256_loadu_si256(p.add(128) as *const __m256i);
                        let top = [
                            _mm256_and_si256(hb, three),
                            _mm256_and_si256(_mm256_srli_epi16::<2>(hb), three),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(hb), three),
                            _mm256_and_si256(_mm256_srli_epi16::<6>(hb), three),
                        ];
                        for (wq, top) in wq.iter_mut().zip(top) {
                            *wq = _mm256_or_si256(*wq, _mm256_slli_epi16::<4>(top));
                        }
                    }
                    if q5 {
                        // The fifth bits: the group's last 32 bytes.
                        let plane = _mm256_loadu_si256(p.add(128 - 32 * h) as *const __m256i);
                        or_bit_plane::<4>(&mut wq, plane, h);
                    }
                    for (t, isum) in isum.iter_mut().enumerate() {
                        let xb = (i + t) * n + b;
                        let x = [0, 1, 2, 3].map(|j| _mm256_set1_epi64x(x_lane(q8, xb, g, j)));
                        let products = [0, 1, 2, 3].map(|j| _mm256_maddubs_epi16(wq[j], x[j]));
                        let sum = if q6 {
                            // 6-bit weights: two int16 pair sums reach 2·2·63·127, four would
                            // overflow, so two widenings.
                            _mm256_add_epi32(
                                _mm256_madd_epi16(_mm256_add_epi16(products[0], products[1]), sc),
                                _mm256_madd_epi16(_mm256_add_epi16(products[2], products[3]), sc),
                            )
                        } else {
                            // 2 to 5 bits: the four pair sums stay within 4·2·31·127.
                            let p01 = _mm256_add_epi16(products[0], products[1]);
                            let p23 = _mm256_add_epi16(products[2], products[3]);
                            _mm256_madd_epi16(_mm256_add_epi16(p01, p23), sc)
                        };
                        isum[h] = _mm256_add_epi32(isum[h], sum);
                    }
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(
                w.d.as_ptr().add(at * ROWS) as *const __m128i
            ));
            let dm = offset_scales(w, at);
            for t in 0..T {
                let xb = (i + t) * n + b;
                let dx = _mm256_set1_ps(q8.scales[xb]);
                for h in 0..2 {
                    let dh = _mm256_mul_ps(_mm256_permutevar8x32_ps(d, pairs[h]), dx);
                    acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][h]), dh, acc[t][h]);
                }
                offsets[t] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(offset_sums(w, at, q8, xb)),
                    _mm256_mul_ps(dm, dx),
                    offsets[t],
                );
            }
        }
        for t in 0..T {
            let mut off = [0f32; 8];
            _mm256_storeu_ps(off.as_mut_ptr(), offsets[t]);
            for h in 0..2 {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[t][h]);
                for r in 0..4 {
                    out[t][4 * h + r] = lanes[2 * r] + lanes[2 * r + 1] - off[4 * h + r];
                }
            }
        }
    }
}

/// The same tile in plain Rust: the reference the SIMD kernels are tested against. It returns,
/// per token and row, the sum of the magnitudes of the sub-block sums it adds (scaled products
/// and offsets): they may nearly cancel, and a kernel adds them in another order, so float
/// rounding is relative to them, not to the result.
#[cfg(test)]
pub(super) fn k_tile_portable(
    (w, tile, q8, i, out): KTileArgs,
    tokens: usize,
) -> [[f32; ROWS]; super::tiles::MAX_TOKENS] {
    let mut magnitudes = [[0f32; ROWS]; super::tiles::MAX_TOKENS];
    let n = w.blocks;
    let group = group_bytes(w.dtype);
    for (t, out) in out.iter_mut().enumerate().take(tokens) {
        for (r, o) in out.iter_mut().take(ROWS).enumerate() {
            let mut total = 0f32;
            let mut magnitude = 0f32;
            for b in 0..n {
                let at = tile * n + b;
                let xb = (i + t) * n + b;
                let mut isum = 0i32;
                // The sum of the products' magnitudes, sub-block by sub-block.
                let mut isum_abs = 0i64;
                for g in 0..8 {
                    let base = at * 8 * group + g * group;
                    let mut halves = [0i32; 2];
                    for slot in 0..32 {
                        let (j, e) = (slot / 8, slot % 8);
                        let q = weight(w.dtype, w.qs, base, 8 * r + e, j);
                        let sc = w.sub_scales[at * 128 + 16 * g + 2 * r + e / 4];
                        let sc = if w.dtype == GgmlDType::Q2K {
                            (sc as u8 & 0x0F) as i32
                        } else {
                            sc as i32
                        };
                        halves[e / 4] += sc * q as i32 * q8.qs[xb * SUPER + 32 * g + slot] as i32;
                    }
                    isum += halves[0] + halves[1];
                    isum_abs += (halves[0].abs() + halves[1].abs()) as i64;
                }
                let offsets: Vec<i32> = if !matches!(w.dtype, GgmlDType::Q4K | GgmlDType::Q5K) {
                    (0..16)
                        .map(|k| {
                            let c = w.sub_scales[at * 128 + 16 * (k / 2) + 2 * r + k % 2];
                            let c = if w.dtype == GgmlDType::Q2K {
                                (c as u8 >> 4) as i32
                            } else {
                                c as i32
                            };
                            c * q8.sums16[16 * xb + k] as i32
                        })
                        .collect()
                } else {
                    (0..8)
                        .map(|g| {
                            w.sub_mins[at * 64 + 16 * (g / 2) + 2 * r + g % 2] as i32
                                * q8.sums32[8 * xb + g] as i32
                        })
                        .collect()
                };
                let offset: i32 = offsets.iter().sum();
                let offset_abs: i64 = offsets.iter().map(|o| o.abs() as i64).sum();
                let d = w.d[at * ROWS + r].to_f32();
                let dm = match w.dtype {
                    GgmlDType::Q6K => 32.0 * d,
                    GgmlDType::Q3K => 4.0 * d,
                    _ => w.dmin[at * ROWS + r].to_f32(),
                };
                let dx = q8.scales[xb];
                total += d * dx * isum as f32 - dm * dx * offset as f32;
                magnitude += (d * dx).abs() * isum_abs as f32 + (dm * dx).abs() * offset_abs as f32;
            }
            *o = total;
            magnitudes[t][r] = magnitude;
        }
    }
    magnitudes
}

/// The unsigned weight in slot `(j, e)` of tile lane `8r + e` in the group of `dtype` that
/// starts at `qs[base]`, read from the layout one bit field at a time: the reader the embedding
/// lookup dequantizes with, and the plain reference the SIMD tiles are tested against.
pub(super) fn weight(dtype: GgmlDType, qs: &[u8], base: usize, lane: usize, j: usize) -> u8 {
    // Where a plane of single bits keeps this lane's bit j (q5_K's fifth, q3_K's third).
    let (bit_byte, bit) = (lane % 32, 4 * (lane / 32) + j);
    match dtype {
        GgmlDType::Q2K | GgmlDType::Q3K => {
            let mut q = (qs[base + lane] >> (2 * j)) & 3;
            if dtype == GgmlDType::Q3K {
                q |= ((qs[base + 64 + bit_byte] >> bit) & 1) << 2;
            }
            q
        }
        _ => {
            let mut q = (qs[base + 64 * (j / 2) + lane] >> (4 * (j % 2))) & 0x0F;
            if dtype == GgmlDType::Q6K {
                q |= ((qs[base + 128 + lane] >> (2 * j)) & 3) << 4;
            }
            if dtype == GgmlDType::Q5K {
                q |= ((qs[base + 128 + bit_byte] >> bit) & 1) << 4;
            }
            q
        }
    }
}
