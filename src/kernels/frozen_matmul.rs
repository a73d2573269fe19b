//! `x Wᵀ` for a frozen weight: the product a plain matmul computes, but a backward pass that
//! returns only the input's gradient.
//!
//! candle's matmul backward computes the gradient of both operands, so during LoRA training every
//! frozen base weight would get a gradient of its full size that nobody reads: about a third of
//! the backward work and most of the peak memory. [`Linear`](crate::model::Linear) routes f32
//! CPU products through this op when the input carries a gradient.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

struct FrozenMatmul {
    /// `(out, in)`, f32, on the CPU.
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul needs a contiguous input")
        };
        let x = &storage.as_slice::<f32>()?[start..end];
        let mut dims = layout.dims().to_vec();
        let (out, inp) = self.weight.dims2()?;
        let x = Tensor::from_slice(x, (x.len() / inp, inp), &Device::Cpu)?;
        let y = x.matmul(&self.weight.t()?)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok((
            CpuStorage::F32(y.flatten_all()?.to_vec1()?),
            Shape::from(dims),
        ))
    }

    /// `dL/dx = dL/dy · W`; the weight's gradient is never formed.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let out = self.weight.dim(0)?;
        let rows = grad_res.elem_count() / out;
        let grad = grad_res
            .contiguous()?
            .reshape((rows, out))?
            .matmul(&self.weight)?;
        Ok(Some(grad.reshape(arg.shape())?))
    }
}

/// `x Wᵀ` with `x` `(.., in)` and `weight` `(out, in)`, both f32 on the CPU.
pub fn forward(x: &Tensor, weight: &Tensor) -> anyhow::Result<Tensor> {
    let op = FrozenMatmul {
        weight: weight.contiguous()?,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}
