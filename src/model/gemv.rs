//! Matrix × vector for plain f32 weights: the whole cost of a decode step on an f32 model.
//!
//! One token's forward multiplies every weight matrix by a single vector, so the work is
//! reading the weights once; general GEMM routines tile for reuse that a vector cannot give.
//! Here each thread streams its own strip of rows with AVX2 FMA dot products.

use super::vmath::Widen;
use anyhow::{bail, Result};
use candle_core::{Device, Storage, Tensor};
use rayon::prelude::*;

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    super::quant::supported()
}

/// `w`: `(rows, cols)` contiguous f32 on the CPU; `x`: `cols` values → `rows` values.
pub fn gemv(w: &Tensor, x: &[f32]) -> Result<Vec<f32>> {
    let (rows, cols) = w.dims2()?;
    if x.len() != cols || !w.is_contiguous() {
        bail!("gemv: shape mismatch or non-contiguous weights");
    }
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("gemv runs on the CPU");
    };
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + rows * cols];
    let mut out = vec![0f32; rows];
    let strip = rows.div_ceil(4 * rayon::current_num_threads()).max(16);
    out.par_chunks_mut(strip).enumerate().for_each(|(s, dst)| {
        for (j, y) in dst.iter_mut().enumerate() {
            let r = s * strip + j;
            let row = &data[r * cols..(r + 1) * cols];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `supported()` is checked by the caller; `row` and `x` have `cols` values.
            {
                *y = unsafe { dot_avx2(row, x) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                *y = row.iter().zip(x).map(|(a, b)| a * b).sum();
            }
        }
    });
    Ok(out)
}

/// `x`: `(.., cols)` holding one vector → `(.., rows)`.
pub fn forward(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let y = gemv(w, &xs)?;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().unwrap() = y.len();
    Ok(Tensor::from_vec(y, shape, &Device::Cpu)?)
}

/// `Σ a·b` (`b` at least as long as `a`), with AVX2 FMA where the CPU has it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if supported() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;

    #[test]
    fn gemv_matches_matmul() {
        if !supported() {
            return;
        }
        for (rows, cols) in [(37, 100), (64, 2048), (5, 3)] {
            let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, 1, cols), &Device::Cpu).unwrap();
            let ours = forward(&w, &x).unwrap();
            let exact = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let diff: f32 = max_abs_diff(&ours, &exact).unwrap();
            assert!(diff < 1e-3, "{rows}x{cols}: {diff}");
        }
    }
}
