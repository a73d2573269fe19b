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
/// 0 where a query may look and -inf where it would see the future. Made once per forward and
/// shared by the layers (an MMLU question of 170 tokens after a 1000-token prefix needs a
/// 200k-value mask; made per layer, that was 30 of them per question).
pub fn causal_mask(seq: usize, past: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let total = past + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?.to_dtype(dtype)?)
}

impl Attention {
    /// `x`: `(batch, seq, hidden)` → `(batch, seq, hidden)`. Positions start at `cache.len()`.
    /// `mask`: [`causal_mask`] for the forward's positions (needed when `seq > 1`, unless
    /// [`super::vmath::fused_kernels_apply`]: the fused [`causal_softmax`] masks by position).
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: Option<&mut KvCache>,
        mask: Option<&Tensor>,
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
                let [q, k, v] = LoraLinear::forward_group([q, k, v], x)?;
                (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?)
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
        if seq == 1 && !train && q.dtype() == DType::F32 && q.device().is_cpu() {
            let y = attend_one(&q, &k, &v, nh / nkv)?;
            return self.o.forward(&y.reshape((b, 1, nh * hd))?);
        }

        let groups = nh / nkv;
        if mask.is_none()
            && seq > 1
            && !super::vmath::fused_kernels_apply(q.dtype(), q.device(), train)
        {
            anyhow::bail!("attention over {seq} new positions needs a causal mask")
        }
        // Long prompts are read QUERY_CHUNK queries at a time: the scores of 512 queries over 512
        // positions for 32 heads are 33 MB, which the allocator maps fresh (and the kernel
        // zeroes page by page) for every layer; chunks of a few MB are reused instead.
        let mut ys = Vec::with_capacity(seq.div_ceil(QUERY_CHUNK));
        for c0 in (0..seq).step_by(QUERY_CHUNK) {
            let n = QUERY_CHUNK.min(seq - c0);
            let mask = mask.map(|m| m.narrow(0, c0, n)).transpose()?;
            let q = q.narrow(2, c0, n)?;
            ys.push(attend_many(
                &q,
                (&k, &v),
                (mask.as_ref(), past + c0),
                groups,
                train,
            )?);
        }
        let y = Tensor::cat(&ys, 2)?; // (b, nh, seq, hd)
        let y = y.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
        self.o.forward(&y)
    }
}

/// Query heads (rows of `hd` values) that share one key/value head, over its cached keys and
/// values (`total` rows of `hd` each), into `ys`.
fn attend_heads(qs: &[f32], keys: &[f32], values: &[f32], hd: usize, ys: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::gemv::supported() && hd.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA; the rows are whole multiples of 8 values.
        return unsafe { attend_heads_avx2(qs, keys, values, hd, ys) };
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for (q, y) in qs.chunks_exact(hd).zip(ys.chunks_exact_mut(hd)) {
        let mut scores: Vec<f32> = keys
            .chunks_exact(hd)
            .map(|key| q.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale)
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        y.fill(0.0);
        for (p, value) in scores.iter().zip(values.chunks_exact(hd)) {
            for (y, v) in y.iter_mut().zip(value) {
                *y += p / sum * v;
            }
        }
    }
}

