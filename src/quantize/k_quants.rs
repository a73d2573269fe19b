//! The K-quant block quantizers: `q2_K`, `q3_K`, `q4_K`, `q5_K` and `q6_K`.
//!
//! Each 256-value super-block is cut into sub-blocks (16 of 16 values for `q2_K`, 8 of 32 for the
//! others); every sub-block gets its own scale and minimum, `x ≈ scale·q − min`, and those are
//! stored as small integers times two f16 super-block factors. Finding a sub-block's scale and
//! minimum is a small least-squares fit, [`fit_scale_min`]: llama.cpp tries a few step counts
//! around `nmax / (max − min)` and keeps the one with the least weighted error. Candle's
//! quantizers use an older fit, so these follow llama.cpp's (`quantize_row_q4_K_ref` and
//! friends in `ggml-quants.c`), and our files match its values to the rounding.
//!
//! The byte layouts are GGML's: `q4_K` is `d, dmin: f16; scales: [u8; 12]; qs: [u8; 128]`,
//! `q5_K` adds `qh: [u8; 32]` (the fifth bits) before `qs`, `q2_K` is
//! `scales: [u8; 16]; qs: [u8; 64]; d, dmin: f16` and `q6_K` (symmetric: a scale, no minimum)
//! is `ql: [u8; 128]; qh: [u8; 64]; scales: [i8; 16]; d: f16`; `q3_K` (symmetric too) is
//! `hmask: [u8; 32]; qs: [u8; 64]; scales: [u8; 12]; d: f16`.

// The block loops index several parallel arrays (values, levels, scales) by sub-block, as the
// formats are described.
#![allow(clippy::needless_range_loop)]

use half::f16;

const QK_K: usize = 256;

