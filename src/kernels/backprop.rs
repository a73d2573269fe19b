//! Training's element-wise ops fused, each with its backward pass written out: RMSNorm and
//! LayerNorm under a frozen scale, the scaled and masked softmax of attention, `silu(g) ⊙ u`,
//! rotary embeddings, and the summed cross-entropy of the loss.
//!
//! candle composes these from a dozen small ops whose backward passes allocate a tensor per
//! step, some of them on the strided (broadcast) path: for SmolLM2's batch of 4 × 93 tokens,
//! they and candle's element-wise thread pool took about half of a training step, as long as
//! every matmul together. Here each op is one pass forward and one pass back over the rows,
//! split over the threads.
//!
//! The backward formulas are the textbook ones; each has a finite-difference test below. The
//! ops take f32 tensors on the CPU ([`applies`]); they return the gradient of their input
//! only, so the norm's scale, the rotation angles and the mask are constants (LoRA freezes
//! the scales; an op given a trainable scale would drop its gradient, so callers fall back to
//! candle's composed ops there).

use super::simd;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether these ops can take `x`: f32 on the CPU.
pub fn applies(x: &Tensor) -> bool {
    x.dtype() == DType::F32 && x.device().is_cpu()
}

/// The values of a custom op's contiguous f32 input.
fn input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op} needs a contiguous input")
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// A copy of a tensor's values in row-major order (a strided view is gathered).
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

/// `f(row index, input row, output row)` over rows of `cols` values, in parallel.
fn map_rows(x: &[f32], cols: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (y, x))| f(r, x, y));
    y
}

