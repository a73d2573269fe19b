//! The row order of llama's `q_proj` and `k_proj` inside a GGUF file.
//!
//! Hugging Face llama rotates the dimension pairs `(i, i + d/2)` of each head. llama.cpp's
//! converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of q and k per
//! head so that its kernels rotate neighbours `(2i, 2i + 1)` instead; the crate records such a
//! model as [`RopeStyle::Interleaved`]. Anything that lives in the output space of q or k has to
//! follow that order on a GGUF base: a LoRA `B` matrix (`[out, r]`) is permuted when a peft
//! adapter is applied, and permuted back when an adapter trained on a GGUF base is saved, so that
//! the file on disk is always the Hugging Face layout peft expects.

use crate::model::config::{Architecture, RopeStyle, TransformerConfig};
use anyhow::{bail, Result};
use candle_core::Tensor;

/// llama.cpp's permutation of Hugging Face rows into GGUF rows:
/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(w.shape)`.
pub fn to_gguf_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = half_head(rows, n_head)?;
    Ok(w.reshape((n_head, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The inverse of [`to_gguf_rows`]: GGUF rows back into Hugging Face order.
pub fn to_hf_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = half_head(rows, n_head)?;
    Ok(w.reshape((n_head, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn half_head(rows: usize, n_head: usize) -> Result<usize> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        bail!("{rows} rows do not split into {n_head} heads of an even size");
    }
    Ok(rows / n_head / 2)
}

/// The number of heads whose rows llama.cpp permuted in the module `name` of a model with
/// `config`: the query heads for `q_proj`, the key/value heads for `k_proj`, and `None` for every
/// other module or for a model in Hugging Face layout.
pub fn permuted_heads(config: &TransformerConfig, name: &str) -> Option<usize> {
    if config.architecture != Architecture::Llama || config.rope_style != RopeStyle::Interleaved {
        return None;
    }
    if name.ends_with("self_attn.q_proj") {
        Some(config.num_heads)
    } else if name.ends_with("self_attn.k_proj") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // 2 heads of 4 rows, one column holding the row index.
        let w = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let g = to_gguf_rows(&w, 2).unwrap();
        let rows: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        // Per head, rows (0, 2, 1, 3): HF pair (i, i + 2) becomes GGUF pair (2i, 2i + 1).
        assert_eq!(rows, [0., 2., 1., 3., 4., 6., 5., 7.]);
        let back: Vec<f32> = to_hf_rows(&g, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(back, [0., 1., 2., 3., 4., 5., 6., 7.]);
    }
}