/// Rounds to the nearest integer, ties to even, as GGML's `nearest_int` does.
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Fits `x ≈ scale·l − min` with integer levels `l` in `0..=nmax`, minimising the error weighted
/// by `weights` (squared, or absolute with `use_mad`). Starting from the plain range fit, it
/// tries `nstep + 1` other level counts `nmax + rmin + rdelta·k`, each on the range from the
/// best minimum so far, and keeps the best least-squares (scale, min). Returns `(scale, min)` with `min ≥ 0` and writes the levels.
#[allow(clippy::too_many_arguments)]
fn fit_scale_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: usize,
    use_mad: bool,
    levels: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let mut lo = x[0];
    let mut hi = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        lo = lo.min(x[i]);
        hi = hi.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if lo > 0.0 {
        lo = 0.0;
    }
    if hi == lo {
        levels.fill(0);
        return (0.0, -lo);
    }
    let error = |scale: f32, min: f32, l: u8, x: f32| {
        let diff = scale * l as f32 + min - x;
        if use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let mut iscale = nmax as f32 / (hi - lo);
    let mut scale = 1.0 / iscale;
    let mut min = lo;
    let mut best_error = 0.0;
    for i in 0..n {
        levels[i] = nearest_int(iscale * (x[i] - lo)).clamp(0, nmax) as u8;
        best_error += weights[i] * error(scale, min, levels[i], x[i]);
    }
    let mut trial = [0u8; 32];
    for step in 0..=nstep {
        // Each trial grid starts from the best minimum so far, as llama.cpp's does.
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (hi - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut this_error = 0.0;
            for i in 0..n {
                this_error += weights[i] * error(this_scale, this_min, trial[i], x[i]);
            }
            if this_error < best_error {
                levels[..n].copy_from_slice(&trial[..n]);
                best_error = this_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The value of largest magnitude (the first, on ties) and that magnitude: the symmetric
/// formats map it to their most negative level.
fn largest_magnitude(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Packs 2-bit levels (`q2_K`, and the low bits of `q3_K`): each 128 values are four runs of 32,
/// in bits 0-1, 2-3, 4-5 and 6-7 of 32 bytes.
fn pack_2bit(levels: &[u8], out: &mut Vec<u8>) {
    for chunk in levels.chunks_exact(128) {
        out.extend((0..32).map(|i| {
            chunk[i] | (chunk[i + 32] << 2) | (chunk[i + 64] << 4) | (chunk[i + 96] << 6)
        }));
    }
}

/// Fits `x ≈ scale·l` with integer levels `l` in `-nmax..nmax`, weighting each value by its
/// square (large values matter most). Starting from the scale that maps the largest magnitude
/// to `-nmax`, it tries 18 nearby ones and keeps the best least-squares scale. Returns the scale
/// and writes the levels shifted to `0..2·nmax`.
fn fit_scale(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (max, amax) = largest_magnitude(x);
    if amax < 1e-15 {
        levels.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set_levels = |iscale: f32, levels: &mut [u8]| {
        for (l, &v) in levels.iter_mut().zip(x) {
            *l = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    set_levels(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_levels(iscale, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Fits `x ≈ scale·l` with `l` in `-nmax..nmax` for `q3_K`: from the scale that maps the largest
/// magnitude to `-nmax`, up to five passes move single levels where that raises the weighted
/// (by `x²`) least-squares fit. Returns the scale and writes the levels shifted to `0..2·nmax`
/// (all zero for an all-zero `x`, as llama.cpp leaves them).
fn fit_scale_by_moves(x: &[f32], nmax: i32, levels: &mut [i8]) -> f32 {
    let (max, amax) = largest_magnitude(x);
    if amax < 1e-15 {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as i8;
        let (w, lf) = (v * v, *l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let old = levels[i] as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != levels[i] as i32 {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        levels[i] = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for l in levels.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Packs the eight 6-bit (scale, min) pairs of a `q4_K`/`q5_K` super-block into 12 bytes.
fn pack_scales_6bit(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = (scales[j], mins[j]);
        if j < 4 {
            out[j] = ls;
            out[j + 4] = lm;
        } else {
            out[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            out[j - 4] |= (ls >> 4) << 6;
            out[j] |= (lm >> 4) << 6;
        }
    }
    out
}

/// The eight 32-value sub-blocks of a `q4_K` or `q5_K` super-block, at `nmax` levels: the packed
/// scales, the two f16 factors and the levels.
fn quantize_super_block_6bit_scales(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: usize,
) -> ([u8; 12], f16, f16, [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let sub = &x[32 * j..32 * (j + 1)];
        let mut sum_x2 = 0f32;
        for &v in sub {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(sub) {
            *w = av_x + v.abs();
        }
        let (s, m) = fit_scale_min(
            sub,
            &weights,
            nmax,
            rmin,
            0.1,
            nstep,
            false,
            &mut levels[32 * j..32 * (j + 1)],
        );
        scales[j] = s;
        mins[j] = m;
    }
    let max_scale = scales.iter().fold(0f32, |a, &s| if s > a { s } else { a });
    let max_min = mins.iter().fold(0f32, |a, &m| if m > a { m } else { a });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    // The levels again, against the scales as stored (6-bit integers times f16 factors).
    for j in 0..8 {
        let d_j = d.to_f32() * ls[j] as f32;
        if d_j == 0.0 {
            continue;
        }
        let m_j = dmin.to_f32() * lm[j] as f32;
        for i in 32 * j..32 * (j + 1) {
            levels[i] = nearest_int((x[i] + m_j) / d_j).clamp(0, nmax) as u8;
        }
    }
    (pack_scales_6bit(&ls, &lm), d, dmin, levels)
}

/// Quantizes `x` (a multiple of 256 values) to `q4_K` blocks of 144 bytes.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK_K, 0, "q4_K needs rows of a multiple of 256");
    let mut out = Vec::with_capacity(x.len() / QK_K * 144);
    for block in x.chunks_exact(QK_K) {
        let (scales, d, dmin, l) = quantize_super_block_6bit_scales(block, 15, -1.0, 20);
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&scales);
        // Each 64 values: the first 32 in the low nibbles, the next 32 in the high ones.
        for chunk in l.chunks_exact(64) {
            out.extend((0..32).map(|i| chunk[i] | (chunk[i + 32] << 4)));
        }
    }
    out
}

/// Quantizes `x` (a multiple of 256 values) to `q5_K` blocks of 176 bytes.
pub fn quantize_q5_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK_K, 0, "q5_K needs rows of a multiple of 256");
    let mut out = Vec::with_capacity(x.len() / QK_K * 176);
    for block in x.chunks_exact(QK_K) {
        let (scales, d, dmin, l) = quantize_super_block_6bit_scales(block, 31, -0.5, 15);
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&scales);
        // The fifth bits: pair k of 32-value sub-blocks uses bits 2k and 2k+1 of qh.
        let mut qh = [0u8; 32];
        let mut qs = [0u8; 128];
        for (k, chunk) in l.chunks_exact(64).enumerate() {
            for i in 0..32 {
                let (lo, hi) = (chunk[i], chunk[i + 32]);
                qh[i] |= ((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1));
                qs[32 * k + i] = (lo & 0xF) | ((hi & 0xF) << 4);
            }
        }
        out.extend_from_slice(&qh);
        out.extend_from_slice(&qs);
    }
    out
}

/// Quantizes `x` (a multiple of 256 values) to `q2_K` blocks of 84 bytes.
pub fn quantize_q2_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK_K, 0, "q2_K needs rows of a multiple of 256");
    let mut out = Vec::with_capacity(x.len() / QK_K * 84);
    for block in x.chunks_exact(QK_K) {
        let mut levels = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
        let mut weights = [0f32; 16];
        for j in 0..16 {
            let sub = &block[16 * j..16 * (j + 1)];
            for (w, &v) in weights.iter_mut().zip(sub) {
                *w = v.abs();
            }
            let lv = &mut levels[16 * j..16 * (j + 1)];
            (scales[j], mins[j]) = fit_scale_min(sub, &weights, 3, -0.5, 0.1, 15, true, lv);
        }
        let max_scale = scales.iter().fold(0f32, |a, &s| if s > a { s } else { a });
        let max_min = mins.iter().fold(0f32, |a, &m| if m > a { m } else { a });
        // 4-bit scale in the low nibble, 4-bit min in the high one.
        let mut packed = [0u8; 16];
        let mut d = f16::ZERO;
        let mut dmin = f16::ZERO;
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                packed[j] = nearest_int(iscale * scales[j]) as u8;
            }
            d = f16::from_f32(max_scale / 15.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                packed[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
            }
            dmin = f16::from_f32(max_min / 15.0);
        }
        for j in 0..16 {
            let d_j = d.to_f32() * (packed[j] & 0xF) as f32;
            if d_j == 0.0 {
                continue;
            }
            let m_j = dmin.to_f32() * (packed[j] >> 4) as f32;
            for i in 16 * j..16 * (j + 1) {
                levels[i] = nearest_int((block[i] + m_j) / d_j).clamp(0, 3) as u8;
            }
        }
        out.extend_from_slice(&packed);
        pack_2bit(&levels, &mut out);
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
    }
    out
}

/// Quantizes `x` (a multiple of 256 values) to `q3_K` blocks of 110 bytes.
pub fn quantize_q3_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK_K, 0, "q3_K needs rows of a multiple of 256");
    let mut out = Vec::with_capacity(x.len() / QK_K * 110);
    for block in x.chunks_exact(QK_K) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0f32; 16];
        for j in 0..16 {
            let range = 16 * j..16 * (j + 1);
            scales[j] = fit_scale_by_moves(&block[range.clone()], 4, &mut levels[range]);
        }
        let (max_scale, _) = largest_magnitude(&scales);
        // Sixteen 6-bit scales: low nibbles in bytes 0-7, the two high bits in bytes 8-11.
        let mut packed = [0u8; 12];
        let mut d = f16::ZERO;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                let l = (nearest_int(iscale * s) as i8).clamp(-32, 31) as i32 + 32;
                if j < 8 {
                    packed[j] = (l & 0xF) as u8;
                } else {
                    packed[j - 8] |= ((l & 0xF) << 4) as u8;
                }
                packed[j % 4 + 8] |= ((l >> 4) << (2 * (j / 4))) as u8;
            }
            d = f16::from_f32(1.0 / iscale);
        }
        let mut shifted = [0u8; QK_K];
        for j in 0..16 {
            let low = if j < 8 {
                packed[j] & 0xF
            } else {
                packed[j - 8] >> 4
            };
            let sc = (low | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
            let d_j = d.to_f32() * sc as f32;
            for i in 16 * j..16 * (j + 1) {
                shifted[i] = if d_j == 0.0 {
                    // A zero scale: any level reads back as 0; llama.cpp keeps the fit's.
                    levels[i] as u8
                } else {
                    (nearest_int(block[i] / d_j).clamp(-4, 3) + 4) as u8
                };
            }
        }
        // The third bit of value j goes to bit j / 32 of hmask[j % 32].
        let mut hmask = [0u8; 32];
        for (j, l) in shifted.iter_mut().enumerate() {
            if *l > 3 {
                hmask[j % 32] |= 1 << (j / 32);
                *l -= 4;
            }
        }
        out.extend_from_slice(&hmask);
        // With the third bits in hmask, every level is 0..=3.
        pack_2bit(&shifted, &mut out);
        out.extend_from_slice(&packed);
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Quantizes `x` (a multiple of 256 values) to `q6_K` blocks of 210 bytes.
pub fn quantize_q6_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK_K, 0, "q6_K needs rows of a multiple of 256");
    let mut out = Vec::with_capacity(x.len() / QK_K * 210);
    for block in x.chunks_exact(QK_K) {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        for j in 0..16 {
            scales[j] = fit_scale(
                &block[16 * j..16 * (j + 1)],
                32,
                &mut levels[16 * j..16 * (j + 1)],
            );
        }
        let (max_scale, max_abs) = largest_magnitude(&scales);
        if max_abs < 1e-15 {
            out.extend(std::iter::repeat_n(0u8, 210));
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let mut packed = [0i8; 16];
        for j in 0..16 {
            packed[j] = nearest_int(iscale * scales[j]).min(127) as i8;
            let d_j = d.to_f32() * packed[j] as f32;
            if d_j == 0.0 {
                continue;
            }
            for i in 16 * j..16 * (j + 1) {
                levels[i] = (nearest_int(block[i] / d_j).clamp(-32, 31) + 32) as u8;
            }
        }
        // Each 128 values: low nibbles of runs 0 and 2, then of 1 and 3; the two high bits of
        // all four runs in one byte.
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (k, chunk) in levels.chunks_exact(128).enumerate() {
            for i in 0..32 {
                let q = [chunk[i], chunk[i + 32], chunk[i + 64], chunk[i + 96]];
                ql[64 * k + i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
                ql[64 * k + i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
                qh[32 * k + i] =
                    (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(packed.iter().map(|&s| s as u8));
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::Device;
    use std::borrow::Cow;

    fn values(n: usize) -> Vec<f32> {
        // A smooth signal with outliers, so sub-blocks get different scales and minimums.
        (0..n)
            .map(|i| {
                ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32)
                    + if i % 97 == 0 { 9.0 } else { 0.0 }
            })
            .collect()
    }

    fn round_trip(bytes: Vec<u8>, dtype: GgmlDType, n: usize) -> Vec<f32> {
        let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype).unwrap();
        let q = QTensor::new(storage, (n,)).unwrap();
        q.dequantize(&Device::Cpu).unwrap().to_vec1().unwrap()
    }

    /// Candle's dequantizer reads our bytes back close to the input: a wrong layout would
    /// scramble the values. (Whether they are llama.cpp's values is checked against llama.cpp
    /// in `tests/integration/quantize.rs`; its fit minimises a weighted error, so plain squared
    /// error is no ranking against candle's quantizer.)
    #[test]
    fn our_k_quants_read_back_through_candle_s_dequantizer() {
        let x = values(1024);
        let energy = x.iter().map(|v| v * v).sum::<f32>();
        for (dtype, ours, bound) in [
            (GgmlDType::Q4K, quantize_q4_k(&x), 0.01),
            (GgmlDType::Q5K, quantize_q5_k(&x), 0.003),
            (GgmlDType::Q2K, quantize_q2_k(&x), 0.12),
            (GgmlDType::Q6K, quantize_q6_k(&x), 0.001),
            (GgmlDType::Q3K, quantize_q3_k(&x), 0.05),
        ] {
            assert_eq!(ours.len(), x.len() / dtype.block_size() * dtype.type_size());
            let back = round_trip(ours, dtype, x.len());
            let err = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>();
            assert!(
                err < energy * bound,
                "{dtype:?}: squared error {err} of {energy}"
            );
        }
    }

    #[test]
    fn an_all_zero_block_stays_zero() {
        let x = vec![0f32; 256];
        for (dtype, bytes) in [
            (GgmlDType::Q4K, quantize_q4_k(&x)),
            (GgmlDType::Q5K, quantize_q5_k(&x)),
            (GgmlDType::Q2K, quantize_q2_k(&x)),
            (GgmlDType::Q6K, quantize_q6_k(&x)),
            (GgmlDType::Q3K, quantize_q3_k(&x)),
        ] {
            assert!(
                round_trip(bytes, dtype, 256).iter().all(|&v| v == 0.0),
                "{dtype:?}"
            );
        }
    }
}
