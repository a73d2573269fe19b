//! A CPU matmul for GGML-quantized weights (`q4_0`, `q4_1`, `q8_0`), written for AVX2.
//!
//! Why our own: on CPUs without AVX-512, candle 0.11 multiplies these formats one block at a
//! time, has no SIMD kernel for `q4_1` at all, and treats a prefill like many separate vector
//! products. Here the weights are split at load time into plain arrays (scales,
//! offsets, nibbles) and each unpacked weight block is reused for up to four activation rows,
//! so a prefill shares the unpacking work.
//!
//! The arithmetic is GGML's, operation for operation, so results equal candle's (and
//! `quantized_llama`'s) bit for bit: a weight block of 32 values is `d·(q - 8)` (`q4_0`) or
//! `d·q + m` (`q4_1`) with `q` in 0..15, or `d·q` with `q` in -127..127 (`q8_0`); activations are quantized to int8 blocks `dx·qx`
//! (GGML's q8_0 / q8_1), and each block contributes an exact integer dot product scaled by
//! `d·dx` (plus `m·dx·Σqx` for `q4_1`).

use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

const BLOCK: usize = 32;

/// A `(rows, cols)` quantized matrix in the layout the kernel reads.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
    /// Per block: the scale `d` ...
    scales: Vec<f32>,
    /// ... and, for q4_1, the offset `m`.
    mins: Vec<f32>,
    /// q4: 16 bytes per block, value `j` in the low nibble of byte `j` and value `j + 16` in its
    /// high one; q8_0: 32 signed bytes per block.
    qs: Vec<u8>,
}

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Activations quantized to int8 blocks, one row per input row.
struct Q8Rows {
    qs: Vec<i8>,
    scales: Vec<f32>,
    /// `dx · Σ qx` per block as GGML's q8_1 stores it (in f16), for the q4_1 offset term.
    sums: Vec<f32>,
}

fn quantize_rows(x: &[f32], rows: usize, cols: usize) -> Q8Rows {
    let blocks = cols / BLOCK;
    let mut qs = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * blocks];
    let mut sums = vec![0f32; rows * blocks];
    for b in 0..rows * blocks {
        let src = &x[b * BLOCK..(b + 1) * BLOCK];
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut s = 0i32;
        for (q, v) in qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(src) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            s += r;
        }
        // Stored in f16 like GGML's q8 blocks, so results match candle's bit for bit.
        let d16 = f16::from_f32(d);
        scales[b] = d16.to_f32();
        sums[b] = (f16::from_f32(s as f32) * d16).to_f32();
    }
    Q8Rows { qs, scales, sums }
}

impl QuantMatrix {
    /// Whether the kernel handles this format.
    pub fn handles(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0)
    }

    /// Splits a `q4_0`, `q4_1` or `q8_0` tensor into the kernel's layout.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            bail!("a quantized matrix needs rows of a multiple of {BLOCK} values, got {cols}");
        }
        let (block_bytes, has_min) = match q.dtype() {
            GgmlDType::Q4_0 => (18, false),
            GgmlDType::Q4_1 => (20, true),
            GgmlDType::Q8_0 => (34, false),
            other => bail!("QuantMatrix holds q4_0, q4_1 or q8_0, not {other:?}"),
        };
        let data = q.data()?;
        let n = rows * cols / BLOCK;
        if data.len() != n * block_bytes {
            bail!("unexpected size of a {:?} tensor", q.dtype());
        }
        let mut scales = Vec::with_capacity(n);
        let mut mins = Vec::with_capacity(n);
        let mut qs_all = Vec::with_capacity(n * (block_bytes - 2));
        for block in data.chunks_exact(block_bytes) {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            let qs = if has_min {
                mins.push(f16::from_le_bytes([block[2], block[3]]).to_f32());
                &block[4..]
            } else {
                &block[2..]
            };
            scales.push(d);
            qs_all.extend_from_slice(qs);
        }
        Ok(Self {
            dtype: q.dtype(),
            rows,
            cols,
            scales,
            mins,
            qs: qs_all,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn size_in_bytes(&self) -> usize {
        self.qs.len() + 4 * (self.scales.len() + self.mins.len())
    }

    /// `x`: `(.., cols)` f32 on the CPU → `(.., rows)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let cols = *dims.last().unwrap_or(&0);
        if cols != self.cols {
            bail!(
                "QuantMatrix: input has {cols} columns, the matrix {}",
                self.cols
            );
        }
        let m = x.elem_count() / cols;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let q8 = quantize_rows(&xs, m, cols);
        let mut out = vec![0f32; m * self.rows];
        // Work split over output rows: each task owns a strip of columns of `out`. A few strips
        // per thread balance the load without paying for many task hand-offs.
        let tasks = 4 * rayon::current_num_threads();
        let strip = self.rows.div_ceil(tasks).next_multiple_of(8).max(8);
        let strips: Vec<(usize, Vec<f32>)> = (0..self.rows.div_ceil(strip))
            .into_par_iter()
            .map(|s| {
                let r0 = s * strip;
                let r1 = (r0 + strip).min(self.rows);
                let mut local = vec![0f32; m * (r1 - r0)];
                self.rows_times(&q8, m, r0, r1, &mut local);
                (r0, local)
            })
            .collect();
        for (r0, local) in strips {
            let width = local.len() / m;
            for i in 0..m {
                out[i * self.rows + r0..i * self.rows + r0 + width]
                    .copy_from_slice(&local[i * width..(i + 1) * width]);
            }
        }
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.rows;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }

    /// Weight rows `r0..r1` times all activation rows, into `out[i * (r1 - r0) + (r - r0)]`.
    fn rows_times(&self, q8: &Q8Rows, m: usize, r0: usize, r1: usize, out: &mut [f32]) {
        let width = r1 - r0;
        let mut i = 0;
        while i < m {
            let tile = (m - i).min(4);
            for r in r0..r1 {
                let mut acc = [0f32; 4];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `supported()` was checked before a QuantMatrix was put to use, and
                // every slice below covers whole blocks of row `r` and rows `i..i + tile`.
                unsafe {
                    match self.dtype {
                        GgmlDType::Q4_0 => dot_rows_avx2::<Q4_0>(self, r, q8, i, tile, &mut acc),
                        GgmlDType::Q4_1 => dot_rows_avx2::<Q4_1>(self, r, q8, i, tile, &mut acc),
                        _ => dot_rows_avx2::<Q8_0>(self, r, q8, i, tile, &mut acc),
                    }
                }
                for t in 0..tile {
                    out[(i + t) * width + (r - r0)] = acc[t];
                }
            }
            i += tile;
        }
    }
}

