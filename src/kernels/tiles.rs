//! The quantized matmul's micro-kernels: a tile of weight rows ([`WIDE_ROWS`] with AVX-512
//! VNNI, [`ROWS`] with AVX2) times up to [`MAX_TOKENS`] tokens, one per instruction set. The
//! layout they read and the loop that hands them tiles are [`super::packed`]'s; the int8
//! activations are [`super::q8`]'s.
//!
//! Intel AMX, where the CPU has it, does not pay for tiles of a few tokens: its tile multiply
//! reads the weights from memory as bytes, so every block's nibbles go out to a buffer and back
//! into a tile register, and its int32 results go out again for the per-block scales; that
//! round trip costs more than VNNI's eight `vpdpbusd` per token up to 9 tokens (SmolLM2-135M's
//! matrices times 2 tokens: 2.5 ms with VNNI, 3.6–5.4 ms with AMX; times 5: 3.9 ms and
//! 4.8–5.1 ms; AVX-512 VNNI host with AMX, 2 threads).

use super::q8::{Q8Rows, BLOCK};
use candle_core::quantized::GgmlDType;
use half::f16;

/// Weight rows per AVX2 (and K-format) micro-kernel tile, interleaved in storage; matrices are
/// padded to a multiple of it. Eight rows of eight bytes fill a 512-bit register, four of them
/// a 256-bit one.
pub(super) const ROWS: usize = 8;
/// Weight rows per AVX-512 VNNI tile of the 32-value formats: sixteen rows of four bytes fill a
/// 512-bit register, one row per 32-bit lane, so `vpdpbusd` leaves each row's sum in a lane
/// of its own and the convert, scale and accumulate that follow serve 16 rows, not 8, with no
/// horizontal sums at the end. Against 8-row tiles (two lanes per row): a single-thread
/// micro-benchmark of q4_1 tiles of 9 tokens, 1.54–1.65 → 1.18–1.25 ns per 8 rows × 32 values ×
/// token; SmolLM2-135M's matrices times 64 tokens, 40.8/42.4 → 36.1/36.5 ms; its forward over
/// 9 tokens after 250, 10.2–10.3 → 9.8–10.0 ms; one token unchanged at 3.7–4.0 ms (AVX-512
/// VNNI host, 2 threads).
pub(super) const WIDE_ROWS: usize = 16;
/// The most tokens a tile takes: a speculative verification of K = 8 drafts (9 tokens) in one
/// pass over the weights rather than a tile of 8 and another of 1 that unpacks every weight
/// again (SmolLM2-135M's matrices times 9 tokens: 9.2–9.7 ms in two passes, 8.1–8.7 ms in
/// one, where 8 tokens take 7.8–8.7 ms; AVX-512 VNNI host, 2 threads). Longer runs go in tiles
/// of [`STEP_TOKENS`].
pub(super) const MAX_TOKENS: usize = 9;
/// The tile width of runs longer than [`MAX_TOKENS`]. Wider VNNI tiles fit in the 32 zmm
/// registers but cost more per token: SmolLM2-135M's matrices times 64 tokens took 40–42 ms in
/// tiles of 8 and 45–47 ms in tiles of 12 (AVX-512 VNNI host, 2 threads).
pub(super) const STEP_TOKENS: usize = 8;
/// The most tokens an AVX2 tile takes: two accumulators per token (one per half of the rows)
/// beside four weight registers fill most of the 16 ymm registers at 4 tokens. Against tiles of
/// 2, tiles of 4 cut SmolLM2-135M's matrices times 64 tokens from 130–134 ms to 100–101 ms and
/// times 9 tokens from 20.7–21.8 ms to 16.9–19.5 ms (tiles of 3: 17.4–19.0 ms), and a Gemma 3
/// 270M q4_K_M forward over 9 tokens from 54 ms to 47 ms (AVX2 kernels forced on an AVX-512
/// VNNI host, 2 threads).
pub(super) const AVX2_TOKENS: usize = 4;

