//! One decoder-only `Transformer` for Llama, StableLM 2 and GPT-NeoX, driven by its config.
//!
//! ```text
//! ids ─ embed ─┬─ block 0 ─ … ─ block N-1 ─ final norm ─ lm_head ─ logits (every position)
//!              │
//! block:  sequential (Llama, StableLM)      parallel (GPT-NeoX)
//!         h = x + attn(norm1(x))            y = x + attn(norm1(x)) + mlp(norm2(x))
//!         y = h + mlp(norm2(h))
//! ```
//! Everything that differs between the families is a field of [`TransformerConfig`]; this file
//! only reads those knobs.
//!
//! The model part: the config knobs and weight sources a `Transformer` is built from, its layers,
//! LoRA adapters on its linears, and sampling tokens from it. It uses no other part of the crate
//! (only candle), so the layers can be read and tested on their own.

pub mod attention;
mod builder;
pub mod config;
pub mod embedding;
pub mod generation;
pub mod kv_cache;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod rope;
pub mod rope_layout;
pub mod weights;

use crate::kernels::isa;
use anyhow::{bail, Context, Result};
use attention::{Attention, QkvProjection};

use candle_core::{DType, Device, IndexOp, Tensor};
use config::{Mlp, TransformerConfig};
use embedding::Embedding;
pub use kv_cache::KvCache;
pub use linear::{Linear, Lora, LoraLinear};
use mlp::FeedForward;
use norm::NormLayer;
use rope::Rotary;
use std::collections::BTreeMap;
use weights::{WeightNames, WeightSource};

use builder::Builder;
pub use builder::WeightFormat;

/// The largest absolute difference between two tensors of the same shape, as f32: how the
/// tests (and notebooks) compare logits.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?
        .abs()?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .max(0)?
        .to_scalar()?)
}

/// One transformer layer: attention and MLP, each behind a norm, joined by residuals.
#[derive(Debug, Clone)]
pub struct Block {
    pub norm_attn: NormLayer,
    pub attn: Attention,
    pub norm_mlp: NormLayer,
    pub mlp: FeedForward,
    pub parallel_residual: bool,
}

impl Block {
    /// `x`: `(batch, seq, hidden)` → `(batch, seq, hidden)`; with a `cache` the positions
    /// continue after it, without one `mask` is [`attention::causal_mask`] (when `seq > 1`).
    // ANCHOR: block_forward
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: Option<&mut KvCache>,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let attn = self.attn.forward(
            &self.norm_attn.forward(x, train)?,
            rotary,
            cache,
            mask,
            train,
        )?;
        if self.parallel_residual {
            let mlp = self.mlp.forward(&self.norm_mlp.forward(x, train)?, train)?;
            Ok(((x + attn)? + mlp)?)
        } else {
            let h = (x + attn)?;
            let mlp = self
                .mlp
                .forward(&self.norm_mlp.forward(&h, train)?, train)?;
            Ok((h + mlp)?)
        }
    }
    // ANCHOR_END: block_forward
}

/// A decoder-only transformer with a KV cache.
#[derive(Debug, Clone)]
pub struct Transformer {
    config: TransformerConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: NormLayer,
    lm_head: LoraLinear,
    rotary: Rotary,
    caches: Vec<KvCache>,
    device: Device,
    dtype: DType,
    weight_bytes: usize,
    /// Quantized matrices on candle's slower matmul, counted by format.
    fallback: BTreeMap<&'static str, usize>,
    /// Use the composed ops that record gradients (LoRA training) instead of fused kernels.
    train: bool,
}

