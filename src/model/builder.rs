//! From a [`WeightSource`] to layers: each tensor read, checked against its expected shape,
//! stored in the [`WeightFormat`] asked for (plain, candle's quantized blocks, or our packed
//! kernel's layout), and counted in the model's bytes.

use super::config::Norm;
use super::embedding::Embedding;
use super::linear::{Linear, LoraLinear};
use super::norm::NormLayer;
use super::weights::{Weight, WeightSource};
use crate::kernels::{isa, packed::PackedMatrix};
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// How a model's tensors are stored once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightFormat {
    /// The dtype of plain tensors and of activations.
    pub dtype: DType,
    /// Quantize plain linear weights at load time into this GGML format (`--quantize`).
    pub quantize: Option<GgmlDType>,
}

/// Reads tensors from a [`WeightSource`] and shapes them into layers.
pub(super) struct Builder<'a> {
    pub src: &'a mut dyn WeightSource,
    pub format: WeightFormat,
    pub device: Device,
    /// Bytes of the weights built so far, quantized blocks at their real size.
    pub bytes: usize,
    /// RMSNorm weights are stored as `w` of `x·(1 + w)` (Gemma's checkpoints).
    pub norm_adds_one: bool,
}

impl Builder<'_> {
    pub fn dense(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let weight = self.src.get(name, dims)?;
        self.dense_from(weight)
    }

    /// `weight` as a plain tensor of the model's dtype, counted in the model's bytes.
    fn dense_from(&mut self, weight: Weight) -> Result<Tensor> {
        let t = weight.into_dense(self.format.dtype)?;
        self.bytes += t.elem_count() * t.dtype().size_in_bytes();
        Ok(t)
    }

    pub fn norm(&mut self, kind: Norm, module: &str, dim: usize) -> Result<NormLayer> {
        let mut weight = self.dense(&format!("{module}.weight"), &[dim])?;
        if self.norm_adds_one {
            weight = (weight + 1.0)?;
        }
        let bias = match kind {
            Norm::RmsNorm { .. } => None,
            Norm::LayerNorm { .. } => Some(self.dense(&format!("{module}.bias"), &[dim])?),
        };
        Ok(NormLayer::new(kind, weight, bias))
    }

    /// Whether `dtype` weights go through our quantized CPU kernel.
    fn packed_kernel(&self, dtype: GgmlDType) -> bool {
        self.device.is_cpu() && isa::simd() && PackedMatrix::handles(dtype)
    }

    /// The format a matrix with rows of `cols` values is quantized to at load time: the one
    /// asked for, or, where a K format's super-blocks of 256 do not divide the rows, the format
    /// llama.cpp's quantizer falls back to (q4_K → q5_0, q5_K → q5_1, q6_K → q8_0), so
    /// `--quantize q4_k` gives the mix of a llama.cpp file.
    fn quantize_to(&self, cols: usize) -> Option<GgmlDType> {
        let q = self.format.quantize?;
        Some(match q {
            _ if cols.is_multiple_of(q.block_size()) => q,
            GgmlDType::Q4K => GgmlDType::Q5_0,
            GgmlDType::Q5K => GgmlDType::Q5_1,
            GgmlDType::Q6K => GgmlDType::Q8_0,
            other => other,
        })
    }

    /// A quantized matrix for the CPU kernel, read or made by the source a slice of rows at a
    /// time: the stored blocks where the source keeps them in a format the kernel takes, else,
    /// when the format quantizes at load time, quantized as it goes, where the source can.
    fn streamed_matrix(&mut self, name: &str, dims: [usize; 2]) -> Result<Option<Linear>> {
        let stored = if self.device.is_cpu() && isa::simd() {
            self.src.stored_matrix(name, &dims)?
        } else {
            None
        };
        let matrix = match (stored, self.quantize_to(dims[1])) {
            (Some(m), _) => Some(m),
            (None, Some(q)) if self.packed_kernel(q) => {
                self.src.quantized_matrix(name, &dims, q)?
            }
            (None, _) => None,
        };
        Ok(matrix.map(|m| {
            self.bytes += m.size_in_bytes();
            Linear::Packed {
                weight: Arc::new(m),
                bias: None,
            }
        }))
    }

    /// The embedding table, and with tied embeddings the output projection made of it. Where the
    /// projection runs on the quantized CPU kernel, the table is that same matrix, read row by
    /// row; where it is a plain matrix, the two share one tensor.
    pub fn embedding(
        &mut self,
        name: &str,
        dims: [usize; 2],
        tied: bool,
    ) -> Result<(Embedding, Option<Linear>)> {
        let shared = |linear: Linear| match &linear {
            Linear::Packed { weight, .. } => Some((Embedding::Quantized(weight.clone()), linear)),
            _ => None,
        };
        if let Some(linear) = self.streamed_matrix(name, dims)? {
            if let Some((embed, head)) = shared(linear) {
                return Ok((embed, tied.then_some(head)));
            }
        }
        let weight = self.src.get(name, &dims)?;
        let to_kernel = match &weight {
            Weight::Quantized(q) => self.packed_kernel(q.dtype()),
            Weight::Dense(_) => self
                .quantize_to(dims[1])
                .is_some_and(|q| self.packed_kernel(q)),
        };
        if to_kernel {
            if let Some((embed, head)) = shared(self.linear_weight(weight.clone())?) {
                return Ok((embed, tied.then_some(head)));
            }
        }
        // Blocks our kernel does not take (a CPU without AVX2): kept as the file has them, the
        // rows dequantized at lookup, and a tied projection sharing them.
        if let Weight::Quantized(q) = &weight {
            let blocks = !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            if blocks && self.device.is_cpu() {
                self.bytes += q.storage_size_in_bytes();
                let head = if tied {
                    Some(Linear::quantized(q.clone(), None)?)
                } else {
                    None
                };
                return Ok((Embedding::Blocks(q.clone()), head));
            }
        }
        let table = self.dense_from(weight.clone())?;
        let head = match (tied, weight) {
            (false, _) => None,
            // Plain and unquantized: the projection is the very tensor.
            (true, Weight::Dense(_)) if self.format.quantize.is_none() => {
                Some(Linear::dense(table.clone(), None))
            }
            (true, weight) => Some(self.linear_weight(weight)?),
        };
        Ok((Embedding::Dense(table), head))
    }

    fn linear_weight(&mut self, weight: Weight) -> Result<Linear> {
        let cols = match &weight {
            Weight::Dense(t) => t.dim(1)?,
            Weight::Quantized(q) => q.shape().dims2()?.1,
        };
        let quantized = match (weight, self.quantize_to(cols)) {
            (Weight::Quantized(q), _) => q,
            (Weight::Dense(t), Some(q)) => {
                if cols % q.block_size() != 0 {
                    bail!(
                        "cannot quantize to {q:?}: rows of {cols} values are not a multiple of its block size {}",
                        q.block_size()
                    );
                }
                Arc::new(QTensor::quantize(&t.to_dtype(DType::F32)?, q)?)
            }
            (Weight::Dense(t), None) => {
                let t = t.to_dtype(self.format.dtype)?;
                self.bytes += t.elem_count() * t.dtype().size_in_bytes();
                return Ok(Linear::dense(t, None));
            }
        };
        self.bytes += quantized.storage_size_in_bytes();
        Linear::quantized(quantized, None)
    }

    pub fn linear(
        &mut self,
        module: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<LoraLinear> {
        let name = format!("{module}.weight");
        let mut linear = match self.streamed_matrix(&name, [out, inp])? {
            Some(linear) => linear,
            None => {
                let weight = self.src.get(&name, &[out, inp])?;
                self.linear_weight(weight)?
            }
        };
        if bias {
            let b = self.dense(&format!("{module}.bias"), &[out])?;
            linear = match linear {
                Linear::Dense { weight, .. } => Linear::dense(weight, Some(b)),
                // Quantized matmuls produce f32, so their bias is kept in f32.
                Linear::Quantized {
                    weight,
                    out_features,
                    ..
                } => Linear::Quantized {
                    weight,
                    bias: Some(b.to_dtype(DType::F32)?),
                    out_features,
                },
                Linear::Packed { weight, .. } => Linear::Packed {
                    weight,
                    bias: Some(b.to_dtype(DType::F32)?),
                },
            };
        }
        Ok(LoraLinear::new(linear, module.to_string()))
    }
}