/// What the micro-kernels read of a packed matrix (see `PackedMatrix`'s fields for the layout).
pub(super) struct TileWeights<'a> {
    pub dtype: GgmlDType,
    /// Blocks per row.
    pub blocks: usize,
    pub scales: &'a [f16],
    /// q4_1's and q5_1's offsets `m`, laid out like `scales` (empty for other formats).
    pub mins: &'a [f16],
    pub qs: &'a [u8],
    /// q5's fifth bits, 32 bytes per block (empty for other formats).
    pub qh: &'a [u8],
}

/// A tile's results: `[token][row]`, the first [`ROWS`] or [`WIDE_ROWS`] rows.
pub(super) type Accumulators = [[f32; WIDE_ROWS]; MAX_TOKENS];

/// What every micro-kernel takes: the matrix, the tile of rows, the activations, the first
/// token, and where the results go.
pub(super) type TileArgs<'a> = (
    &'a TileWeights<'a>,
    usize,
    &'a Q8Rows,
    usize,
    &'a mut Accumulators,
);

/// Asks for the weights, scales and offsets of a tile's block 128 row-blocks ahead of block
/// `at` (16 blocks of an 8-row tile, 8 of a 16-row one), in a tile of `rows` rows whose blocks
/// hold `bytes` of weights each. Decode streams every weight once, so it is bound by memory
/// bandwidth; without the hint a 5632 × 2048 q4_0 matrix streamed at 19 GB/s on 2 threads, with
/// it at 26–28 GB/s (AVX-512 VNNI host, 4-row tiles).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(w: &TileWeights, at: usize, (rows, bytes): (usize, usize)) {
    use std::arch::x86_64::*;
    let at = at + 128 / rows;
    // A prefetch never faults, so running past the end of the matrix is harmless.
    let ahead = w.qs.as_ptr().wrapping_add(at * bytes) as *const i8;
    let scales = w.scales.as_ptr().wrapping_add(at * rows) as *const i8;
    // SAFETY: prefetching has no effect on memory or program state.
    unsafe {
        for line in 0..bytes / 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        }
        _mm_prefetch::<_MM_HINT_T0>(scales);
        if !w.mins.is_empty() {
            let mins = w.mins.as_ptr().wrapping_add(at * rows) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(mins);
        }
    }
}

/// The kinds of packed weight, for [`tile_avx2`]'s `KIND`: 4-bit values (`q4_0`, `q4_1`), 4-bit
/// values with a fifth bit from `qh` (`q5_0`, `q5_1`), and bytes (`q8_0`).
pub(super) const NIBBLES: u8 = 0;
pub(super) const NIBBLES_AND_BIT: u8 = 1;
pub(super) const BYTES: u8 = 2;

/// How an activation block's sum enters a tile, for the micro-kernels' `SUM`: not at all
/// (`q8_0` on AVX2); as the integer sum's start `-shift·Σqx`, for weights stored unsigned
/// (`q4_0`, `q5_0`, and `q8_0` on VNNI); or as the float offset `m·dx·Σqx` (`q4_1`, `q5_1`),
/// one more FMA per block and token.
pub(super) const NO_SUM: u8 = 0;
pub(super) const SHIFT: u8 = 1;
pub(super) const OFFSET: u8 = 2;

/// One block of a tile's tokens: where the first token's entry of each field of [`Q8Rows`]
/// lies, the other tokens' following it (the layout is block-major), so the kernels address
/// every token from one pointer at fixed offsets.
#[derive(Clone, Copy)]
struct TokenBlocks {
    qs: *const i8,
    scales: *const f32,
    sums: *const f32,
    start: *const i32,
}

impl TokenBlocks {
    /// Block `b` of tokens `i..`. Nothing is read here, and a field `q8` lacks (`sums` or
    /// `start`) gives a pointer that is never read.
    #[inline(always)]
    fn new(q8: &Q8Rows, i: usize, b: usize) -> Self {
        let x0 = q8.at(i, b);
        Self {
            qs: q8.qs.as_ptr().wrapping_add(x0 * BLOCK),
            scales: q8.scales.as_ptr().wrapping_add(x0),
            sums: q8.sums.as_ptr().wrapping_add(x0),
            start: q8.start.as_ptr().wrapping_add(x0),
        }
    }

