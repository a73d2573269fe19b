//! "What comes next?": the most likely next tokens after a prompt, with their probabilities.

use crate::hub::loader::LoadedModel;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One candidate next token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextToken {
    pub id: u32,
    /// The token as text (its piece), spaces shown as they decode.
    pub piece: String,
    pub probability: f64,
}

/// The top candidates after a prompt, ready to print or to show in a notebook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextTokenTable {
    pub model: String,
    pub prompt: String,
    pub tokens: Vec<NextToken>,
}

/// Runs the prompt (with the tokenizer's special tokens, e.g. BOS) and returns the `top` most
/// likely next tokens under the model's full softmax.
pub fn top_next_tokens(m: &mut LoadedModel, prompt: &str, top: usize) -> Result<NextTokenTable> {
    let tokenizer = m.tokenizer()?.clone();
    let ids = tokenizer.encode(prompt, true)?;
    m.model.reset_cache();
    let input = Tensor::new(ids.as_slice(), m.model.device())?.unsqueeze(0)?;
    let logits = m.model.forward_last(&input)?;
    m.model.reset_cache();
    let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits)?
        .squeeze(0)?
        .to_vec1()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let tokens = order
        .into_iter()
        .take(top)
        .map(|i| {
            Ok(NextToken {
                id: i as u32,
                piece: tokenizer.decode(&[i as u32], false)?,
                probability: probs[i] as f64,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NextTokenTable {
        model: m.name.clone(),
        prompt: prompt.to_string(),
        tokens,
    })
}

impl fmt::Display for NextTokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} after {:?}:", self.model, self.prompt)?;
        writeln!(f, "{:>4}  {:>8}  {:>7}  token", "rank", "id", "prob")?;
        for (rank, t) in self.tokens.iter().enumerate() {
            writeln!(
                f,
                "{:>4}  {:>8}  {:>6.2}%  {:?}",
                rank + 1,
                t.id,
                100.0 * t.probability,
                t.piece
            )?;
        }
        Ok(())
    }
}
