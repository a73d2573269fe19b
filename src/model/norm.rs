//! Normalisation layers: RMSNorm (Llama) and LayerNorm (StableLM, GPT-NeoX).

use crate::kernels::backprop;
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

    /// `x`: `(.., hidden)`. With `train` the version with a backward pass runs, because
    /// candle's fused norm kernels record no gradient: ours ([`backprop::norm`]) for f32 on the
    /// CPU under a frozen scale, else candle's composed ("slow") one.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let frozen = !self.weight.track_op() && !self.bias.as_ref().is_some_and(|b| b.track_op());
        if train && frozen && backprop::applies(x) {
            return match (self.kind, &self.bias) {
                (Norm::RmsNorm { eps }, _) => {
                    backprop::norm(x, &self.weight, None, eps as f32, false)
                }
                (Norm::LayerNorm { eps }, Some(bias)) => {
                    backprop::norm(x, &self.weight, Some(bias), eps as f32, true)
                }
                (Norm::LayerNorm { .. }, None) => anyhow::bail!("a LayerNorm needs a bias"),
            };
        }
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
