//! Next-token cross-entropy over answer tokens only, on right-padded batches.

use super::data::Example;
use crate::kernels::backprop;
use crate::model::Transformer;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

/// A micro-batch: examples right-padded to the longest. Position `t` predicts token `t + 1`;
/// padding sits after every real token, so under the causal mask it changes nothing before it.
pub struct Batch {
    /// `(batch, len - 1)` input ids.
    pub inputs: Tensor,
    /// `(n,)` the positions whose next token is an answer token, numbered row by row over
    /// `batch · (len - 1)`: only these get logits (transformers masks the others with -100).
    pub positions: Tensor,
    /// `(n,)` the answer token each of those positions predicts.
    pub targets: Tensor,
    /// Answer tokens in the batch (`n`): the loss's denominator.
    pub target_tokens: usize,
    /// Real (unpadded) input tokens, for tokens/s.
    pub input_tokens: usize,
}

impl Batch {
    pub fn new(examples: &[&Example], device: &Device) -> Result<Self> {
        let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let width = len.saturating_sub(1).max(1);
        let (mut inputs, mut positions, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        let mut input_tokens = 0;
        for (row, e) in examples.iter().enumerate() {
            for t in 0..width {
                let real = t + 1 < e.ids.len();
                inputs.push(if t < e.ids.len() { e.ids[t] } else { 0 });
                if real && e.trained[t + 1] {
                    positions.push((row * width + t) as u32);
                    targets.push(e.ids[t + 1]);
                }
                input_tokens += usize::from(real);
            }
        }
        let target_tokens = targets.len();
        Ok(Self {
            inputs: Tensor::from_vec(inputs, (examples.len(), width), device)?,
            positions: Tensor::from_vec(positions, target_tokens, device)?,
            targets: Tensor::from_vec(targets, target_tokens, device)?,
            target_tokens,
            input_tokens,
        })
    }
}

/// The summed cross-entropy of the batch's answer tokens (a scalar that keeps its gradient).
/// Summing, not averaging, lets accumulated micro-batches of different sizes be weighed by
/// their tokens: the step divides by the total.
pub fn summed_loss(model: &mut Transformer, batch: &Batch) -> Result<Tensor> {
    let logits = model.forward_positions(&batch.inputs, &batch.positions)?;
    if backprop::applies(&logits) {
        return backprop::cross_entropy_sum(&logits, &batch.targets);
    }
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs.gather(&batch.targets.unsqueeze(D::Minus1)?, D::Minus1)?;
    Ok(picked.sum_all()?.neg()?.to_dtype(DType::F32)?)
}
