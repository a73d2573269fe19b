//! A key/value cache that can grow, be rolled back, and be reset.

use anyhow::Result;
use candle_core::Tensor;

/// Keys and values of the positions seen so far, for one layer.
///
/// The cache keeps a preallocated buffer of shape `(batch, kv_heads, capacity, head_dim)` and
/// writes new positions in place, so a decode step copies one position, not the whole history.
/// [`KvCache::truncate`] just lowers the length: speculative decoding uses it to drop rejected
/// draft tokens, and MMLU scoring to return to a shared few-shot prefix.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

/// Capacity grows in steps of this many positions.
const GROW_BY: usize = 256;

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(2).unwrap_or(0))
    }

    /// Appends `k`, `v` of shape `(batch, kv_heads, seq, head_dim)` and returns views of all
    /// positions so far, `(batch, kv_heads, len, head_dim)`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let needed = self.len + seq;
        if needed > self.capacity() {
            let (b, h, _, d) = k.dims4()?;
            let capacity = needed.div_ceil(GROW_BY) * GROW_BY;
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((b, h, capacity, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    if self.len > 0 {
                        buf.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(buf)
            };
            self.k = Some(grow(&self.k)?);
            self.v = Some(grow(&self.v)?);
        }
        let (kb, vb) = (self.k.as_ref().unwrap(), self.v.as_ref().unwrap());
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, self.len)?, vb.narrow(2, 0, self.len)?))
    }
}
