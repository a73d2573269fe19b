//! One transformer block run step by step on a real prompt, with the shape of every tensor on
//! the way (Short 2). The steps are the ones `Block::forward` and `Attention::forward` take,
//! written out with candle's plain ops: the notebook shows them, and the tour checks that its
//! output equals the model's own block.

use crate::hub::loader::LoadedModel;
use crate::model::attention::{causal_mask, QkvProjection};
use crate::model::mlp::FeedForward;
use crate::model::Block;
use crate::report::Table;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use polars::prelude::{Column, DataFrame};

/// One step of the tour: what was computed, and the shape that came out.
#[derive(Debug, Clone)]
pub struct TourStep {
    pub step: &'static str,
    pub shape: Vec<usize>,
    pub what: String,
}

/// A block's walk from input to output.
#[derive(Debug, Clone)]
pub struct BlockTour {
    pub prompt: String,
    /// The prompt's tokens as the tokenizer cut them.
    pub tokens: Vec<String>,
    pub layer: usize,
    pub steps: Vec<TourStep>,
    /// The largest difference between the tour's output and `Block::forward`'s.
    pub max_diff: f32,
}

/// Runs block `layer` of `m` on `prompt` one operation at a time (the blocks before it run
/// whole, to give it the input it sees in the model).
pub fn tour_block(m: &LoadedModel, prompt: &str, layer: usize) -> Result<BlockTour> {
    let tokenizer = m.tokenizer()?;
    let ids = tokenizer.encode(prompt, true)?;
    let tokens = ids
        .iter()
        .map(|&id| tokenizer.id_to_token(id).unwrap_or_else(|| id.to_string()))
        .collect();
    let model = &m.model;
    let Some(block) = model.blocks().get(layer) else {
        bail!(
            "the model has {} blocks, not {}",
            model.num_layers(),
            layer + 1
        );
    };
    let c = model.config();
    let seq = ids.len();
    let ids = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
    let mut steps = Vec::new();
    let mut note = |step, t: &Tensor, what: String| {
        steps.push(TourStep {
            step,
            shape: t.dims().to_vec(),
            what,
        })
    };
    note("token ids", &ids, format!("{seq} tokens, a batch of one"));

    // Each block's mask: causal, and for Gemma's local layers also windowed.
    let mask_of = |b: &Block| causal_mask(seq, 0, b.attn.window, DType::F32, model.device());
    let mut x = model.embed(&ids)?.to_dtype(DType::F32)?;
    note(
        "embed",
        &x,
        if c.scale_embeddings {
            format!(
                "one row of {} per token, times √{}",
                c.hidden_size, c.hidden_size
            )
        } else {
            format!("one row of {} per token", c.hidden_size)
        },
    );
    for (i, earlier) in model.blocks()[..layer].iter().enumerate() {
        let mask = mask_of(earlier)?;
        x = earlier.forward(&x, model.rotary_of(i), None, Some(&mask), true)?;
    }
    if layer > 0 {
        note("blocks 0..layer", &x, format!("the input of block {layer}"));
    }
    let (mask, rotary) = (mask_of(block)?, model.rotary_of(layer));
    let expected = block.forward(&x, rotary, None, Some(&mask), true)?;
    let y = walk(block, &x, &mask, rotary, &mut note)?;
    let max_diff = crate::model::max_abs_diff(&y, &expected)?;
    Ok(BlockTour {
        prompt: prompt.to_string(),
        tokens,
        layer,
        steps,
        max_diff,
    })
}

