//! One decoder-only `Transformer` for Llama, StableLM 2, GPT-NeoX and Gemma 3, driven by its
//! config.
//!
//! ```text
//! ids ─ embed ─┬─ block 0 ─ … ─ block N-1 ─ final norm ─ lm_head ─ logits (every position)
//!              │
//! block:  sequential (Llama, StableLM)      parallel (GPT-NeoX)
//!         h = x + attn(norm1(x))            y = x + attn(norm1(x)) + mlp(norm2(x))
//!         y = h + mlp(norm2(h))
//!
//!         sandwiched (Gemma 3)
//!         h = x + post1(attn(norm1(x)))
//!         y = h + post2(mlp(norm2(h)))
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
mod config_json;
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

/// The most tokens a forward may have to run on the kernels' spinning helpers
/// ([`Transformer::with_helpers`]): a verification of up to 15 drafts.
const FEW_TOKENS: usize = 16;

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

/// One transformer layer: attention and MLP, each behind a norm (and, in Gemma, before one
/// more), joined by residuals.
#[derive(Debug, Clone)]
pub struct Block {
    pub norm_attn: NormLayer,
    pub attn: Attention,
    pub post_norm_attn: Option<NormLayer>,
    pub norm_mlp: NormLayer,
    pub mlp: FeedForward,
    pub post_norm_mlp: Option<NormLayer>,
    pub parallel_residual: bool,
}

