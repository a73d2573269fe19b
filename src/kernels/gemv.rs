//! Matrix × vector for plain f32 weights: the whole cost of a decode step on an f32 model.
//!
//! One token's forward multiplies every weight matrix by a single vector, so the work is
//! reading the weights once; general GEMM routines tile for reuse that a vector cannot give.
//! Here each thread streams its own strip of rows with AVX2 FMA dot products.

use super::simd;
use anyhow::{bail, Result};
use candle_core::{Device, Storage, Tensor};

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
    super::pool::for_each_chunk_mut(&mut out, strip, |s, dst| {
        for (j, y) in dst.iter_mut().enumerate() {
            let r = s * strip + j;
            let row = &data[r * cols..(r + 1) * cols];
            *y = simd::dot(row, x);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_matches_matmul() {
        for (rows, cols) in [(37, 100), (64, 2048), (5, 3)] {
            let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, 1, cols), &Device::Cpu).unwrap();
            let ours = forward(&w, &x).unwrap();
            let exact = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let diff = super::super::simd::max_abs_diff(&ours, &exact);
            assert!(diff < 1e-3, "{rows}x{cols}: {diff}");
        }
    }
}