    /// The eight activation bytes `8j..8j + 8` of token `t`, as one 64-bit lane.
    ///
    /// # Safety
    /// Token `i + t` (of [`TokenBlocks::new`]) is one of the activations', and `j < 4`.
    #[inline(always)]
    unsafe fn lane(self, t: usize, j: usize) -> i64 {
        // SAFETY: per the caller, the 8 bytes lie inside the entry of token `i + t`.
        unsafe { (self.qs.add(t * BLOCK + 8 * j) as *const i64).read_unaligned() }
    }

    /// The four activation bytes `4j..4j + 4` of token `t`, as one 32-bit lane.
    ///
    /// # Safety
    /// Token `i + t` (of [`TokenBlocks::new`]) is one of the activations', and `j < 8`.
    #[inline(always)]
    unsafe fn group(self, t: usize, j: usize) -> i32 {
        // SAFETY: per the caller, the 4 bytes lie inside the entry of token `i + t`.
        unsafe { (self.qs.add(t * BLOCK + 4 * j) as *const i32).read_unaligned() }
    }

    /// Token `t`'s scale `dx`.
    ///
    /// # Safety
    /// As [`TokenBlocks::lane`]'s.
    #[inline(always)]
    unsafe fn scale(self, t: usize) -> f32 {
        // SAFETY: per the caller, token `i + t` has an entry.
        unsafe { *self.scales.add(t) }
    }

    /// Token `t`'s `dx · Σqx`.
    ///
    /// # Safety
    /// As [`TokenBlocks::lane`]'s, and the activations have sums.
    #[inline(always)]
    unsafe fn sum(self, t: usize) -> f32 {
        // SAFETY: per the caller, token `i + t` has a sum.
        unsafe { *self.sums.add(t) }
    }

    /// Token `t`'s start `-shift · Σqx`.
    ///
    /// # Safety
    /// As [`TokenBlocks::lane`]'s, and the activations have starts.
    #[inline(always)]
    unsafe fn start(self, t: usize) -> i32 {
        // SAFETY: per the caller, token `i + t` has a start.
        unsafe { *self.start.add(t) }
    }
}

/// A tile of [`WIDE_ROWS`] weight rows × `T` tokens with AVX-512 VNNI: per block, eight
/// `vpdpbusd` per token, each multiplying four values of all 16 rows by the same four
/// activation bytes, so lane `r` sums row `r`'s products; one convert, one multiply and one FMA
/// (two with an offset) then scale and add the block for all 16 rows. Every lane is a row, so
/// the float work per row is half what 8 rows of eight values in a register cost, and the
/// tile's sums need no horizontal step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const SUM: u8, const T: usize>((w, tile, q8, i, out): TileArgs) {
    // SAFETY: the caller (`PackedMatrix::tile`, through `tile_vnni_tokens`) guarantees AVX-512
    // VNNI, a tile of the matrix in the wide layout (rows are padded to whole tiles), tokens
    // `i..i + T` within `q8`, and the starts (`SHIFT`) or the sums and `w.mins` (`OFFSET`), so
    // every block `at` of `w` and every entry of `q8` read below exists.
    unsafe {
        use std::arch::x86_64::*;
        let n = w.blocks;
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..n {
            let at = tile * n + b;
            let bytes = if w.dtype == GgmlDType::Q8_0 { 32 } else { 16 } * WIDE_ROWS;
            prefetch(w, at, (WIDE_ROWS, bytes));
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(
                w.scales.as_ptr().add(at * WIDE_ROWS) as *const __m256i
            ));
            let m = if SUM == OFFSET {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    w.mins.as_ptr().add(at * WIDE_ROWS) as *const __m256i
                ))
            } else {
                _mm512_setzero_ps()
            };
            // Vector j: values 4j..4j + 4 of every row.
            let wq: [__m512i; 8] = if w.dtype == GgmlDType::Q8_0 {
                let p = w.qs.as_ptr().add(at * 32 * WIDE_ROWS);
                std::array::from_fn(|j| _mm512_loadu_si512(p.add(64 * j) as *const __m512i))
            } else {
                let p = w.qs.as_ptr().add(at * 16 * WIDE_ROWS);
                let mut wq = [_mm512_setzero_si512(); 8];
                for k in 0..4 {
                    let v = _mm512_loadu_si512(p.add(64 * k) as *const __m512i);
                    wq[2 * k] = _mm512_and_si512(v, low);
                    wq[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                }
                if !w.qh.is_empty() {
                    let plane =
                        _mm512_loadu_si512(w.qh.as_ptr().add(at * 4 * WIDE_ROWS) as *const __m512i);
                    super::simd::or_bit_plane_wide(&mut wq, plane);
                }
                wq
            };
            let x = TokenBlocks::new(q8, i, b);
            for (t, acc) in acc.iter_mut().enumerate() {
                let mut dot = if SUM == SHIFT {
                    _mm512_set1_epi32(x.start(t))
                } else {
                    _mm512_setzero_si512()
                };
                for (j, wq) in wq.iter().enumerate() {
                    dot = _mm512_dpbusd_epi32(dot, *wq, _mm512_set1_epi32(x.group(t, j)));
                }
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(x.scale(t)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
                if SUM == OFFSET {
                    *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(x.sum(t)), *acc);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out[t].as_mut_ptr(), *acc);
        }
    }
}

