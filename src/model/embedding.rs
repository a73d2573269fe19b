//! The token embedding table: a row per token id, kept as floats or, when the model's linear
//! weights are quantized for the CPU kernel, as a quantized matrix read row by row.
//!
//! Why quantized: the table is the largest single tensor of a small model (Llama 3.2 1B:
//! 128256 × 2048, 1 GB in f32, a third of the model's q4_0 size even quantized), and with tied
//! embeddings the output projection already holds it quantized. Sharing that one matrix keeps a
//! model's memory close to the size of its weights, as llama.cpp does.

use crate::kernels::packed::PackedMatrix;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Embedding {
    /// `(vocab, hidden)` in the model's dtype.
    Dense(Tensor),
    /// `(vocab, hidden)` quantized blocks; a lookup dequantizes the rows it needs.
    Quantized(Arc<PackedMatrix>),
}

impl Embedding {
    /// `ids`: `(batch, seq)` u32 → `(batch, seq, hidden)`; the caller has checked every id is
    /// below the vocabulary size.
    pub fn forward(&self, ids: &Tensor, hidden: usize, dtype: DType) -> Result<Tensor> {
        let (b, seq) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        match self {
            Embedding::Dense(table) => {
                Ok(table.index_select(&flat, 0)?.reshape((b, seq, hidden))?)
            }
            Embedding::Quantized(table) => {
                let ids = flat.to_vec1::<u32>()?;
                let mut x = vec![0f32; ids.len() * hidden];
                for (row, &id) in x.chunks_exact_mut(hidden).zip(&ids) {
                    table.dequantize_row(id as usize, row);
                }
                Ok(Tensor::from_vec(x, (b, seq, hidden), &Device::Cpu)?.to_dtype(dtype)?)
            }
        }
    }
}