impl Transformer {
    /// Builds the model from `src`, checking every tensor's shape against `config`.
    pub fn load(
        config: &TransformerConfig,
        src: &mut dyn WeightSource,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        if device.is_cpu() && format.dtype == DType::BF16 {
            bail!(
                "bf16 is not supported on CPU (candle has no CPU bf16 matmul): \
                 use --dtype f32, or --quantize q8_0 / q4_0 to save memory"
            );
        }
        let c = config;
        let names = WeightNames::new(c.architecture);
        let mut b = Builder {
            src,
            format,
            device: device.clone(),
            bytes: 0,
        };
        let (h, hd) = (c.hidden_size, c.head_dim);
        let embed_name = format!("{}.weight", names.embed);
        let lm_head_name = format!("{}.weight", names.lm_head);
        let tied = c.tie_word_embeddings;
        if !tied && !b.src.contains(&lm_head_name) {
            bail!(
                "{lm_head_name} is missing from {} and config.json does not tie the embeddings",
                b.src.describe()
            );
        }
        let (embed, tied_head) = b.embedding(&embed_name, [c.vocab_size, h], tied)?;
        let mut blocks = Vec::with_capacity(c.num_layers);
        for layer in 0..c.num_layers {
            let n = names.block(layer);
            let qkv = if n.qkv.is_empty() {
                QkvProjection::Separate {
                    q: b.linear(&n.q, c.num_heads * hd, h, c.qkv_bias)?,
                    k: b.linear(&n.k, c.num_kv_heads * hd, h, c.qkv_bias)?,
                    v: b.linear(&n.v, c.num_kv_heads * hd, h, c.qkv_bias)?,
                }
            } else {
                QkvProjection::Fused(b.linear(&n.qkv, 3 * c.num_heads * hd, h, c.qkv_bias)?)
            };
            let attn = Attention {
                qkv,
                o: b.linear(&n.o, h, c.num_heads * hd, c.attn_out_bias)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: hd,
            };
            let i = c.intermediate_size;
            let mlp = match c.mlp {
                Mlp::SwiGlu => FeedForward::SwiGlu {
                    gate: b.linear(&n.gate, i, h, c.mlp_bias)?,
                    up: b.linear(&n.up, i, h, c.mlp_bias)?,
                    down: b.linear(&n.down, h, i, c.mlp_bias)?,
                },
                Mlp::Gelu => FeedForward::Gelu {
                    up: b.linear(&n.up, i, h, c.mlp_bias)?,
                    down: b.linear(&n.down, h, i, c.mlp_bias)?,
                },
            };
            blocks.push(Block {
                norm_attn: b.norm(c.norm, &n.norm_attn, h)?,
                attn,
                norm_mlp: b.norm(c.norm, &n.norm_mlp, h)?,
                mlp,
                parallel_residual: c.parallel_residual,
            });
        }
        let final_norm = b.norm(c.norm, &names.final_norm, h)?;
        // Tied: the output projection is the embedding matrix itself (quantized if asked; a
        // GGUF file keeps its quantized copy under the embedding's name).
        let lm_head = match tied_head {
            Some(head) => LoraLinear::new(head, names.lm_head.clone()),
            None => b.linear(&names.lm_head, c.vocab_size, h, false)?,
        };
        let mut model = Self {
            config: c.clone(),
            embed,
            blocks,
            final_norm,
            lm_head,
            rotary: Rotary::new(c),
            caches: vec![KvCache::default(); c.num_layers],
            device: device.clone(),
            dtype: format.dtype,
            weight_bytes: b.bytes,
            fallback: BTreeMap::new(),
            train: false,
        };
        let mut fallback = BTreeMap::new();
        for linear in model.linears_mut() {
            if let Some(format) = linear.base.fallback_format() {
                *fallback.entry(format).or_default() += 1;
            }
        }
        model.fallback = fallback;
        Ok(model)
    }

    /// The quantized matrices that run on candle's per-block matmul (formats our packed kernel
    /// lacks), by format: where a file's speed falls short, this says which tensors are why.
    pub fn fallback_matrices(&self) -> &BTreeMap<&'static str, usize> {
        &self.fallback
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes held by the weights (quantized blocks counted at their real size).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Number of positions in the KV cache: where the next forward starts.
    pub fn cache_len(&self) -> usize {
        self.caches.first().map_or(0, |c| c.len())
    }

    /// The dtype the KV cache keeps keys and values in, once it holds some: f16 for a quantized
    /// model running our CPU kernels (`Attention::cache_dtype` says why), else the activations'.
    pub fn cache_dtype(&self) -> Option<DType> {
        self.caches.first().and_then(|c| c.dtype())
    }

    /// Rolls the KV cache back to its first `len` positions.
    pub fn truncate_cache(&mut self, len: usize) {
        for c in &mut self.caches {
            c.truncate(len);
        }
    }

    /// Empties the KV cache: the next forward starts at position 0.
    pub fn reset_cache(&mut self) {
        for c in &mut self.caches {
            c.reset();
        }
    }

    /// Switches between fused inference kernels and gradient-recording ops (for training).
    pub fn set_training(&mut self, train: bool) {
        self.train = train;
    }

    /// The model's linear layers with their Hugging Face names, for attaching LoRA adapters.
    pub fn linears_mut(&mut self) -> Vec<&mut LoraLinear> {
        let mut out = Vec::new();
        for block in &mut self.blocks {
            match &mut block.attn.qkv {
                QkvProjection::Separate { q, k, v } => out.extend([q, k, v]),
                QkvProjection::Fused(qkv) => out.push(qkv),
            }
            out.push(&mut block.attn.o);
            match &mut block.mlp {
                FeedForward::SwiGlu { gate, up, down } => out.extend([gate, up, down]),
                FeedForward::Gelu { up, down } => out.extend([up, down]),
            }
        }
        out.push(&mut self.lm_head);
        out
    }

