//! The feed-forward block of each layer.

use super::linear::LoraLinear;
use anyhow::Result;
use candle_core::Tensor;

#[derive(Debug, Clone)]
pub enum FeedForward {
    /// `down(silu(gate(x)) ⊙ up(x))` (Llama, StableLM).
    SwiGlu {
        gate: LoraLinear,
        up: LoraLinear,
        down: LoraLinear,
    },
    /// `down(gelu(up(x)))` with the exact erf GELU (GPT-NeoX).
    Gelu { up: LoraLinear, down: LoraLinear },
}

impl FeedForward {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::SwiGlu { gate, up, down } => {
                let [g, u] = LoraLinear::forward_group([gate, up], x)?;
                let h = (candle_nn::ops::silu(&g)? * u)?;
                down.forward(&h)
            }
            FeedForward::Gelu { up, down } => down.forward(&up.forward(x)?.gelu_erf()?),
        }
    }
}
