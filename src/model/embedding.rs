//! The token embedding table: a row per token id, kept as floats or, when the model's linear
//! weights are quantized for the CPU kernel, as a quantized matrix read row by row; a quantized
//! table the kernel does not take (on a CPU without AVX2) stays in the file's blocks.
//!
//! Why quantized: the table is the largest single tensor of a small model (Llama 3.2 1B:
//! 128256 × 2048, 1 GB in f32, a third of the model's q4_0 size even quantized), and with tied
//! embeddings the output projection already holds it quantized. Sharing that one matrix keeps a
//! model's memory close to the size of its weights, as llama.cpp does.

use crate::kernels::packed::PackedMatrix;
use anyhow::Result;
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Embedding {
    /// `(vocab, hidden)` in the model's dtype.
    Dense(Tensor),
    /// `(vocab, hidden)` quantized blocks; a lookup dequantizes the rows it needs.
    Quantized(Arc<PackedMatrix>),
    /// `(vocab, hidden)` in candle's blocks on the CPU, as the file stores them; a lookup
    /// dequantizes the rows it needs. Held in f32 instead, a `q3_K` table of StableLM 2 (100k ×
    /// 2048) would take 0.8 GB rather than 0.09.
    Blocks(Arc<QTensor>),
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
            Embedding::Blocks(table) => {
                let ids = flat.to_vec1::<u32>()?;
                let data = table.data()?;
                let row_bytes = data.len() / table.shape().dims()[0];
                // The rows asked for, gathered into one small quantized tensor and dequantized
                // at once.
                let mut rows = Vec::with_capacity(ids.len() * row_bytes);
                for &id in &ids {
                    let start = id as usize * row_bytes;
                    rows.extend_from_slice(&data[start..start + row_bytes]);
                }
                let storage = QStorage::from_data(Cow::Owned(rows), &Device::Cpu, table.dtype())?;
                let picked = QTensor::new(storage, (ids.len(), hidden))?;
                Ok(picked
                    .dequantize(&Device::Cpu)?
                    .reshape((b, seq, hidden))?
                    .to_dtype(dtype)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    /// A table kept in its blocks gives the rows the dequantized table gives (two K formats here;
    /// any block format takes this path on a CPU without AVX2).
    #[test]
    fn a_table_in_blocks_looks_up_the_dequantized_rows() {
        let (vocab, hidden) = (40, 256);
        let values: Vec<f32> = (0..vocab * hidden)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let t = Tensor::from_vec(values, (vocab, hidden), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q2K, GgmlDType::Q3K] {
            let q = Arc::new(QTensor::quantize(&t, dtype).unwrap());
            let dense = Embedding::Dense(q.dequantize(&Device::Cpu).unwrap());
            let blocks = Embedding::Blocks(q);
            let ids = Tensor::new(&[[3u32, 39, 0], [17, 3, 22]], &Device::Cpu).unwrap();
            let a = dense.forward(&ids, hidden, DType::F32).unwrap();
            let b = blocks.forward(&ids, hidden, DType::F32).unwrap();
            assert_eq!(a.dims(), &[2, 3, hidden]);
            let diff = crate::model::max_abs_diff(&a, &b).unwrap();
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
    }
}