/// The block's steps on `x` `(1, seq, hidden)`, each shape handed to `note`.
fn walk(
    block: &Block,
    x: &Tensor,
    mask: &Tensor,
    rotary: &crate::model::rope::Rotary,
    note: &mut impl FnMut(&'static str, &Tensor, String),
) -> Result<Tensor> {
    let attn = &block.attn;
    let (b, seq, _) = x.dims3()?;
    let (nh, nkv, hd) = (attn.num_heads, attn.num_kv_heads, attn.head_dim);

    let a = block.norm_attn.forward(x, true)?;
    note(
        "norm",
        &a,
        "each row scaled to unit size, then by learned weights".into(),
    );
    let (q, k, v) = match &attn.qkv {
        QkvProjection::Separate { q, k, v } => (q.forward(&a)?, k.forward(&a)?, v.forward(&a)?),
        QkvProjection::Fused(qkv) => {
            let qkv = qkv.forward(&a)?.reshape((b, seq, nh, 3 * hd))?;
            let part = |i| -> Result<Tensor> {
                Ok(qkv
                    .narrow(D::Minus1, i * hd, hd)?
                    .reshape((b, seq, nh * hd))?)
            };
            (part(0)?, part(1)?, part(2)?)
        }
    };
    note("q = x Wq", &q, format!("{nh} query heads of {hd}"));
    note(
        "k = x Wk, v = x Wv",
        &k,
        format!("{nkv} key/value heads of {hd}"),
    );
    let heads =
        |t: Tensor, n| -> Result<Tensor> { Ok(t.reshape((b, seq, n, hd))?.transpose(1, 2)?) };
    let (q, k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?);
    note("split heads", &q, "(batch, heads, seq, head_dim)".into());
    let (q, k) = match (&attn.q_norm, &attn.k_norm) {
        (Some(qn), Some(kn)) => {
            let q = qn.forward(&q, true)?;
            note(
                "norm q, k per head",
                &q,
                "each head's vector scaled to unit size".into(),
            );
            (q, kn.forward(&k, true)?)
        }
        _ => (q, k),
    };
    let q = rotary.apply(&q, 0, true)?;
    let k = rotary.apply(&k, 0, true)?;
    note(
        "rotate q, k",
        &q,
        "RoPE: each pair of dimensions turned by position".into(),
    );
    // Grouped-query attention: each key/value head serves `nh / nkv` query heads.
    let groups = nh / nkv;
    let repeat = |t: Tensor| -> Result<Tensor> {
        Ok(t.unsqueeze(2)?
            .broadcast_as((b, nkv, groups, seq, hd))?
            .reshape((b, nh, seq, hd))?)
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let q = match attn.query_scale {
        Some(s) => (q * s)?,
        None => q,
    };
    let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
    note(
        "scores = q kᵀ / √d",
        &scores,
        "how much each position attends to each other".into(),
    );
    let probs = candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)?;
    note(
        "softmax(scores + mask)",
        &probs,
        match attn.window {
            Some(w) => {
                format!("rows sum to 1; the future, and the past beyond {w} tokens, masked to 0")
            }
            None => "rows sum to 1; the future is masked to 0".into(),
        },
    );
    let heads_out = probs.matmul(&v.contiguous()?)?;
    note(
        "probs · v",
        &heads_out,
        "a weighted mix of values per head".into(),
    );
    let merged = heads_out.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
    let attn_out = attn.o.forward(&merged)?;
    note(
        "o = merged Wo",
        &attn_out,
        "heads joined and projected back".into(),
    );
    let attn_out = match &block.post_norm_attn {
        Some(norm) => {
            let out = norm.forward(&attn_out, true)?;
            note("norm(o)", &out, "normalised before the residual add".into());
            out
        }
        None => attn_out,
    };

    let mlp_in = if block.parallel_residual {
        x.clone()
    } else {
        (x + &attn_out)?
    };
    if !block.parallel_residual {
        note("h = x + attention", &mlp_in, "the residual stream".into());
    }
    let m = block.norm_mlp.forward(&mlp_in, true)?;
    let mlp_out = match &block.mlp {
        FeedForward::SwiGlu { gate, up, down } => {
            let g = gate.forward(&m)?;
            note(
                "gate, up = norm(h) W",
                &g,
                "widened for the feed-forward".into(),
            );
            let h = (candle_nn::ops::silu(&g)? * up.forward(&m)?)?;
            note("silu(gate) ⊙ up", &h, "SwiGLU".into());
            down.forward(&h)?
        }
        FeedForward::Gelu { up, down } => {
            let h = up.forward(&m)?.gelu_erf()?;
            note("gelu(up)", &h, "widened for the feed-forward".into());
            down.forward(&h)?
        }
        FeedForward::GeGlu { gate, up, down } => {
            let g = gate.forward(&m)?;
            note(
                "gate, up = norm(h) W",
                &g,
                "widened for the feed-forward".into(),
            );
            let h = (g.gelu()? * up.forward(&m)?)?;
            note("gelu_tanh(gate) ⊙ up", &h, "GeGLU".into());
            down.forward(&h)?
        }
    };
    note("down", &mlp_out, "back to the hidden size".into());
    let mlp_out = match &block.post_norm_mlp {
        Some(norm) => {
            let out = norm.forward(&mlp_out, true)?;
            note(
                "norm(mlp)",
                &out,
                "normalised before the residual add".into(),
            );
            out
        }
        None => mlp_out,
    };
    let y = if block.parallel_residual {
        ((x + attn_out)? + mlp_out)?
    } else {
        (mlp_in + mlp_out)?
    };
    note(
        "y = h + mlp",
        &y,
        "the block's output: same shape as its input".into(),
    );
    Ok(y)
}

impl BlockTour {
    /// The steps as a table, the check against `Block::forward` in its note.
    pub fn table(&self) -> Result<Table> {
        let shape = |s: &TourStep| {
            let dims: Vec<String> = s.shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        };
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "step".into(),
                self.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            ),
            Column::new(
                "shape".into(),
                self.steps.iter().map(shape).collect::<Vec<_>>(),
            ),
            Column::new(
                "what happens".into(),
                self.steps
                    .iter()
                    .map(|s| s.what.as_str())
                    .collect::<Vec<_>>(),
            ),
        ])?;
        Ok(Table::new(
            format!("Block {} on {:?}, step by step", self.layer, self.prompt),
            frame,
        )
        .with_note(format!(
            "Tokens: {}. The steps' output equals the model's own Block::forward to within {:.1e}.",
            self.tokens.join(" | "),
            self.max_diff
        )))
    }

    pub fn evcxr_display(&self) {
        match self.table() {
            Ok(t) => t.evcxr_display(),
            Err(e) => println!("{e:#}"),
        }
    }
}
