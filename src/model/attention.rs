//! Causal self-attention with grouped-query heads, partial rotary embeddings and a KV cache.

use super::kv_cache::KvCache;
use super::linear::LoraLinear;
use super::rope::Rotary;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

/// The query/key/value projections: three matrices (Llama, StableLM) or one fused matrix whose
/// output interleaves q, k and v per head (GPT-NeoX).
#[derive(Debug, Clone)]
pub enum QkvProjection {
    Separate {
        q: LoraLinear,
        k: LoraLinear,
        v: LoraLinear,
    },
    Fused(LoraLinear),
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: QkvProjection,
    pub o: LoraLinear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// The additive causal mask for `seq` new positions after `past` cached ones: `(seq, past + seq)`,
/// 0 where a query may look and -inf where it would see the future.
fn causal_mask(seq: usize, past: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let total = past + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?.to_dtype(dtype)?)
}

impl Attention {
    /// `x`: `(batch, seq, hidden)` → `(batch, seq, hidden)`. Positions start at `cache.len()`.
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // q: (b, nh, seq, hd); k, v: (b, nkv, seq, hd)
        let (q, k, v) = match &self.qkv {
            QkvProjection::Separate { q, k, v } => {
                let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                    Ok(t.reshape((b, seq, n, hd))?.transpose(1, 2)?)
                };
                (
                    heads(q.forward(x)?, nh)?,
                    heads(k.forward(x)?, nkv)?,
                    heads(v.forward(x)?, nkv)?,
                )
            }
            QkvProjection::Fused(qkv) => {
                // GPT-NeoX lays the fused output out per head as [q_h | k_h | v_h].
                let qkv = qkv.forward(x)?.reshape((b, seq, nh, 3 * hd))?;
                let part = |i: usize| -> Result<Tensor> {
                    Ok(qkv.narrow(D::Minus1, i * hd, hd)?.transpose(1, 2)?)
                };
                (part(0)?, part(1)?, part(2)?)
            }
        };
        let past = cache.as_ref().map_or(0, |c| c.len());
        let q = rotary.apply(&q, past, train)?;
        let k = rotary.apply(&k, past, train)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            // Partial rotary concatenates along the last axis, which can leave k strided in a
            // way batched matmul rejects (batch > 1, as in training).
            None => (k.contiguous()?, v.contiguous()?),
        };
        let total = past + seq;

        // Grouped-query attention without copying k and v: the `groups` query heads that share
        // a key/value head are stacked along the sequence axis, (b, nkv, groups * seq, hd).
        let groups = nh / nkv;
        let q = q.reshape((b, nkv, groups * seq, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?; // (b, nkv, groups * seq, total)
        let scores = if seq > 1 {
            let mask = causal_mask(seq, past, scores.dtype(), scores.device())?;
            scores
                .reshape((b, nkv, groups, seq, total))?
                .broadcast_add(&mask)?
                .reshape((b, nkv, groups * seq, total))?
        } else {
            scores
        };
        // Softmax in f32 even for half-precision models: exp() overflows f16 easily.
        let in_dtype = scores.dtype();
        let scores = scores.to_dtype(DType::F32)?;
        let probs = if train {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let probs = probs.to_dtype(in_dtype)?;
        let y = probs.matmul(&v)?; // (b, nkv, groups * seq, hd)
        let y = y
            .reshape((b, nh, seq, hd))?
            .transpose(1, 2)?
            .reshape((b, seq, nh * hd))?;
        self.o.forward(&y)
    }
}
