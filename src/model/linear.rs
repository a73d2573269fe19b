//! Linear layers: plain or quantized, with an optional LoRA adapter on top.

use crate::kernels::packed::PackedMatrix;
use anyhow::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::{Arc, Mutex};

/// `y = x W^T + b`, with `W` either a plain tensor or GGML-quantized blocks.
#[derive(Debug, Clone)]
pub enum Linear {
    /// A plain matrix of shape `(out, in)` in the model's dtype.
    Dense {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// Quantized blocks (q4_0, q8_0, ...): the matmul dequantizes on the fly, so memory and
    /// memory bandwidth shrink with the bit width. It works on f32 activations.
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
        out_features: usize,
    },
    /// q4_0 / q4_1 / q8_0 weights on an AVX2 or AVX-512 VNNI CPU, through our own kernel (see
    /// [`PackedMatrix`]).
    Packed {
        weight: Arc<PackedMatrix>,
        bias: Option<Tensor>,
    },
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense { weight, bias }
    }

    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let out_features = weight.shape().dims()[0];
        if PackedMatrix::handles(weight.dtype())
            && weight.device().is_cpu()
            && crate::kernels::isa::simd()
        {
            return Ok(Linear::Packed {
                weight: Arc::new(PackedMatrix::from_qtensor(&weight)?),
                bias,
            });
        }
        Ok(Linear::Quantized {
            weight: QMatMul::from_arc(weight)?,
            bias,
            out_features,
        })
    }

    /// The GGML format of quantized weights that run on candle's per-block matmul because our
    /// packed kernel lacks their format (or this CPU lacks AVX2): the slow path, which
    /// `generate --json` and `bench-speed` report.
    pub fn fallback_format(&self) -> Option<&'static str> {
        match self {
            Linear::Quantized {
                weight: QMatMul::QTensor(q),
                ..
            } => Some(ggml_name(q.dtype())),
            _ => None,
        }
    }

    /// Whether the weights are GGML blocks, whose matmuls round their input to int8.
    pub fn is_quantized(&self) -> bool {
        !matches!(self, Linear::Dense { .. })
    }

    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dim(0).unwrap_or(0),
            Linear::Quantized { out_features, .. } => *out_features,
            Linear::Packed { weight, .. } => weight.rows(),
        }
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => {
                // One f32 vector (a decode step) goes through the streaming GEMV kernel.
                let one_row = x.elem_count() == weight.dim(1)?;
                let fast = one_row && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
                if fast && weight.device().is_cpu() && crate::kernels::isa::simd() {
                    return add_bias(crate::kernels::gemv::forward(weight, x)?, bias);
                }
                // Training: the frozen weight needs no gradient, only the input does.
                let f32_cpu = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
                if x.track_op() && !weight.track_op() && f32_cpu && weight.device().is_cpu() {
                    let y = crate::kernels::frozen_matmul::forward(x, weight)?;
                    return add_bias(y, bias);
                }
                let y = match x.dims() {
                    [b, _, _] => x.matmul(&weight.broadcast_left(*b)?.t()?)?,
                    _ => x.matmul(&weight.t()?)?,
                };
                (y, bias)
            }
            Linear::Quantized { weight, bias, .. } => {
                (on_f32(x, |x| Ok(weight.forward(x)?))?, bias)
            }
            Linear::Packed { weight, bias } => (on_f32(x, |x| weight.forward(x))?, bias),
        };
        add_bias(y, bias)
    }
}

/// Runs a kernel that takes f32 activations, converting half-precision input and output.
fn on_f32(x: &Tensor, kernel: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        kernel(x)
    } else {
        Ok(kernel(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?)
    }
}

fn add_bias(y: Tensor, bias: &Option<Tensor>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// A low-rank update `ΔW = scale · B A` learned by LoRA (Hu et al., 2021).
///
/// `A` is `(rank, in)`, `B` is `(out, rank)`; `scale` is `alpha / rank` (or `alpha / sqrt(rank)`
/// with rsLoRA). The base weight stays frozen and untouched; only `A` and `B` are trained.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// peft's `lora_dropout`: the probability of zeroing an input of the LoRA branch. Only a
    /// trainer sets it above 0, for its training steps; inference always runs with 0.
    pub dropout: f32,
    /// Where the dropout masks come from: the trainer's seeded generator, shared by every
    /// layer, so that a run with the same seed drops the same inputs (candle's own dropout
    /// draws from an unseeded generator).
    pub dropout_rng: Option<Arc<Mutex<StdRng>>>,
}

