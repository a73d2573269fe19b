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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The backward pass against central finite differences of `L = Σ c ⊙ (x Wᵀ)²`, one input
    /// at a time: a wrong transpose, scale or row layout in `bwd` shows up as a mismatch.
    #[test]
    fn the_input_gradient_equals_finite_differences() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..4 * 5).map(|i| (i as f32 * 1.3).sin() * 0.9).collect();
        let weight = Tensor::from_vec(w, (4, 5), &dev)?;
        let x = Var::from_tensor(&Tensor::ones((2, 3, 5), candle_core::DType::F32, &dev)?)?;
        let grads = forward(x.as_tensor(), &weight)?.sum_all()?.backward()?;
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "the input has a gradient"
        );
        assert!(grads.get(&weight).is_none(), "the frozen weight has none");
        super::super::backprop::tests::check_gradient_within(1e-3, &[2, 3, 5], &|x| {
            Ok(forward(x, &weight)?.sqr()?)
        });
        Ok(())
    }
}
