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
        let values =
            |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin() * 0.9).collect() };
        let weight = Tensor::from_vec(values(4 * 5, 1.3), (4, 5), &dev)?;
        let c = Tensor::from_vec(values(2 * 3 * 4, 0.7), (2, 3, 4), &dev)?;
        let x0 = values(2 * 3 * 5, 2.1);
        let loss = |x: &Tensor| -> anyhow::Result<Tensor> {
            Ok((forward(x, &weight)?.sqr()? * &c)?.sum_all()?)
        };
        let x = Var::from_tensor(&Tensor::from_vec(x0.clone(), (2, 3, 5), &dev)?)?;
        let grads = loss(x.as_tensor())?.backward()?;
        let analytic: Vec<f32> = grads
            .get(x.as_tensor())
            .expect("the input has a gradient")
            .flatten_all()?
            .to_vec1()?;
        assert!(grads.get(&weight).is_none(), "the frozen weight has none");
        let eps = 1e-2f32;
        for i in 0..x0.len() {
            let at = |d: f32| -> anyhow::Result<f64> {
                let mut xs = x0.clone();
                xs[i] += d;
                let x = Tensor::from_vec(xs, (2, 3, 5), &dev)?;
                Ok(loss(&x)?.to_scalar::<f32>()? as f64)
            };
            let numeric = (at(eps)? - at(-eps)?) / (2.0 * eps as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() < 1e-3 * (1.0 + numeric.abs()),
                "input {i}: backward {a}, finite differences {numeric}"
            );
        }
        Ok(())
    }
}
