//! A key/value cache that can grow, be rolled back, and be reset.

use anyhow::Result;
use candle_core::{DType, Tensor};

/// Keys and values of the positions seen so far, for one layer.
///
/// The cache keeps a preallocated buffer of shape `(batch, kv_heads, capacity, head_dim)` and
/// writes new positions in place, so a decode step copies one position, not the whole history.
/// [`KvCache::truncate`] just lowers the length: speculative decoding uses it to drop rejected
/// draft tokens, and MMLU scoring to return to a shared few-shot prefix.
///
/// The buffer's dtype is the caller's choice: a quantized model keeps its keys and values in
/// f16, half the bytes that every decode step reads back (see `Attention::forward`).
///
/// A clone owns copies of the buffers: [`KvCache::append`] writes in place, so two caches
/// sharing one buffer (candle tensors share storage when cloned) would overwrite each other's
/// positions, and so would two clones of a `Transformer` decoding side by side.
#[derive(Debug, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        let own = |t: &Option<Tensor>| {
            t.as_ref().map(|t| {
                t.copy()
                    .expect("copying a KV cache buffer in memory cannot fail")
            })
        };
        KvCache {
            k: own(&self.k),
            v: own(&self.v),
            len: self.len,
        }
    }
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

    /// The dtype the keys and values are stored in, once something is.
    pub fn dtype(&self) -> Option<DType> {
        self.k.as_ref().map(|k| k.dtype())
    }

    /// Appends `k`, `v` of shape `(batch, kv_heads, seq, head_dim)`, stored as `dtype`, and
    /// returns views of all positions so far, `(batch, kv_heads, len, head_dim)`, in `dtype`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let needed = self.len + seq;
        if needed > self.capacity() || self.dtype() != Some(dtype) {
            let (b, h, _, d) = k.dims4()?;
            let capacity = needed.div_ceil(GROW_BY) * GROW_BY;
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((b, h, capacity, d), dtype, k.device())?;
                if let Some(old) = old {
                    if self.len > 0 {
                        let kept = old.narrow(2, 0, self.len)?.to_dtype(dtype)?;
                        buf.slice_set(&kept.contiguous()?, 2, 0)?;
                    }
                }
                Ok(buf)
            };
            self.k = Some(grow(&self.k)?);
            self.v = Some(grow(&self.v)?);
        }
        let (kb, vb) = (self.k.as_ref().unwrap(), self.v.as_ref().unwrap());
        kb.slice_set(&k.to_dtype(dtype)?.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.to_dtype(dtype)?.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, self.len)?, vb.narrow(2, 0, self.len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_cache_keeps_the_asked_dtype_across_growth_and_rollback() {
        let dev = Device::Cpu;
        let step = |from: usize, n: usize| {
            let t = Tensor::arange(from as f32, (from + n) as f32, &dev).unwrap();
            t.reshape((1, 1, n, 1)).unwrap()
        };
        let mut cache = KvCache::default();
        cache
            .append(&step(0, 200), &step(0, 200), DType::F16)
            .unwrap();
        // Past the first 256 positions the buffer grows; the positions kept are copied over.
        let (k, _) = cache
            .append(&step(200, 100), &step(200, 100), DType::F16)
            .unwrap();
        assert_eq!(cache.dtype(), Some(DType::F16));
        let want: Vec<f32> = (0..300).map(|i| i as f32).collect();
        let got = |k: &Tensor| -> Vec<f32> {
            k.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(got(&k), want);
        // Rolled back, then asked for f32 (a model switched to training): converted, not lost.
        cache.truncate(10);
        let (k, _) = cache
            .append(&step(10, 1), &step(10, 1), DType::F32)
            .unwrap();
        assert_eq!(k.dtype(), DType::F32);
        assert_eq!(got(&k), want[..11]);
    }

    #[test]
    fn a_clone_keeps_its_positions_when_the_original_appends() {
        let dev = Device::Cpu;
        let ones = Tensor::ones((1, 2, 3, 4), DType::F32, &dev).unwrap();
        let twos = (&ones * 2.0).unwrap();
        let mut original = KvCache::default();
        original.append(&ones, &ones, DType::F32).unwrap();
        original.truncate(1);
        let mut clone = original.clone();
        // Both write positions 1..4, inside the buffer a plain clone would share; the clone's
        // view is read after the original has written.
        let (k, _) = clone.append(&ones, &ones, DType::F32).unwrap();
        original.append(&twos, &twos, DType::F32).unwrap();
        let k: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            k.iter().all(|&x| x == 1.0),
            "the clone saw the original's values: {k:?}"
        );
    }
}