/// A tile of `ROWS` weight rows × `T` tokens with AVX2: the VNNI kernel's scheme on 256-bit
/// registers, four rows at a time, with `vpmaddubsw` + `vpmaddwd` for the byte products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const KIND: u8, const SUM: u8, const T: usize>(
    (w, tile, q8, i, out): TileArgs,
) {
    // SAFETY: the caller (`PackedMatrix::tile`, through `tile_avx2_tokens`) guarantees AVX2,
    // FMA and F16C, a tile of the matrix (rows are padded to whole tiles), tokens `i..i + T`
    // within `q8`, and the starts (`SHIFT`) or the sums and `w.mins` (`OFFSET`), so every block
    // `at` of `w` and every entry of `q8` read below exists.
    unsafe {
        use std::arch::x86_64::*;
        let n = w.blocks;
        // One copy per kind of weight, so that no branch on the format stays in the loop and
        // the accumulators stay in registers.
        let q8_weights = KIND == BYTES;
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let pairs = [
            _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0),
            _mm256_set_epi32(7, 7, 6, 6, 5, 5, 4, 4),
        ];
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for b in 0..n {
            let at = tile * n + b;
            prefetch(w, at, (ROWS, if q8_weights { 256 } else { 128 }));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(
                w.scales.as_ptr().add(at * ROWS) as *const __m128i
            ));
            let m = if SUM == OFFSET {
                _mm256_cvtph_ps(_mm_loadu_si128(
                    w.mins.as_ptr().add(at * ROWS) as *const __m128i
                ))
            } else {
                _mm256_setzero_ps()
            };
            let xs = TokenBlocks::new(q8, i, b);
            // Rows 4h..4h + 4 are the h-th half of every 64-byte vector.
            for h in 0..2 {
                let dh = _mm256_permutevar8x32_ps(d, pairs[h]);
                // Row r's offset into lane 2r alone, as the two lanes are summed at the end.
                let mh = _mm256_blend_ps::<0x55>(
                    _mm256_setzero_ps(),
                    _mm256_permutevar8x32_ps(m, pairs[h]),
                );
                let wq: [__m256i; 4] = if q8_weights {
                    let p = w.qs.as_ptr().add(at * 256 + 32 * h);
                    [0, 1, 2, 3].map(|j| _mm256_loadu_si256(p.add(64 * j) as *const __m256i))
                } else {
                    let p = w.qs.as_ptr().add(at * 128 + 32 * h);
                    let p0 = _mm256_loadu_si256(p as *const __m256i);
                    let p1 = _mm256_loadu_si256(p.add(64) as *const __m256i);
                    let mut wq = [
                        _mm256_and_si256(p0, low),
                        _mm256_and_si256(_mm256_srli_epi16(p0, 4), low),
                        _mm256_and_si256(p1, low),
                        _mm256_and_si256(_mm256_srli_epi16(p1, 4), low),
                    ];
                    if KIND == NIBBLES_AND_BIT {
                        let plane =
                            _mm256_loadu_si256(w.qh.as_ptr().add(at * 32) as *const __m256i);
                        super::simd::or_bit_plane::<4>(&mut wq, plane, h);
                    }
                    wq
                };
                for (t, acc) in acc.iter_mut().enumerate() {
                    let x = [0, 1, 2, 3].map(|j| _mm256_set1_epi64x(xs.lane(t, j)));
                    let mut dot = if q8_weights {
                        // |q| times sign-adjusted x, as GGML does; the int16 pairs of one product
                        // can reach 2·127·128, so each goes to int32 on its own.
                        let mut dot = _mm256_setzero_si256();
                        for j in 0..4 {
                            let products = _mm256_maddubs_epi16(
                                _mm256_sign_epi8(wq[j], wq[j]),
                                _mm256_sign_epi8(x[j], wq[j]),
                            );
                            dot = _mm256_add_epi32(dot, _mm256_madd_epi16(products, ones));
                        }
                        dot
                    } else {
                        // Nibbles or q5 (0..31) times int8: the four products' int16 pairs sum
                        // to at most 4·2·31·127, so they add up in int16 before one widening.
                        let p01 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(wq[0], x[0]),
                            _mm256_maddubs_epi16(wq[1], x[1]),
                        );
                        let p23 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(wq[2], x[2]),
                            _mm256_maddubs_epi16(wq[3], x[3]),
                        );
                        _mm256_madd_epi16(_mm256_add_epi16(p01, p23), ones)
                    };
                    if SUM == SHIFT {
                        dot = _mm256_add_epi32(
                            dot,
                            _mm256_blend_epi32::<0x55>(
                                _mm256_setzero_si256(),
                                _mm256_set1_epi32(xs.start(t)),
                            ),
                        );
                    }
                    let scale = _mm256_mul_ps(dh, _mm256_set1_ps(xs.scale(t)));
                    acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[h]);
                    if SUM == OFFSET {
                        acc[h] = _mm256_fmadd_ps(mh, _mm256_set1_ps(xs.sum(t)), acc[h]);
                    }
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            for (h, half) in acc.iter().enumerate() {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *half);
                for r in 0..4 {
                    out[t][4 * h + r] = lanes[2 * r] + lanes[2 * r + 1];
                }
            }
        }
    }
}

