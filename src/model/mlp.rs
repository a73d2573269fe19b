//! The feed-forward block of each layer.

use super::linear::LoraLinear;
use crate::kernels::{backprop, isa, swiglu::swiglu};
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
    /// `down(gelu_tanh(gate(x)) ⊙ up(x))` (Gemma).
    GeGlu {
        gate: LoraLinear,
        up: LoraLinear,
        down: LoraLinear,
    },
}

impl FeedForward {
    /// `train`: keep every step differentiable (candle's own ops).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            FeedForward::SwiGlu { gate, up, down } => {
                let [g, u] = LoraLinear::forward_group([gate, up], x)?;
                let h = if isa::fused_kernels_apply(g.dtype(), g.device(), train) {
                    swiglu(&g, &u)?
                } else if train && backprop::applies(&g) {
                    backprop::silu_mul(&g, &u)?
                } else {
                    (candle_nn::ops::silu(&g)? * u)?
                };
                down.forward(&h)
            }
            FeedForward::Gelu { up, down } => down.forward(&up.forward(x)?.gelu_erf()?),
            FeedForward::GeGlu { gate, up, down } => {
                let [g, u] = LoraLinear::forward_group([gate, up], x)?;
                // candle's `gelu` is the tanh approximation Gemma was trained with.
                down.forward(&(g.gelu()? * u)?)
            }
        }
    }
}