/// `x` with each value zeroed with probability `p` and the rest scaled by `1 / (1 - p)`, the
/// mask drawn from `rng`.
fn seeded_dropout(x: &Tensor, p: f32, rng: &Mutex<StdRng>) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = {
        let mut rng = rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (0..x.elem_count())
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect()
    };
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// A [`Linear`] layer that may carry a LoRA adapter: `y = base(x) + scale · (x Aᵀ) Bᵀ`.
///
/// The update is applied as two thin matmuls rather than merged into `W`, so the same base
/// weights serve with and without the adapter, and a quantized base can still take one.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    pub base: Linear,
    pub lora: Option<Lora>,
    /// The layer's Hugging Face module name, the key adapters use (`model.layers.0.self_attn.q_proj`).
    pub name: String,
}

impl LoraLinear {
    pub fn new(base: Linear, name: String) -> Self {
        Self {
            base,
            lora: None,
            name,
        }
    }

    // ANCHOR: lora_forward
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.add_update(x, self.base.forward(x)?)
    }

    /// `y` (the base layer's output for `x`) plus the adapter's update, if there is one.
    fn add_update(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let Some(lora) = &self.lora else {
            return Ok(y);
        };
        let x = match (&lora.dropout_rng, lora.dropout > 0.0) {
            (Some(rng), true) => &seeded_dropout(x, lora.dropout, rng)?,
            (None, true) => &candle_nn::ops::dropout(x, lora.dropout)?,
            (_, false) => x,
        };
        // (.., in) as one (rows, in) matrix: two plain matmuls, whose backward has no
        // broadcast batch to sum over.
        let (a, b) = (lora.a.to_dtype(x.dtype())?, lora.b.to_dtype(x.dtype())?);
        let inp = a.dim(1)?;
        let rows = x.elem_count() / inp;
        let update = x.reshape((rows, inp))?.matmul(&a.t()?)?; // (rows, rank)
        let update = update.matmul(&b.t()?)?.reshape(y.shape())?; // (.., out)
        Ok((y + (update * lora.scale)?)?)
    }
    // ANCHOR_END: lora_forward

    /// Several layers that read the same input (q, k, v; gate, up), as one grouped product
    /// when their bases are quantized matrices of one kind ([`crate::kernels::packed::matmul_group`]),
    /// else one after the other. Biases and adapters are applied per layer either way.
    pub fn forward_group<const N: usize>(
        layers: [&LoraLinear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        let mats: Option<Vec<&PackedMatrix>> = layers
            .iter()
            .map(|l| match &l.base {
                Linear::Packed { weight, .. } => Some(weight.as_ref()),
                _ => None,
            })
            .collect();
        let grouped = match mats {
            Some(mats) if x.dtype() == DType::F32 && x.device().is_cpu() => {
                let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let cols = *x.dims().last().unwrap_or(&0);
                crate::kernels::packed::matmul_group(&mats, &xs, xs.len() / cols.max(1))
            }
            _ => None,
        };
        let Some(outs) = grouped else {
            return Ok(layers
                .map(|l| l.forward(x))
                .into_iter()
                .collect::<Result<Vec<_>>>()?
                .try_into()
                .expect("N outputs"));
        };
        let mut ys = Vec::with_capacity(N);
        for (layer, out) in layers.iter().zip(outs) {
            let mut shape = x.dims().to_vec();
            *shape.last_mut().unwrap() = layer.base.out_features();
            let y = Tensor::from_vec(out, shape, x.device())?;
            let bias = match &layer.base {
                Linear::Packed { bias, .. } => bias,
                _ => &None,
            };
            ys.push(layer.add_update(x, add_bias(y, bias)?)?);
        }
        Ok(ys.try_into().expect("N outputs"))
    }
}

/// A GGML block format by the name llama.cpp gives it (`q4_K`, `q5_0`, ...).
pub fn ggml_name(dtype: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType as G;
    match dtype {
        G::F32 => "f32",
        G::F16 => "f16",
        G::BF16 => "bf16",
        G::Q4_0 => "q4_0",
        G::Q4_1 => "q4_1",
        G::Q5_0 => "q5_0",
        G::Q5_1 => "q5_1",
        G::Q8_0 => "q8_0",
        G::Q8_1 => "q8_1",
        G::Q2K => "q2_K",
        G::Q3K => "q3_K",
        G::Q4K => "q4_K",
        G::Q5K => "q5_K",
        G::Q6K => "q6_K",
        G::Q8K => "q8_K",
    }
}
