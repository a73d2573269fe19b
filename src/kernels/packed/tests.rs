//! The packed matmul against the dequantized product and candle's, on every format and kernel
//! this CPU runs.

use super::*;
use crate::kernels::simd::max_abs_diff;
use candle_core::quantized::QMatMul;
use candle_core::Module;

/// Every kernel this CPU runs, on every format, against the exact product of the
/// dequantized weights and against candle's quantized matmul.
fn check(dtype: GgmlDType, n: usize, k: usize, m: usize) {
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
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
    let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap())
        .unwrap()
        .forward(&x)
        .unwrap();
    for isa in [Isa::Avx512Vnni, Isa::Avx2] {
        if !isa.available() {
            continue;
        }
        let ours = PackedMatrix::with_isa(&q, isa)
            .unwrap()
            .forward(&x)
            .unwrap();
        assert_eq!(ours.dims(), exact.dims());
        // Only the int8 rounding of the activations separates us from the exact product ...
        let diff = max_abs_diff(&ours, &exact);
        assert!(
            diff / scale < 2e-2,
            "{isa:?} {dtype:?} m={m}: {diff} vs {scale}"
        );
        // ... and from candle, which rounds them the same way, only the order of float
        // additions (and, for q8_0 where candle repacks, its 256-value activation blocks) and,
        // for the K formats, an activation exactly halfway between two steps: ggml (and we)
        // round it to even for q8_K, candle away from zero, one step apart.
        let tolerance = if dtype == GgmlDType::Q8_0 { 2e-2 } else { 1e-5 };
        let slack = if PackedMatrix::k_format(dtype) {
            q8_k_tie_slack(&x, &q)
        } else {
            vec![0.0; m]
        };
        let (ours_rows, theirs_rows): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (
            ours.squeeze(0).unwrap().to_vec2().unwrap(),
            theirs.squeeze(0).unwrap().to_vec2().unwrap(),
        );
        for (t, (a, b)) in ours_rows.iter().zip(&theirs_rows).enumerate() {
            let diff = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= tolerance * scale + slack[t],
                "{isa:?} {dtype:?} m={m} token {t}: candle differs by {diff} (scale {scale}, \
                 ties allow {})",
                slack[t]
            );
        }
    }
}

/// Per token of `x` `(1, m, k)`, how far an output may move when the activations that fall
/// exactly halfway between two q8_K steps round the other way: one step (`1/iscale`) times the
/// largest weight magnitude in that column, summed over the ties.
fn q8_k_tie_slack(x: &Tensor, q: &QTensor) -> Vec<f32> {
    let w: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
    let column_max: Vec<f32> = (0..w[0].len())
        .map(|j| w.iter().map(|row| row[j].abs()).fold(0f32, f32::max))
        .collect();
    let rows: Vec<Vec<f32>> = x.squeeze(0).unwrap().to_vec2().unwrap();
    rows.iter()
        .map(|row| {
            let mut slack = 0f32;
            for (b, block) in row.chunks_exact(256).enumerate() {
                let max = block
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                if max == 0.0 {
                    continue;
                }
                let iscale = -127.0 / max;
                for (j, &v) in block.iter().enumerate() {
                    let p = iscale * v;
                    if (p - p.trunc()).abs() == 0.5 {
                        slack += column_max[256 * b + j] / iscale.abs();
                    }
                }
            }
            slack
        })
        .collect()
}

#[test]
fn rows_dequantize_as_ggml_does() {
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
    ] {
        let w = Tensor::randn(0f32, 1.0, (11, 96), &Device::Cpu).unwrap();
        assert_rows_dequantize_as_ggml_does(&w, dtype);
    }
}