/// [`attend_heads`] with AVX2. The scores go 8 cached positions at a time: those 8 keys stay
/// in L1 while every query head of the group reads them, and one reduction ([`sum_lanes8`])
/// finishes 8 dot products instead of one. Then the softmax's exponentials 8 at a time
/// ([`exp_avx2`](super::vmath::exp_avx2)), and the weighted sum of values
/// ([`weighted_sum_avx2`]). With TinyLlama's shape at a 576-token context, a decode step's
/// attention took 2.2 ms of 18.5 when each head read the cache alone, one dot product and one
/// 4-accumulator value pass at a time, and 1.5 ms after (2 threads, AVX-512 VNNI EPYC).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_heads_avx2(qs: &[f32], keys: &[f32], values: &[f32], hd: usize, ys: &mut [f32]) {
    use std::arch::x86_64::*;
    let total = keys.len() / hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; qs.len() / hd * total];
    let mut j = 0;
    while j + 8 <= total {
        let block = keys.as_ptr().add(j * hd);
        for (i, q) in qs.chunks_exact(hd).enumerate() {
            let mut acc = [_mm256_setzero_ps(); 8];
            for d in (0..hd).step_by(8) {
                let qv = _mm256_loadu_ps(q.as_ptr().add(d));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(block.add(p * hd + d)), *acc);
                }
            }
            let s = _mm256_mul_ps(sum_lanes8(acc), _mm256_set1_ps(scale));
            _mm256_storeu_ps(scores.as_mut_ptr().add(i * total + j), s);
        }
        j += 8;
    }
    for (i, q) in qs.chunks_exact(hd).enumerate() {
        for jj in j..total {
            scores[i * total + jj] = super::gemv::dot_avx2(q, &keys[jj * hd..][..hd]) * scale;
        }
    }
    for (row, y) in scores.chunks_exact_mut(total).zip(ys.chunks_exact_mut(hd)) {
        let inv = _mm256_set1_ps(1.0 / exp_in_place_avx2(row));
        for d in (0..hd).step_by(64) {
            let y = y.as_mut_ptr().add(d);
            if d + 64 <= hd {
                weighted_sum_avx2::<8>(row, values.as_ptr().add(d), hd, inv, y);
            } else {
                for k in 0..(hd - d) / 8 {
                    weighted_sum_avx2::<1>(
                        row,
                        values.as_ptr().add(d + 8 * k),
                        hd,
                        inv,
                        y.add(8 * k),
                    );
                }
            }
        }
    }
}

/// `y[..8W] = inv · Σ_j p_j · values[j·stride..][..8W]`, with the `8W` outputs in registers across
/// all positions. Eight accumulators (64 values) keep both FMA units busy: each accumulator waits
/// for its previous FMA (4 cycles), and with four of them a decode step's value pass ran at
/// half speed (it was half of attention's time at a 576-token context).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn weighted_sum_avx2<const W: usize>(
    p: &[f32],
    values: *const f32,
    stride: usize,
    inv: std::arch::x86_64::__m256,
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); W];
    for (j, &p) in p.iter().enumerate() {
        let w = _mm256_set1_ps(p);
        let v = values.add(j * stride);
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8 * k)), *a);
        }
    }
    for (k, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(y.add(8 * k), _mm256_mul_ps(*a, inv));
    }
}

/// Lane `p` of the result is the sum of the 8 lanes of `v[p]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_lanes8(v: [std::arch::x86_64::__m256; 8]) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // Pairwise sums: after two rounds, 128-bit half h of `u[0]` holds the sums of half h of
    // v[0..4], and of `u[1]` those of v[4..8]; adding the halves finishes them.
    let t = [
        _mm256_hadd_ps(v[0], v[1]),
        _mm256_hadd_ps(v[2], v[3]),
        _mm256_hadd_ps(v[4], v[5]),
        _mm256_hadd_ps(v[6], v[7]),
    ];
    let u = [_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3])];
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(u[0], u[1]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[1]),
    )
}

/// `row[j] = e^(row[j] - max(row))`, 8 at a time; returns the new row's sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(row: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for chunk in row.chunks_exact(8) {
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(chunk.as_ptr()));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
    let max = row
        .chunks_exact(8)
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut vsum = _mm256_setzero_ps();
    let mut chunks = row.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let e = super::vmath::exp_avx2(_mm256_sub_ps(
            _mm256_loadu_ps(chunk.as_ptr()),
            _mm256_set1_ps(max),
        ));
        _mm256_storeu_ps(chunk.as_mut_ptr(), e);
        vsum = _mm256_add_ps(vsum, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), vsum);
    let mut sum: f32 = lanes.iter().sum();
    for s in chunks.into_remainder() {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
}

