//! Normalisation layers: RMSNorm (Llama) and LayerNorm (StableLM, GPT-NeoX).

use crate::model::config::Norm;
use anyhow::Result;
use candle_core::Tensor;

/// A norm with its learned scale (and shift, for LayerNorm).
#[derive(Debug, Clone)]
pub struct NormLayer {
    kind: Norm,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl NormLayer {
    pub fn new(kind: Norm, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { kind, weight, bias }
    }

    /// `x`: `(.., hidden)`. With `train` the composed ("slow") version runs, because candle's
    /// fused norm kernels record no gradient.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match (self.kind, &self.bias) {
            (Norm::RmsNorm { eps }, _) => {
                if train {
                    candle_nn::ops::rms_norm_slow(x, &self.weight, eps as f32)?
                } else {
                    candle_nn::ops::rms_norm(x, &self.weight, eps as f32)?
                }
            }
            (Norm::LayerNorm { eps }, Some(bias)) => {
                if train {
                    candle_nn::ops::layer_norm_slow(x, &self.weight, bias, eps as f32)?
                } else {
                    candle_nn::ops::layer_norm(x, &self.weight, bias, eps as f32)?
                }
            }
            (Norm::LayerNorm { .. }, None) => anyhow::bail!("a LayerNorm needs a bias"),
        })
    }
}