/// `x` through `norm` where the block has one there.
fn maybe_norm(norm: Option<&NormLayer>, x: Tensor, train: bool) -> Result<Tensor> {
    match norm {
        Some(norm) => norm.forward(&x, train),
        None => Ok(x),
    }
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
        let attn = maybe_norm(self.post_norm_attn.as_ref(), attn, train)?;
        if self.parallel_residual {
            let mlp = self.mlp.forward(&self.norm_mlp.forward(x, train)?, train)?;
            Ok(((x + attn)? + mlp)?)
        } else {
            let h = (x + attn)?;
            let mlp = self
                .mlp
                .forward(&self.norm_mlp.forward(&h, train)?, train)?;
            let mlp = maybe_norm(self.post_norm_mlp.as_ref(), mlp, train)?;
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
    /// The sliding-window layers' rotation (Gemma 3: base 10,000 where the global layers use
    /// 1,000,000).
    local_rotary: Option<Rotary>,
    caches: Vec<KvCache>,
    device: Device,
    dtype: DType,
    weight_bytes: usize,
    /// Quantized matrices on candle's slower matmul, counted by format.
    fallback: BTreeMap<&'static str, usize>,
    /// Every matrix runs on the packed kernels ([`Linear::Packed`]).
    packed: bool,
    /// Use ops that record gradients (LoRA training) instead of the inference kernels:
    /// [`crate::kernels::backprop`]'s for f32 on the CPU, candle's composed ones elsewhere.
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
            norm_adds_one: c.norm_adds_one,
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
            let (q_norm, k_norm) = if c.qk_norm {
                (
                    Some(b.norm(c.norm, &n.q_norm, hd)?),
                    Some(b.norm(c.norm, &n.k_norm, hd)?),
                )
            } else {
                (None, None)
            };
            let attn = Attention {
                qkv,
                o: b.linear(&n.o, h, c.num_heads * hd, c.attn_out_bias)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: hd,
                q_norm,
                k_norm,
                query_scale: c
                    .query_pre_attn_scalar
                    .filter(|&s| s != hd as f64)
                    .map(|s| (hd as f64 / s).sqrt()),
                window: c
                    .sliding_window
                    .filter(|w| w.applies(layer))
                    .map(|w| w.size),
            };
            let i = c.intermediate_size;
            let mlp = match c.mlp {
                Mlp::SwiGlu => FeedForward::SwiGlu {
                    gate: b.linear(&n.gate, i, h, c.mlp_bias)?,
                    up: b.linear(&n.up, i, h, c.mlp_bias)?,
                    down: b.linear(&n.down, h, i, c.mlp_bias)?,
                },
                Mlp::GeGlu => FeedForward::GeGlu {
                    gate: b.linear(&n.gate, i, h, c.mlp_bias)?,
                    up: b.linear(&n.up, i, h, c.mlp_bias)?,
                    down: b.linear(&n.down, h, i, c.mlp_bias)?,
                },
                Mlp::Gelu => FeedForward::Gelu {
                    up: b.linear(&n.up, i, h, c.mlp_bias)?,
                    down: b.linear(&n.down, h, i, c.mlp_bias)?,
                },
            };
            let post_norm = |b: &mut Builder, module: &str| -> Result<Option<NormLayer>> {
                c.post_norms.then(|| b.norm(c.norm, module, h)).transpose()
            };
            blocks.push(Block {
                norm_attn: b.norm(c.norm, &n.norm_attn, h)?,
                attn,
                post_norm_attn: post_norm(&mut b, &n.post_norm_attn)?,
                norm_mlp: b.norm(c.norm, &n.norm_mlp, h)?,
                mlp,
                post_norm_mlp: post_norm(&mut b, &n.post_norm_mlp)?,
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
            local_rotary: c.sliding_window.map(|w| {
                Rotary::new(&TransformerConfig {
                    rope_theta: w.rope_theta,
                    ..c.clone()
                })
            }),
            caches: vec![KvCache::default(); c.num_layers],
            device: device.clone(),
            dtype: format.dtype,
            weight_bytes: b.bytes,
            fallback: BTreeMap::new(),
            packed: false,
            train: false,
        };
        let mut fallback = BTreeMap::new();
        for linear in model.linears_mut() {
            if let Some(format) = linear.base.fallback_format() {
                *fallback.entry(format).or_default() += 1;
            }
        }
        model.fallback = fallback;
        model.packed = model
            .linears_mut()
            .iter()
            .all(|linear| matches!(linear.base, Linear::Packed { .. }));
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
                FeedForward::SwiGlu { gate, up, down } | FeedForward::GeGlu { gate, up, down } => {
                    out.extend([gate, up, down])
                }
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
        let mut x = self.embed(ids)?;
        let mask = (seq > 1 && !isa::fused_kernels_apply(x.dtype(), &self.device, self.train))
            .then(|| attention::causal_mask(seq, past, None, x.dtype(), &self.device))
            .transpose()?;
        // The sliding-window layers' mask, where the window leaves out some of what the
        // causal mask lets in.
        let window_mask = self
            .config
            .sliding_window
            .filter(|w| seq > 1 && past + seq > w.size)
            .map(|w| attention::causal_mask(seq, past, Some(w.size), x.dtype(), &self.device))
            .transpose()?;
        for (i, block) in self.blocks[..layers].iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            let (rotary, mask) = match (block.attn.window, &self.local_rotary) {
                (Some(_), Some(local)) => (local, window_mask.as_ref().or(mask.as_ref())),
                _ => (&self.rotary, mask.as_ref()),
            };
            x = block.forward(&x, rotary, cache, mask, self.train)?;
        }
        self.final_norm.forward(&x, self.train)
    }

    /// Logits of the last position after only the first `layers` blocks and then the final
    /// norm and the head: the model's own shallow copy drafts for itself (self-speculative
    /// decoding, LayerSkip). It continues the model's own KV cache of those layers, which
    /// already holds what the shallow copy would compute for the context, so drafting needs no
    /// cache of its own and no catching up; those layers' caches grow by the tokens fed, and
    /// [`Transformer::truncate_cache`] takes them back.
    pub fn forward_early_exit(&mut self, ids: &Tensor, layers: usize) -> Result<Tensor> {
        if layers == 0 || layers > self.blocks.len() {
            bail!(
                "an early exit needs between 1 and {} layers, got {layers}",
                self.blocks.len()
            );
        }
        self.with_helpers(ids, |model| {
            let mut caches = std::mem::take(&mut model.caches);
            let h = model.run_blocks(ids, layers, Some(&mut caches[..layers]));
            model.caches = caches;
            model.last_logits(&h?)
        })
    }

    /// The head's logits of the last position of hidden states `h`, `(batch, vocab)` in f32.
    fn last_logits(&self, h: &Tensor) -> Result<Tensor> {
        let seq = h.dim(1)?;
        Ok(self
            .lm_head
            .forward(&h.narrow(1, seq - 1, 1)?)?
            .i((.., 0, ..))?
            .to_dtype(DType::F32)?)
    }

    /// Runs a forward `op` over `ids` with the kernels' spinning helpers
    /// ([`crate::kernels::pool::with_helpers`]) where they pay: a few tokens (a decode step, a
    /// speculative verification), whose forward is a chain of short parallel loops, on a model
    /// whose matrices all run on the packed kernels. Elsewhere a loop of candle's (its matmul)
    /// would find the helpers busy and run on one thread, and a prompt's long loops lose little
    /// to waking rayon's workers.
    fn with_helpers<R>(&mut self, ids: &Tensor, op: impl FnOnce(&mut Self) -> R) -> R {
        if ids.elem_count() <= FEW_TOKENS && self.packed && !self.train {
            crate::kernels::pool::with_helpers(|| op(self))
        } else {
            op(self)
        }
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks, in order: for reading a layer's weights, or running one on its own.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The rotary embedding the global-attention blocks apply (every block but Gemma's
    /// sliding-window ones, which use [`Transformer::rotary_of`]).
    pub fn rotary(&self) -> &Rotary {
        &self.rotary
    }

    /// The rotary embedding block `layer` applies.
    pub fn rotary_of(&self, layer: usize) -> &Rotary {
        match (
            self.blocks.get(layer).and_then(|b| b.attn.window),
            &self.local_rotary,
        ) {
            (Some(_), Some(local)) => local,
            _ => &self.rotary,
        }
    }

    /// The token embeddings block 0 reads: `ids` `(batch, seq)` → `(batch, seq, hidden)`,
    /// scaled by √hidden where the model does (Gemma).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let hidden = self.config.hidden_size;
        let x = self.embed.forward(ids, hidden, self.dtype)?;
        if self.config.scale_embeddings {
            // f32 like llama.cpp's sqrtf; transformers rounds it to the model's dtype.
            Ok((x * f64::from((hidden as f32).sqrt()))?)
        } else {
            Ok(x)
        }
    }

    /// Logits of **every** position, `(batch, seq, vocab)` in f32, continuing after the cache.
    pub fn forward(&mut self, ids: &Tensor) -> Result<Tensor> {
        self.with_helpers(ids, |model| {
            let h = model.hidden(ids, true)?;
            Ok(model.lm_head.forward(&h)?.to_dtype(DType::F32)?)
        })
    }

    /// Logits of the last position only, `(batch, vocab)`: generation needs no more, and
    /// skipping the output projection for the other positions saves work during prefill.
    pub fn forward_last(&mut self, ids: &Tensor) -> Result<Tensor> {
        self.with_helpers(ids, |model| {
            let h = model.hidden(ids, true)?;
            model.last_logits(&h)
        })
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