/// The causal softmax of raw scores `q·k` for inference, in one pass over each row: scale,
/// `e^x` 8 at a time, normalise, and zeros past the query's own position. candle's route (a
/// scaling pass, a mask added over the whole matrix, then its softmax with one libm `expf` per
/// value) made a long prompt's attention cost as much as its matmuls: an MMLU law question
/// (400 new tokens after 1,500 cached ones) has 6.8 million scores per layer.
/// `scores`: `(b, nkv, groups * seq, total)`, rows of one group's query `i` at position
/// `first_pos + i`.
#[cfg(target_arch = "x86_64")]
fn causal_softmax(scores: &Tensor, seq: usize, first_pos: usize, scale: f32) -> Result<Tensor> {
    use rayon::prelude::*;
    let total = scores.dim(D::Minus1)?;
    let mut v: Vec<f32> = scores.flatten_all()?.to_vec1()?;
    v.par_chunks_mut(total).enumerate().for_each(|(r, row)| {
        let (live, future) = row.split_at_mut((first_pos + r % seq + 1).min(total));
        for x in live.iter_mut() {
            *x *= scale;
        }
        // SAFETY: the caller checked that the CPU has AVX2 and FMA.
        let inv = 1.0 / unsafe { exp_in_place_avx2(live) };
        for x in live.iter_mut() {
            *x *= inv;
        }
        future.fill(0.0);
    });
    Ok(Tensor::from_vec(v, scores.shape(), scores.device())?)
}

/// Queries per pass of [`attend_many`].
const QUERY_CHUNK: usize = 128;

/// Attention of `seq` queries (at positions `first_pos..`) over all `total` cached positions
/// with matmuls. `q`: `(b, nh, seq, hd)`; `k`, `v`: `(b, nkv, total, hd)`; `mask`:
/// `(seq, total)`. Returns `(b, nh, seq, hd)`.
fn attend_many(
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
    (mask, first_pos): (Option<&Tensor>, usize),
    groups: usize,
    train: bool,
) -> Result<Tensor> {
    let (b, nh, seq, hd) = q.dims4()?;
    let (nkv, total) = (k.dim(1)?, k.dim(2)?);
    // Grouped-query attention without copying k and v: the `groups` query heads that share
    // a key/value head are stacked along the sequence axis, (b, nkv, groups * seq, hd).
    let q = q.contiguous()?.reshape((b, nkv, groups * seq, hd))?;
    let scale = 1.0 / (hd as f64).sqrt();
    let scores = q.matmul(&k.t()?)?; // (b, nkv, groups * seq, total)
    #[cfg(target_arch = "x86_64")]
    if super::vmath::fused_kernels_apply(scores.dtype(), scores.device(), train) {
        let probs = causal_softmax(&scores, seq, first_pos, scale as f32)?;
        return Ok(probs.matmul(v)?.reshape((b, nh, seq, hd))?);
    }
    let scores = (scores * scale)?;
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

/// One new position's attention over the cache in plain loops: a decode step's attention is a
/// few dot products per cached position, which a general matmul (with its packing, and the
/// transposes and copies around it) makes several times as costly. Each task takes query heads
/// that share a key/value head ([`heads_per_task`]), so a cached key is fetched once for them.
/// `q`: `(batch, heads, 1, head_dim)`; `k`, `v`: `(batch, kv_heads, total, head_dim)` views of
/// the cache (each head's rows contiguous). Returns `(batch, heads, head_dim)` as one row.
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, groups: usize) -> Result<Tensor> {
    use candle_core::Storage;
    use rayon::prelude::*;
    let (b, nh, _, hd) = q.dims4()?;
    let total = k.dim(2)?;
    let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(ks), Storage::Cpu(vs)) = (&*ks, &*vs) else {
        anyhow::bail!("attend_one runs on the CPU");
    };
    let (ks, vs) = (ks.as_slice::<f32>()?, vs.as_slice::<f32>()?);
    let (kst, vst) = (kl.stride(), vl.stride());
    if kst[3] != 1 || vst[3] != 1 || kst[2] != hd || vst[2] != hd {
        anyhow::bail!("attend_one needs each head's cached rows contiguous");
    }
    let per_task = heads_per_task(b * nh, groups, rayon::current_num_threads());
    let mut out = vec![0f32; b * nh * hd];
    out.par_chunks_mut(per_task * hd)
        .enumerate()
        .for_each(|(task, ys)| {
            let first = task * per_task;
            let (batch, kv) = (first / nh, first % nh / groups);
            let keys = &ks[kl.start_offset() + batch * kst[0] + kv * kst[1]..][..total * hd];
            let values = &vs[vl.start_offset() + batch * vst[0] + kv * vst[1]..][..total * hd];
            attend_heads(&q[first * hd..][..ys.len()], keys, values, hd, ys);
        });
    Ok(Tensor::from_vec(
        out,
        (b, nh * hd),
        &candle_core::Device::Cpu,
    )?)
}