/// Like [`map_rows`] over two inputs of the same shape.
fn map_rows2(
    a: &[f32],
    b: &[f32],
    cols: usize,
    f: impl Fn(usize, &[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(cols)
        .zip(a.par_chunks(cols).zip(b.par_chunks(cols)))
        .enumerate()
        .for_each(|(r, (y, (a, b)))| f(r, a, b, y));
    y
}

// ---------------------------------------------------------------------------------------------
// Norms

/// RMSNorm `x̂ = x / sqrt(mean(x²) + ε)` or LayerNorm `x̂ = (x - mean) / sqrt(var + ε)`, then
/// `y = x̂ ⊙ w (+ b)`, over the last axis.
struct Norm {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    eps: f32,
    /// LayerNorm (centred) rather than RMSNorm.
    centred: bool,
}

impl Norm {
    /// The row's mean (0 for RMSNorm) and `1 / sqrt(var + ε)`.
    fn stats(&self, x: &[f32]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = if self.centred {
            x.iter().sum::<f32>() / n
        } else {
            0.0
        };
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        "norm-with-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(storage, layout, self.name())?;
        let y = map_rows(x, self.weight.len(), |_, x, y| {
            let (mean, r) = self.stats(x);
            for (i, (y, x)) in y.iter_mut().zip(x).enumerate() {
                let b = self.bias.as_ref().map_or(0.0, |b| b[i]);
                *y = (x - mean) * r * self.weight[i] + b;
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// With `ĝ = g ⊙ w`: RMSNorm `dx = r (ĝ - x̂ mean(ĝ ⊙ x̂))`; LayerNorm also subtracts
    /// `mean(ĝ)`, the centring's share.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (x, g) = (values(arg)?, values(grad_res)?);
        let cols = self.weight.len();
        let dx = map_rows2(&x, &g, cols, |_, x, g, dx| {
            let (mean, r) = self.stats(x);
            let (mut g_mean, mut gx_mean) = (0f32, 0f32);
            for i in 0..cols {
                let gw = g[i] * self.weight[i];
                g_mean += gw;
                gx_mean += gw * (x[i] - mean) * r;
            }
            let (g_mean, gx_mean) = (g_mean / cols as f32, gx_mean / cols as f32);
            let g_mean = if self.centred { g_mean } else { 0.0 };
            for i in 0..cols {
                let x_hat = (x[i] - mean) * r;
                dx[i] = r * (g[i] * self.weight[i] - g_mean - x_hat * gx_mean);
            }
        });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// RMSNorm (`bias` None, `centred` false) or LayerNorm over the last axis of `x`, with a
/// frozen `weight` (and `bias`).
pub fn norm(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
    centred: bool,
) -> anyhow::Result<Tensor> {
    let op = Norm {
        weight: values(weight)?,
        bias: bias.map(values).transpose()?,
        eps,
        centred,
    };
    if op.weight.len() != x.dim(candle_core::D::Minus1)? {
        anyhow::bail!("norm: weight {:?} for input {:?}", weight.dims(), x.dims());
    }
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------------------------------------
// Attention's softmax

/// `softmax(scale · s + mask)` over the last axis, where row `r` takes mask row `r % seq`
/// (attention's scores are `(.., seq, total)` blocks, the mask `(seq, total)`).
struct MaskedSoftmax {
    scale: f32,
    mask: Option<Vec<f32>>,
    seq: usize,
    total: usize,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax-with-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = input(storage, layout, self.name())?;
        let y = map_rows(s, self.total, |r, s, y| {
            let row = r % self.seq * self.total;
            let mask = self.mask.as_ref().map(|m| &m[row..row + self.total]);
            for (i, (y, s)) in y.iter_mut().zip(s).enumerate() {
                *y = s * self.scale + mask.map_or(0.0, |m| m[i]);
            }
            let max = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            y.iter_mut().for_each(|y| *y -= max);
            simd::exp_in_place(y);
            let sum: f32 = y.iter().sum();
            y.iter_mut().for_each(|y| *y /= sum);
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// `ds = scale · y ⊙ (g - Σ g ⊙ y)`: the softmax's Jacobian `diag(y) - y yᵀ`, the mask a
    /// constant.
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (y, g) = (values(res)?, values(grad_res)?);
        let ds = map_rows2(&y, &g, self.total, |_, y, g, ds| {
            let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            for ((ds, y), g) in ds.iter_mut().zip(y).zip(g) {
                *ds = self.scale * y * (g - dot);
            }
        });
        Ok(Some(Tensor::from_vec(ds, arg.shape(), arg.device())?))
    }
}

/// `softmax(scale · scores + mask)` over the last axis of `scores` `(.., total)`, whose rows
/// cycle through the mask's `(seq, total)` rows (0 or -inf): row `r` takes mask row `r % seq`,
/// as in attention's `(.., groups · seq, total)` scores. No mask: plain scaled softmax.
pub fn masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> anyhow::Result<Tensor> {
    let total = scores.dim(candle_core::D::Minus1)?;
    let rows = scores.elem_count() / total.max(1);
    let (seq, mask) = match mask {
        Some(m) => {
            let (seq, width) = m.dims2()?;
            if width != total || seq == 0 || !rows.is_multiple_of(seq) {
                anyhow::bail!(
                    "masked_softmax: mask {:?} for scores {:?}",
                    m.dims(),
                    scores.dims()
                )
            }
            (seq, Some(values(&m.to_dtype(DType::F32)?)?))
        }
        None => (1, None),
    };
    let op = MaskedSoftmax {
        scale: scale as f32,
        mask,
        seq,
        total,
    };
    Ok(scores.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(g) ⊙ u`.
struct SiluMul;

/// `s ← σ(g) = 1 / (1 + e^-g)`, the exponentials eight at a time.
fn sigmoid_into(g: &[f32], s: &mut [f32]) {
    for (s, g) in s.iter_mut().zip(g) {
        *s = -g;
    }
    simd::exp_in_place(s);
    for s in s.iter_mut() {
        *s = 1.0 / (1.0 + *s);
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul-with-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (input(s1, l1, self.name())?, input(s2, l2, self.name())?);
        if l1.shape() != l2.shape() {
            bail!("silu-mul: gate {:?}, up {:?}", l1.dims(), l2.dims())
        }
        let cols = *l1.dims().last().unwrap_or(&1);
        let h = map_rows2(g, u, cols.max(1), |_, g, u, h| {
            h.copy_from_slice(g);
            super::swiglu::swiglu_in_place(h, u);
        });
        Ok((CpuStorage::F32(h), l1.shape().clone()))
    }

    /// `du = dh ⊙ silu(g)`, `dg = dh ⊙ u ⊙ σ(g) (1 + g (1 - σ(g)))`.
    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gv, uv, dh) = (values(g)?, values(u)?, values(grad_res)?);
        let cols = (*g.dims().last().unwrap_or(&1)).max(1);
        let (mut dg, mut du) = (vec![0f32; gv.len()], vec![0f32; gv.len()]);
        dg.par_chunks_mut(cols)
            .zip(du.par_chunks_mut(cols))
            .zip(gv.par_chunks(cols).zip(uv.par_chunks(cols)))
            .zip(dh.par_chunks(cols))
            .for_each(|(((dg, du), (g, u)), dh)| {
                sigmoid_into(g, du); // σ(g), then du in place
                for i in 0..g.len() {
                    let s = du[i];
                    dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = dh[i] * g[i] * s;
                }
            });
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
        ))
    }
}

/// `silu(g) ⊙ u` for training (the inference version is [`super::swiglu`]).
pub fn silu_mul(g: &Tensor, u: &Tensor) -> anyhow::Result<Tensor> {
    Ok(g.contiguous()?.apply_op2(&u.contiguous()?, SiluMul)?)
}

// ---------------------------------------------------------------------------------------------
// Rotary embeddings

/// Rotates pairs of each row `(.., seq, dim)` by the angles of its position: `(a, b) ↦ (a cos
/// - b sin, b cos + a sin)`. The pairs are `(i, i + dim/2)` (`interleaved` false, Llama's
/// Hugging Face layout) or `(2i, 2i + 1)`.
struct Rotate {
    /// `(seq, dim/2)` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
    seq: usize,
    dim: usize,
    interleaved: bool,
}

impl Rotate {
    /// Rotates every row of `x` by `sign` times its angles (-1 undoes the rotation, which is
    /// also its backward: a rotation's Jacobian is the rotation, its transpose the inverse).
    fn apply(&self, x: &[f32], sign: f32) -> Vec<f32> {
        let half = self.dim / 2;
        map_rows(x, self.dim, |r, x, y| {
            let at = r % self.seq * half;
            for i in 0..half {
                let (c, s) = (self.cos[at + i], sign * self.sin[at + i]);
                let (ia, ib) = if self.interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                y[ia] = x[ia] * c - x[ib] * s;
                y[ib] = x[ib] * c + x[ia] * s;
            }
        })
    }
}

impl CustomOp1 for Rotate {
    fn name(&self) -> &'static str {
        "rotary-with-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(storage, layout, self.name())?;
        Ok((CpuStorage::F32(self.apply(x, 1.0)), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dx = self.apply(&values(grad_res)?, -1.0);
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Rotary embeddings of `x` `(.., seq, dim)` with `cos`, `sin` `(seq, dim/2)`: candle's
/// `rope` (`interleaved` false) or `rope_i`, with a backward pass.
pub fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> anyhow::Result<Tensor> {
    let (seq, dim) = match x.dims() {
        [.., seq, dim] => (*seq, *dim),
        dims => anyhow::bail!("rotate: input {dims:?} needs (seq, dim)"),
    };
    if cos.dims() != [seq, dim / 2] || sin.dims() != cos.dims() || dim % 2 != 0 {
        anyhow::bail!(
            "rotate: cos {:?}, sin {:?} for input {:?}",
            cos.dims(),
            sin.dims(),
            x.dims()
        );
    }
    let op = Rotate {
        cos: values(cos)?,
        sin: values(sin)?,
        seq,
        dim,
        interleaved,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------------------------------------
// The loss

/// `Σ_rows -log softmax(logits)[target]` as a scalar.
struct CrossEntropySum {
    targets: Vec<u32>,
}

/// The row's `log Σ e^x`.
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut e: Vec<f32> = x.iter().map(|v| v - max).collect();
    simd::exp_in_place(&mut e);
    max + e.iter().sum::<f32>().ln()
}

impl CustomOp1 for CrossEntropySum {
    fn name(&self) -> &'static str {
        "cross-entropy-with-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(storage, layout, self.name())?;
        let vocab = x.len() / self.targets.len().max(1);
        let loss: f64 = x
            .par_chunks(vocab.max(1))
            .zip(self.targets.par_iter())
            .map(|(row, &t)| (log_sum_exp(row) - row[t as usize]) as f64)
            .sum();
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    /// `dlogits = dloss · (softmax(logits) - onehot(target))` per row.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let x = values(arg)?;
        let dloss = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let vocab = x.len() / self.targets.len().max(1);
        let dx = map_rows(&x, vocab.max(1), |r, x, dx| {
            let lse = log_sum_exp(x);
            for (dx, x) in dx.iter_mut().zip(x) {
                *dx = x - lse;
            }
            simd::exp_in_place(dx);
            dx.iter_mut().for_each(|dx| *dx *= dloss);
            dx[self.targets[r] as usize] -= dloss;
        });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// The summed cross-entropy of `logits` `(n, vocab)` against `targets` `(n,)`: a scalar.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> anyhow::Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    let targets: Vec<u32> = targets.to_vec1()?;
    if targets.len() != n || targets.iter().any(|&t| t as usize >= vocab) {
        anyhow::bail!(
            "cross_entropy_sum: {} targets for {n} rows of {vocab}",
            targets.len()
        );
    }
    if n == 0 {
        return Ok(Tensor::zeros((), DType::F32, logits.device())?);
    }
    Ok(logits
        .contiguous()?
        .apply_op1(CrossEntropySum { targets })?)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn ramp(n: usize, k: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * k).sin() * 1.5).collect()
    }

    /// Checks the gradient of `Σ c ⊙ f(x)` (a fixed, uneven, nonzero `c`) against central
    /// finite differences at every input value, within `tolerance · (1 + |numeric|)`.
    pub(in crate::kernels) fn check_gradient_within(
        tolerance: f64,
        dims: &[usize],
        f: &dyn Fn(&Tensor) -> anyhow::Result<Tensor>,
    ) {
        let dev = Device::Cpu;
        let n: usize = dims.iter().product();
        let x0 = ramp(n, 0.37);
        let loss = |x: &Tensor| -> Tensor {
            let y = f(x).unwrap();
            let c: Vec<f32> = (0..y.elem_count())
                .map(|i| 0.5 + (i as f32 * 0.91).sin())
                .collect();
            let c = Tensor::from_vec(c, y.shape(), &dev).unwrap();
            (y * c).unwrap().sum_all().unwrap()
        };
        let x = Var::from_tensor(&Tensor::from_vec(x0.clone(), dims, &dev).unwrap()).unwrap();
        let grads = loss(x.as_tensor()).backward().unwrap();
        let analytic = values(grads.get(x.as_tensor()).expect("a gradient")).unwrap();
        let eps = 1e-2f32;
        for i in 0..n {
            let at = |d: f32| -> f64 {
                let mut xs = x0.clone();
                xs[i] += d;
                let x = Tensor::from_vec(xs, dims, &dev).unwrap();
                loss(&x).to_scalar::<f32>().unwrap() as f64
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() < tolerance * (1.0 + numeric.abs()),
                "value {i}: backward {a}, finite differences {numeric}"
            );
        }
    }

    fn check_gradient(dims: &[usize], f: &dyn Fn(&Tensor) -> anyhow::Result<Tensor>) {
        check_gradient_within(2e-3, dims, f)
    }

    /// Each forward equals candle's composed op (which records its own gradient).
    fn same(a: &Tensor, b: &Tensor) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn norms() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(ramp(6, 1.1), 6, &dev).unwrap();
        let b = Tensor::from_vec(ramp(6, 0.3), 6, &dev).unwrap();
        let x = Tensor::from_vec(ramp(18, 0.7), (3, 6), &dev).unwrap();
        same(
            &norm(&x, &w, None, 1e-5, false).unwrap(),
            &candle_nn::ops::rms_norm_slow(&x, &w, 1e-5).unwrap(),
        );
        same(
            &norm(&x, &w, Some(&b), 1e-5, true).unwrap(),
            &candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5).unwrap(),
        );
        check_gradient(&[3, 6], &|x| norm(x, &w, None, 1e-5, false));
        check_gradient(&[3, 6], &|x| norm(x, &w, Some(&b), 1e-5, true));
    }

    #[test]
    fn masked_softmax_of_scores() {
        let dev = Device::Cpu;
        // (batch·heads = 2, seq 3, total 5): 2 cached positions, then causal.
        let mask = causal(3, 2);
        let s = Tensor::from_vec(ramp(30, 0.5), (2, 3, 5), &dev).unwrap();
        let want = candle_nn::ops::softmax(
            &(s.clone() * 0.7).unwrap().broadcast_add(&mask).unwrap(),
            D::Minus1,
        )
        .unwrap();
        same(&masked_softmax(&s, 0.7, Some(&mask)).unwrap(), &want);
        check_gradient(&[2, 3, 5], &|s| masked_softmax(s, 0.7, Some(&mask)));
        check_gradient(&[2, 3, 5], &|s| masked_softmax(s, 1.3, None));
    }

    fn causal(seq: usize, past: usize) -> Tensor {
        let m: Vec<f32> = (0..seq)
            .flat_map(|i| {
                (0..past + seq).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        Tensor::from_vec(m, (seq, past + seq), &Device::Cpu).unwrap()
    }

    #[test]
    fn silu_times_up() {
        let dev = Device::Cpu;
        let u = Tensor::from_vec(ramp(12, 0.8), (3, 4), &dev).unwrap();
        let g = Tensor::from_vec(ramp(12, 0.3), (3, 4), &dev).unwrap();
        same(
            &silu_mul(&g, &u).unwrap(),
            &(candle_nn::ops::silu(&g).unwrap() * &u).unwrap(),
        );
        check_gradient(&[3, 4], &|g| silu_mul(g, &u));
        check_gradient(&[3, 4], &|u| silu_mul(&g, u));
    }

    #[test]
    fn rotary() {
        let dev = Device::Cpu;
        let cos = Tensor::from_vec(ramp(6, 0.9), (3, 2), &dev)
            .unwrap()
            .cos()
            .unwrap();
        let sin = Tensor::from_vec(ramp(6, 0.9), (3, 2), &dev)
            .unwrap()
            .sin()
            .unwrap();
        let x = Tensor::from_vec(ramp(24, 0.6), (2, 3, 4), &dev).unwrap();
        let x4 = x.unsqueeze(0).unwrap();
        same(
            &rotate(&x4, &cos, &sin, false).unwrap(),
            &candle_nn::rotary_emb::rope_slow(&x4, &cos, &sin).unwrap(),
        );
        same(
            &rotate(&x4, &cos, &sin, true).unwrap(),
            &candle_nn::rotary_emb::rope_i_slow(&x4, &cos, &sin).unwrap(),
        );
        check_gradient(&[2, 3, 4], &|x| rotate(x, &cos, &sin, false));
        check_gradient(&[2, 3, 4], &|x| rotate(x, &cos, &sin, true));
    }

    #[test]
    fn cross_entropy() {
        let dev = Device::Cpu;
        let targets = Tensor::new(&[2u32, 0, 4], &dev).unwrap();
        let logits = Tensor::from_vec(ramp(15, 0.45), (3, 5), &dev).unwrap();
        let want = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        same(&cross_entropy_sum(&logits, &targets).unwrap(), &want);
        check_gradient(&[3, 5], &|x| cross_entropy_sum(x, &targets));
    }
}