/// [`tile_vnni`] for a tile of `tokens` tokens, any number from 1 to [`MAX_TOKENS`]: each width
/// is its own copy, so that a speculative verification of 3 tokens passes over the weights
/// once, not as a tile of 2 and another of 1 that unpacks every weight again (SmolLM2-135M's
/// matrices times 3 tokens: 3.1–3.4 ms in two passes, 2.6–2.9 ms in one; times 5 tokens:
/// 4.2–4.4 ms and 3.6–3.9 ms; AVX-512 VNNI host, 2 threads).
///
/// # Safety
/// As [`tile_vnni`]'s.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn tile_vnni_tokens<const SUM: u8>(tokens: usize, args: TileArgs) {
    macro_rules! widths {
        ($($t:literal)*) => {
            match tokens {
                $($t => tile_vnni::<SUM, $t>(args),)*
                _ => unreachable!("a tile takes 1 to 9 tokens, not {tokens}"),
            }
        };
    }
    // SAFETY: the caller guarantees what `tile_vnni` needs, for `tokens` tokens.
    unsafe { widths!(1 2 3 4 5 6 7 8 9) }
}

/// [`tile_avx2`] for a tile of `tokens` (1 to [`AVX2_TOKENS`]) tokens.
///
/// # Safety
/// As [`tile_avx2`]'s.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn tile_avx2_tokens<const KIND: u8, const SUM: u8>(
    tokens: usize,
    args: TileArgs,
) {
    // SAFETY: the caller guarantees what `tile_avx2` needs, for `tokens` tokens.
    unsafe {
        match tokens {
            1 => tile_avx2::<KIND, SUM, 1>(args),
            2 => tile_avx2::<KIND, SUM, 2>(args),
            3 => tile_avx2::<KIND, SUM, 3>(args),
            4 => tile_avx2::<KIND, SUM, 4>(args),
            _ => unreachable!("an AVX2 tile takes 1 to 4 tokens, not {tokens}"),
        }
    }
}