/// Query heads per task of [`attend_one`]: all `groups` heads of a key/value head while that
/// leaves two tasks per thread (for balance), else the largest divisor of `groups` that does,
/// so a task never spans two key/value heads.
fn heads_per_task(heads: usize, groups: usize, threads: usize) -> usize {
    (1..=groups)
        .rev()
        .find(|c| groups.is_multiple_of(*c) && heads / c >= 2 * threads)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention of one query row over `total` rows, in f64.
    fn naive(q: &[f32], keys: &[f32], values: &[f32]) -> Vec<f64> {
        let hd = q.len();
        let scores: Vec<f64> = keys
            .chunks_exact(hd)
            .map(|k| {
                q.iter()
                    .zip(k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            })
            .map(|s| s / (hd as f64).sqrt())
            .collect();
        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..hd)
            .map(|d| {
                e.iter()
                    .zip(values.chunks_exact(hd))
                    .map(|(p, v)| p * v[d] as f64)
                    .sum::<f64>()
                    / sum
            })
            .collect()
    }

    #[test]
    fn decode_attention_matches_softmax_attention_for_grouped_heads() {
        let mut seed = 7u32;
        let mut rand = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
        };
        // Head sizes of the AVX2 path (64, 256) and of the plain one (20); contexts with and
        // without a partial block of 8 positions; GQA groups of 1, 3 and 8.
        for (hd, total, nh, nkv) in [
            (64, 37, 32, 4),
            (256, 16, 8, 8),
            (20, 5, 9, 3),
            (64, 1, 9, 3),
        ] {
            let q: Vec<f32> = (0..nh * hd).map(|_| rand()).collect();
            let k: Vec<f32> = (0..nkv * total * hd).map(|_| rand()).collect();
            let v: Vec<f32> = (0..nkv * total * hd).map(|_| rand()).collect();
            let dev = candle_core::Device::Cpu;
            let qt = Tensor::from_slice(&q, (1, nh, 1, hd), &dev).unwrap();
            let kt = Tensor::from_slice(&k, (1, nkv, total, hd), &dev).unwrap();
            let vt = Tensor::from_slice(&v, (1, nkv, total, hd), &dev).unwrap();
            let y: Vec<f32> = attend_one(&qt, &kt, &vt, nh / nkv)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for h in 0..nh {
                let kv = h / (nh / nkv);
                let rows = kv * total * hd..(kv + 1) * total * hd;
                let want = naive(&q[h * hd..][..hd], &k[rows.clone()], &v[rows]);
                for (a, b) in y[h * hd..][..hd].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "hd {hd} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn tasks_take_whole_groups_while_the_threads_stay_busy() {
        assert_eq!(heads_per_task(32, 8, 2), 8); // TinyLlama: 4 tasks
        assert_eq!(heads_per_task(32, 4, 2), 4); // Llama 3.2 1B: 8 tasks
        assert_eq!(heads_per_task(9, 3, 2), 1); // SmolLM2-135M: 3 tasks would idle a thread
        assert_eq!(heads_per_task(9, 3, 1), 3);
        assert_eq!(heads_per_task(32, 1, 2), 1);
    }
}