/// Every row of `w` quantized to `dtype`, read back from our layout on each kernel this CPU
/// runs, equals GGML's dequantization bit for bit.
fn assert_rows_dequantize_as_ggml_does(w: &Tensor, dtype: GgmlDType) {
    let q = QTensor::quantize(w, dtype).unwrap();
    let expected: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
    for isa in [Isa::Avx512Vnni, Isa::Avx2] {
        if !isa.available() {
            continue;
        }
        let m = PackedMatrix::with_isa(&q, isa).unwrap();
        for (r, row) in expected.iter().enumerate() {
            let mut got = vec![0f32; row.len()];
            m.dequantize_row(r, &mut got);
            assert_eq!(&got, row, "{isa:?} {dtype:?} row {r}");
        }
    }
}

#[test]
fn quantizing_slice_by_slice_equals_quantizing_whole() {
    if Isa::detect().is_none() {
        return;
    }
    // 600 rows: two full 256-row slices and a short one.
    let w = Tensor::randn(0f32, 1.0, (600, 64), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64), &Device::Cpu).unwrap();
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let whole = PackedMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let mut next = 0;
        let sliced = PackedMatrix::quantize(dtype, (600, 64), |n| {
            next += n;
            Ok(w.narrow(0, next - n, n)?)
        })
        .unwrap();
        assert_eq!(next, 600);
        let diff = max_abs_diff(&whole.forward(&x).unwrap(), &sliced.forward(&x).unwrap());
        assert_eq!(diff, 0.0, "{dtype:?}");
    }
}

#[test]
fn reading_stored_blocks_slice_by_slice_equals_taking_the_tensor_whole() {
    if Isa::detect().is_none() {
        return;
    }
    // 600 rows: two full 256-row slices and a short one; the reader ends with the matrix.
    let w = Tensor::randn(0f32, 1.0, (600, 256), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 256), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let whole = PackedMatrix::from_qtensor(&q).unwrap();
        let bytes = q.data().unwrap();
        let read = PackedMatrix::read(dtype, (600, 256), &mut &bytes[..]).unwrap();
        let diff = max_abs_diff(&whole.forward(&x).unwrap(), &read.forward(&x).unwrap());
        assert_eq!(diff, 0.0, "{dtype:?}");
        // A file cut short is an error, not a matrix of zeros.
        let short = &bytes[..bytes.len() - 1];
        assert!(PackedMatrix::read(dtype, (600, 256), &mut &short[..]).is_err());
    }
}

#[test]
fn a_group_equals_its_matrices_one_by_one() {
    if Isa::detect().is_none() {
        return;
    }
    let x: Vec<f32> = (0..5 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let mats: Vec<PackedMatrix> = [40, 8, 8]
        .iter()
        .map(|&n| {
            let w = Tensor::randn(0f32, 1.0, (n, 64), &Device::Cpu).unwrap();
            PackedMatrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()).unwrap()
        })
        .collect();
    let refs: Vec<&PackedMatrix> = mats.iter().collect();
    let grouped = matmul_group(&refs, &x, 5).unwrap();
    for (m, g) in mats.iter().zip(&grouped) {
        assert_eq!(&m.matmul(&x, 5), g);
    }
}

/// Every tile width the kernels have (1 to 9 tokens on VNNI, 1 to 4 on AVX2), and counts past
/// them that end in a narrower tile, on a format of each kind of weight and activation sum.
#[test]
fn every_tile_width_matches_dequantized_and_candle() {
    for m in 1..=MAX_TOKENS + 3 {
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
        ] {
            // 24 rows: a whole 16-row tile and a padded one, three 8-row tiles.
            check(dtype, 24, 64, m);
        }
    }
    for m in 1..=MAX_TOKENS + 1 {
        check(GgmlDType::Q4K, 16, 256, m);
    }
}

#[test]
fn q4_0_matches_dequantized_and_candle() {
    // Row counts off the 4-row tile, odd block counts, token counts off every tile.
    for (n, k, m) in [
        (96, 256, 1),
        (97, 256, 3),
        (64, 160, 4),
        (30, 64, 9),
        (50, 288, 70),
    ] {
        check(GgmlDType::Q4_0, n, k, m);
    }
}

#[test]
fn q8_0_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 96, 6)] {
        check(GgmlDType::Q8_0, n, k, m);
    }
}

