//! Next-token cross-entropy over answer tokens only, on right-padded batches.

use super::data::Example;
use crate::model::Transformer;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

/// A micro-batch: examples right-padded to the longest. Position `t` predicts token `t + 1`;
/// padding sits after every real token, so under the causal mask it changes nothing before it.
pub struct Batch {
    /// `(batch, len - 1)` input ids.
    pub inputs: Tensor,
    /// `(batch, len - 1)` the next token at each position.
    pub targets: Tensor,
    /// `(batch, len - 1)` 1 where the target is an answer token, else 0 (transformers' -100).
    pub mask: Tensor,
    /// Answer tokens in the batch: the loss's denominator.
    pub target_tokens: usize,
    /// Real (unpadded) input tokens, for tokens/s.
    pub input_tokens: usize,
}

impl Batch {
    pub fn new(examples: &[&Example], device: &Device) -> Result<Self> {
        let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let width = len.saturating_sub(1).max(1);
        let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let (mut target_tokens, mut input_tokens) = (0, 0);
        for e in examples {
            for t in 0..width {
                let real = t + 1 < e.ids.len();
                inputs.push(if t < e.ids.len() { e.ids[t] } else { 0 });
                targets.push(if real { e.ids[t + 1] } else { 0 });
                let trained = real && e.trained[t + 1];
                mask.push(if trained { 1f32 } else { 0. });
                target_tokens += usize::from(trained);
                input_tokens += usize::from(real);
            }
        }
        let shape = (examples.len(), width);
        Ok(Self {
            inputs: Tensor::from_vec(inputs, shape, device)?,
            targets: Tensor::from_vec(targets, shape, device)?,
            mask: Tensor::from_vec(mask, shape, device)?,
            target_tokens,
            input_tokens,
        })
    }
}

/// The summed cross-entropy of the batch's answer tokens (a scalar that keeps its gradient).
/// Summing, not averaging, lets accumulated micro-batches of different sizes be weighed by
/// their tokens: the step divides by the total.
pub fn summed_loss(model: &mut Transformer, batch: &Batch) -> Result<Tensor> {
    let logits = model.forward_uncached(&batch.inputs)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs
        .gather(&batch.targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    Ok((picked * &batch.mask)?
        .sum_all()?
        .neg()?
        .to_dtype(DType::F32)?)
}