// Kernel variants, as const generics so each format compiles to its own branch-free loop.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// One weight row against up to four activation rows, all blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2<const KIND: u8>(
    w: &QuantMatrix,
    r: usize,
    q8: &Q8Rows,
    i: usize,
    tile: usize,
    acc: &mut [f32; 4],
) {
    use std::arch::x86_64::*;
    let blocks = w.cols / BLOCK;
    let wb = r * blocks;
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    let q4_1 = KIND == Q4_1;
    let mut vacc = [_mm256_setzero_ps(); 4];
    let mut sacc = [0f32; 4];
    for b in 0..blocks {
        let d = w.scales[wb + b];
        // The block's weights as 32 bytes, unpacked once and reused for every activation row.
        let q = if KIND == Q8_0 {
            _mm256_loadu_si256(w.qs.as_ptr().add((wb + b) * 32) as *const __m256i)
        } else {
            let packed = _mm_loadu_si128(w.qs.as_ptr().add((wb + b) * 16) as *const __m128i);
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low)
        };
        if !q4_1 {
            // GGML's q4_0 × q8_0 and q8_0 × q8_0: signed weights · qx, summed per lane in f32
            // (for q4_0 the signed weight is q - 8).
            let qs = if KIND == Q4_0 {
                _mm256_sub_epi8(q, eight)
            } else {
                q
            };
            let abs = _mm256_sign_epi8(qs, qs);
            for (t, acc) in vacc.iter_mut().enumerate().take(tile) {
                let xb = (i + t) * blocks + b;
                let x = _mm256_loadu_si256(q8.qs.as_ptr().add(xb * BLOCK) as *const __m256i);
                let dot =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(abs, _mm256_sign_epi8(x, qs)), ones);
                let scale = _mm256_set1_ps(d * q8.scales[xb]);
                *acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), *acc);
            }
        } else {
            // GGML's q4_1 × q8_1: an exact integer Σ q·qx, then d·dx and the offset m·s.
            let m = w.mins[wb + b];
            for (t, acc) in sacc.iter_mut().enumerate().take(tile) {
                let xb = (i + t) * blocks + b;
                let x = _mm256_loadu_si256(q8.qs.as_ptr().add(xb * BLOCK) as *const __m256i);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), ones);
                let s = _mm_add_epi32(
                    _mm256_extracti128_si256(dot, 1),
                    _mm256_castsi256_si128(dot),
                );
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                let sumi = _mm_cvtsi128_si32(s);
                *acc += sumi as f32 * d * q8.scales[xb] + m * q8.sums[xb];
            }
        }
    }
    for t in 0..tile {
        acc[t] = if !q4_1 {
            let v = vacc[t];
            let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        } else {
            sacc[t]
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    fn check(dtype: GgmlDType, m: usize) {
        if !supported() {
            return;
        }
        let (n, k) = (96, 256);
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let ours = QuantMatrix::from_qtensor(&q).unwrap().forward(&x).unwrap();
        // Against the exact product of the dequantized weights: only the int8 rounding of
        // the activations separates the two.
        let exact = x
            .matmul(
                &q.dequantize(&Device::Cpu)
                    .unwrap()
                    .t()
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap();
        let scale: f32 = exact.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let diff: f32 = max_abs_diff(&ours, &exact).unwrap();
        assert!(diff / scale < 2e-2, "{dtype:?} m={m}: {diff} vs {scale}");
        // And candle's own quantized matmul. Where candle runs GGML's block kernels, ours does
        // the same operations in the same order, so the two agree bit for bit.
        let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        let diff: f32 = max_abs_diff(&ours, &theirs).unwrap();
        if candle_repacks(dtype) {
            assert!(
                diff / scale < 2e-2,
                "{dtype:?} m={m}: candle differs by {diff}"
            );
        } else {
            assert_eq!(diff, 0.0, "{dtype:?} m={m}: candle differs by {diff}");
        }
    }

    /// Whether candle 0.11 takes its repacked path for this format: on a CPU with VNNI it
    /// repacks q8_0 weights and quantizes the activations in 256-value superblocks (its
    /// `repack_x86` module), a different rounding from GGML's 32-value blocks.
    fn candle_repacks(dtype: GgmlDType) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni"))
                || is_x86_feature_detected!("avxvnni");
            dtype == GgmlDType::Q8_0 && vnni
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = dtype;
            false
        }
    }

    #[test]
    fn q4_0_matches_dequantized_and_candle() {
        for m in [1, 3, 4, 9] {
            check(GgmlDType::Q4_0, m);
        }
    }

    #[test]
    fn q8_0_matches_dequantized_and_candle() {
        for m in [1, 6] {
            check(GgmlDType::Q8_0, m);
        }
    }

    #[test]
    fn q4_1_matches_dequantized_and_candle() {
        for m in [1, 5] {
            check(GgmlDType::Q4_1, m);
        }
    }
}