#[test]
fn q4_1_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (101, 32, 5)] {
        check(GgmlDType::Q4_1, n, k, m);
    }
}

/// Weights whose blocks span many magnitudes: rows scaled from 1e-3 to 1e3, an all-zero block,
/// and one block with a single large outlier, as trained checkpoints have.
fn uneven_weights(n: usize, k: usize) -> Tensor {
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    let mut values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    for (r, row) in values.chunks_exact_mut(k).enumerate() {
        let scale = 10f32.powi(r as i32 % 7 - 3);
        row.iter_mut().for_each(|v| *v *= scale);
        match r % 5 {
            1 => row[..256].fill(0.0),
            2 => row[3] = 300.0 * scale,
            _ => {}
        }
    }
    Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap()
}

#[test]
fn k_rows_dequantize_as_ggml_does() {
    for dtype in [
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        assert_rows_dequantize_as_ggml_does(&uneven_weights(11, 512), dtype);
    }
}

#[test]
fn q4_k_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 512, 5), (40, 768, 9), (16, 256, 70)] {
        check(GgmlDType::Q4K, n, k, m);
    }
}

#[test]
fn q5_k_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 512, 5), (40, 768, 9)] {
        check(GgmlDType::Q5K, n, k, m);
    }
}

#[test]
fn q2_k_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 512, 5), (40, 768, 9)] {
        check(GgmlDType::Q2K, n, k, m);
    }
}

#[test]
fn q3_k_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 512, 5), (40, 768, 9), (16, 256, 70)] {
        check(GgmlDType::Q3K, n, k, m);
    }
}

#[test]
fn q6_k_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (33, 512, 5), (40, 768, 9)] {
        check(GgmlDType::Q6K, n, k, m);
    }
}

/// The SIMD tiles against the plain Rust one, on blocks of every magnitude: the integer sums
/// are exact, so only the float order may differ, by a few roundings of the terms summed (the
/// weights are random, so the bound must hold for any draw).
#[test]
fn k_tiles_equal_the_plain_arithmetic() {
    use super::super::k_tiles::k_tile_portable;
    let (n, k, m) = (24, 512, 3);
    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.61).sin() * 2.0).collect();
    for dtype in [
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let q = QTensor::quantize(&uneven_weights(n, k), dtype).unwrap();
        for isa in [Isa::Avx512Vnni, Isa::Avx2] {
            if !isa.available() {
                continue;
            }
            let w = PackedMatrix::with_isa(&q, isa).unwrap();
            let got = w.matmul(&x, m);
            let Activations::Q8K(q8) = w.quantize_input(&x, m) else {
                panic!("a K format takes q8_K activations");
            };
            let weights = KTileWeights {
                dtype,
                blocks: w.blocks,
                d: &w.scales,
                dmin: &w.dmins,
                sub_scales: &w.sub_scales,
                sub_mins: &w.sub_mins,
                qs: &w.qs,
            };
            for tile in 0..n / ROWS {
                let mut acc = [[0f32; WIDE_ROWS]; MAX_TOKENS];
                let magnitudes = k_tile_portable((&weights, tile, &q8, 0, &mut acc), m);
                for (t, row) in acc.iter().enumerate().take(m) {
                    for (dr, &expected) in row.iter().take(ROWS).enumerate() {
                        let ours = got[t * n + tile * ROWS + dr];
                        let rounding = 8.0 * f32::EPSILON * magnitudes[t][dr];
                        assert!(
                            (ours - expected).abs() <= rounding.max(1e-6),
                            "{isa:?} {dtype:?} token {t} row {}: {ours} vs {expected} (terms {})",
                            tile * ROWS + dr,
                            magnitudes[t][dr]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q5_0_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (97, 576, 3), (30, 64, 9)] {
        check(GgmlDType::Q5_0, n, k, m);
    }
}

#[test]
fn q5_1_matches_dequantized_and_candle() {
    for (n, k, m) in [(96, 256, 1), (101, 32, 5)] {
        check(GgmlDType::Q5_1, n, k, m);
    }
}