    /// The hidden states after the final norm, `(batch, seq, hidden)`.
    fn hidden(&mut self, ids: &Tensor, use_cache: bool) -> Result<Tensor> {
        let layers = self.blocks.len();
        if !use_cache {
            return self.run_blocks(ids, layers, None);
        }
        let mut caches = std::mem::take(&mut self.caches);
        let h = self.run_blocks(ids, layers, Some(&mut caches));
        self.caches = caches;
        h
    }

    /// The first `layers` blocks, then the final norm; with `caches` (one per block run) the
    /// input continues after what they hold.
    fn run_blocks(
        &self,
        ids: &Tensor,
        layers: usize,
        mut caches: Option<&mut [KvCache]>,
    ) -> Result<Tensor> {
        let (_, seq) = ids.dims2().context("token ids must be (batch, seq)")?;
        if seq == 0 {
            bail!("cannot run the model on zero tokens");
        }
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .map_or(0, |c| c.len());
        let limit = self.config.max_position_embeddings;
        if past + seq > limit {
            bail!(
                "{} tokens ({past} in the cache + {seq} new) exceed the model's context of {limit} \
                 tokens: shorten the prompt, or reset the conversation",
                past + seq
            );
        }
        let vocab = self.config.vocab_size as u32;
        if let Some(bad) = ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .iter()
            .find(|&&i| i >= vocab)
        {
            bail!("token id {bad} is outside the vocabulary of {vocab} tokens");
        }
        let mut x = self
            .embed
            .forward(ids, self.config.hidden_size, self.dtype)?;
        let mask = (seq > 1 && !isa::fused_kernels_apply(x.dtype(), &self.device, self.train))
            .then(|| attention::causal_mask(seq, past, x.dtype(), &self.device))
            .transpose()?;
        for (i, block) in self.blocks[..layers].iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            x = block.forward(&x, &self.rotary, cache, mask.as_ref(), self.train)?;
        }
        self.final_norm.forward(&x, self.train)
    }

    /// Logits of the last position after only the first `caches.len()` blocks, then the final
    /// norm and the head: the model's own shallow copy drafts for itself (self-speculative
    /// decoding, LayerSkip), with caches of its own so the full model's stay untouched.
    pub fn forward_early_exit(&mut self, ids: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        let layers = caches.len();
        if layers == 0 || layers > self.blocks.len() {
            bail!(
                "an early exit needs between 1 and {} layers, got {layers}",
                self.blocks.len()
            );
        }
        let h = self.run_blocks(ids, layers, Some(caches))?;
        let seq = h.dim(1)?;
        Ok(self
            .lm_head
            .forward(&h.narrow(1, seq - 1, 1)?)?
            .i((.., 0, ..))?
            .to_dtype(DType::F32)?)
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks, in order: for reading a layer's weights, or running one on its own.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The rotary embedding every block's attention applies.
    pub fn rotary(&self) -> &Rotary {
        &self.rotary
    }

    /// The token embeddings block 0 reads: `ids` `(batch, seq)` → `(batch, seq, hidden)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids, self.config.hidden_size, self.dtype)
    }

    /// Logits of **every** position, `(batch, seq, vocab)` in f32, continuing after the cache.
    pub fn forward(&mut self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, true)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }

    /// Logits of the last position only, `(batch, vocab)`: generation needs no more, and
    /// skipping the output projection for the other positions saves work during prefill.
    pub fn forward_last(&mut self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, true)?;
        let seq = h.dim(1)?;
        let last = h.narrow(1, seq - 1, 1)?;
        Ok(self
            .lm_head
            .forward(&last)?
            .i((.., 0, ..))?
            .to_dtype(DType::F32)?)
    }

    /// Logits at the given positions only, `(n, vocab)` in f32, without touching the KV cache.
    /// `positions` (u32) number the `batch · seq` positions row by row. Training needs logits
    /// only where a target is trained (the answer), and the output projection of the other
    /// positions is wasted work: with SmolLM2's 49k vocabulary it is a fifth of the forward pass.
    pub fn forward_positions(&mut self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, false)?;
        let (b, s, d) = h.dims3()?;
        let picked = h.reshape((b * s, d))?.index_select(positions, 0)?;
        Ok(self
            .lm_head
            .forward(&picked.unsqueeze(0)?)?
            .squeeze(0)?
            .to_dtype(DType::F32)?)
    }

    /// Logits of every position without touching the KV cache (training, one-shot scoring).
    pub fn forward_uncached(&mut self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, false)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }
}
