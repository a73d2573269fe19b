//! Causal self-attention with grouped-query heads, partial rotary embeddings, an optional
//! sliding window and a KV cache.

use super::kv_cache::KvCache;
use super::linear::LoraLinear;
use super::norm::NormLayer;
use super::rope::Rotary;
use crate::kernels::{attention as kernels, backprop, isa};
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
    /// RMSNorm over each head of q and of k, before RoPE (Gemma 3).
    pub q_norm: Option<NormLayer>,
    pub k_norm: Option<NormLayer>,
    /// Multiplies q so that the kernels' `head_dim^-1/2` becomes the model's own score scale
    /// (Gemma's `query_pre_attn_scalar^-1/2`), where the two differ.
    pub query_scale: Option<f64>,
    /// A position sees only the last `window` positions, its own included (Gemma 3's local
    /// layers); `None` is full causal attention.
    pub window: Option<usize>,
}

/// The additive causal mask for `seq` new positions after `past` cached ones: `(seq, past + seq)`,
/// 0 where a query may look and -inf where it would see the future or, with a `window`, a
/// position `window` or more behind it. Made once per forward and shared by the layers (an MMLU
/// question of 170 tokens after a 1000-token prefix needs a 200k-value mask; made per layer,
/// that was 30 of them per question).
pub fn causal_mask(
    seq: usize,
    past: usize,
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let total = past + seq;
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            let at = past + i;
            (0..total).map(move |j| {
                if j > at || at - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?.to_dtype(dtype)?)
}

impl Attention {
    /// `x`: `(batch, seq, hidden)` → `(batch, seq, hidden)`. Positions start at `cache.len()`.
    /// `mask`: [`causal_mask`] for the forward's positions (needed when `seq > 1`, unless
    /// [`isa::fused_kernels_apply`]: [`kernels::attend_causal`] then masks by position).
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: Option<&mut KvCache>,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        // ANCHOR: attention_forward
        let (b, seq, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // q: (b, nh, seq, hd); k, v: (b, nkv, seq, hd)
        let (q, k, v) = match &self.qkv {
            QkvProjection::Separate { q, k, v } => {
                // (b, seq, n·hd) → (b, seq, n, hd), each head normalised where the model
                // does (Gemma 3's q and k), → (b, n, seq, hd)
                let heads = |t: Tensor, n: usize, norm: Option<&NormLayer>| -> Result<Tensor> {
                    let t = t.reshape((b, seq, n, hd))?;
                    let t = match norm {
                        Some(norm) => norm.forward(&t, train)?,
                        None => t,
                    };
                    Ok(t.transpose(1, 2)?)
                };
                let [q, k, v] = LoraLinear::forward_group([q, k, v], x)?;
                (
                    heads(q, nh, self.q_norm.as_ref())?,
                    heads(k, nkv, self.k_norm.as_ref())?,
                    heads(v, nkv, None)?,
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
        let q = match self.query_scale {
            Some(s) => (q * s)?,
            None => q,
        };
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v, self.cache_dtype(&q, train))?,
            // Partial rotary concatenates along the last axis, which can leave k strided in a
            // way batched matmul rejects (batch > 1, as in training).
            None => (k.contiguous()?, v.contiguous()?),
        };
        // A sliding window, once the cache outgrows it: one new position reads only the last
        // `window` cached ones; several need the mask, which differs per position.
        let total = k.dim(2)?;
        let windowed = self.window.filter(|&w| total > w);
        let (k, v) = match windowed {
            Some(w) if seq == 1 => (k.narrow(2, total - w, w)?, v.narrow(2, total - w, w)?),
            _ => (k, v),
        };
        // ANCHOR_END: attention_forward
        let groups = nh / nkv;
        if seq == 1 && !train && q.dtype() == DType::F32 && q.device().is_cpu() {
            let y = kernels::attend_one(&q, &k, &v, groups)?;
            return self.o.forward(&y.reshape((b, 1, nh * hd))?);
        }
        if isa::fused_kernels_apply(q.dtype(), q.device(), train)
            && (windowed.is_none() || seq == 1)
        {
            let y = kernels::attend_causal(&q, &k, &v, groups)?;
            return self.o.forward(&y);
        }
        if mask.is_none() && seq > 1 {
            anyhow::bail!("attention over {seq} new positions needs a causal mask")
        }
        // An f16 cache (kept for our kernels) read by matmuls, as a sliding window's prompt
        // does: widened to the queries' dtype.
        let (k, v) = if k.dtype() == q.dtype() {
            (k, v)
        } else {
            (k.to_dtype(q.dtype())?, v.to_dtype(q.dtype())?)
        };
        // Long prompts are read QUERY_CHUNK queries at a time: the scores of 512 queries over 512
        // positions for 32 heads are 33 MB, which the allocator maps fresh (and the kernel
        // zeroes page by page) for every layer; chunks of a few MB are reused instead.
        let mut ys = Vec::with_capacity(seq.div_ceil(QUERY_CHUNK));
        for c0 in (0..seq).step_by(QUERY_CHUNK) {
            let n = QUERY_CHUNK.min(seq - c0);
            let mask = mask.map(|m| m.narrow(0, c0, n)).transpose()?;
            let q = q.narrow(2, c0, n)?;
            ys.push(attend_many(&q, (&k, &v), mask.as_ref(), groups, train)?);
        }
        let y = Tensor::cat(&ys, 2)?; // (b, nh, seq, hd)
        let y = y.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
        self.o.forward(&y)
    }

    /// The dtype this layer's KV cache keeps: f16 where the projections are quantized and our
    /// kernels read the cache (f32 inference on a CPU with AVX2 and F16C), else the
    /// activations'. A quantized matmul already rounds its input to int8, a relative step of
    /// 1/254, against f16's 1/2048; and a decode step reads the whole cache back, which for
    /// TinyLlama after 512 positions is 23 MB in f32 next to 620 MB of q4_0 weights, and for
    /// SmolLM2-135M 24 MB next to about 100 MB of Q4_1 weights. llama.cpp keeps its cache in
    /// f16 too.
    fn cache_dtype(&self, q: &Tensor, train: bool) -> DType {
        if self.o.base.is_quantized() && isa::fused_kernels_apply(q.dtype(), q.device(), train) {
            DType::F16
        } else {
            q.dtype()
        }
    }
}

/// Queries per pass of [`attend_many`].
const QUERY_CHUNK: usize = 128;

/// Attention of `seq` queries over all `total` cached positions with candle's matmuls (training,
/// and where our kernels do not apply). `q`: `(b, nh, seq, hd)`; `k`, `v`: `(b, nkv, total,
/// hd)`; `mask`: `(seq, total)`. Returns `(b, nh, seq, hd)`.
fn attend_many(
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
    mask: Option<&Tensor>,
    groups: usize,
    train: bool,
) -> Result<Tensor> {
    let (b, nh, seq, hd) = q.dims4()?;
    let (nkv, total) = (k.dim(1)?, k.dim(2)?);
    // Grouped-query attention without copying k and v: the `groups` query heads that share
    // a key/value head are stacked along the sequence axis, (b, nkv, groups * seq, hd).
    let q = q.contiguous()?.reshape((b, nkv, groups * seq, hd))?;
    let scale = 1.0 / (hd as f64).sqrt();
    if train && backprop::applies(&q) {
        // Scale, mask and softmax in one op with its backward pass.
        let scores = q.matmul(&k.t()?)?; // (b, nkv, groups * seq, total)
        let probs = backprop::masked_softmax(&scores, scale, mask)?;
        return Ok(probs.matmul(v)?.reshape((b, nh, seq, hd))?);
    }
    let scores = (q.matmul(&k.t()?)? * scale)?; // (b, nkv, groups * seq, total)
    let scores = match mask {
        Some(mask) => scores
            .reshape((b, nkv, groups, seq, total))?
            .broadcast_add(&mask.to_dtype(scores.dtype())?)?
            .reshape((b, nkv, groups * seq, total))?,
        None => scores,
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
    let y = probs.matmul(v)?; // (b, nkv, groups * seq, hd)
    Ok(y.reshape((b, nh, seq, hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_attention_matches_the_masked_matmul_route() {
        let dev = candle_core::Device::Cpu;
        // (batch, heads, kv heads, head size, cached positions before, new positions): GQA groups
        // of 8, 3 and 1, head sizes of the SIMD paths (64) and of the plain one (20), a batch of 2.
        // The f16 cache against the matmuls on its values widened to f32, both where the kernel
        // widens it (many query rows per task) and where it reads it in place (a speculative
        // verification's 9 positions after 250).
        for (b, nh, nkv, hd, past, seq, dtype) in [
            (1, 32, 4, 64, 13, 21, DType::F32),
            (1, 9, 3, 64, 0, 40, DType::F32),
            (2, 4, 4, 20, 5, 3, DType::F32),
            (1, 32, 4, 64, 13, 21, DType::F16),
            (1, 9, 3, 64, 250, 9, DType::F16),
            (2, 4, 4, 20, 5, 3, DType::F16),
        ] {
            let total = past + seq;
            let q = Tensor::randn(0f32, 1.0, (b, nh, seq, hd), &dev).unwrap();
            let cached = || {
                let t = Tensor::randn(0f32, 1.0, (b, nkv, total, hd), &dev).unwrap();
                t.to_dtype(dtype).unwrap()
            };
            let (k, v) = (cached(), cached());
            let mask = causal_mask(seq, past, None, DType::F32, &dev).unwrap();
            let widened = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = attend_many(
                &q,
                (&widened(&k), &widened(&v)),
                Some(&mask),
                nh / nkv,
                false,
            )
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, seq, nh * hd))
            .unwrap();
            let got = kernels::attend_causal(&q, &k, &v, nh / nkv);
            let diff = crate::model::max_abs_diff(&got.unwrap(), &want).unwrap();
            assert!(
                diff < 1e-5,
                "{b} {nh} {nkv} {hd} {past} {seq} {dtype:?}: {diff}"
            );
        }
    }
}
