//! Attention over the KV cache in our own loops, for f32 inference on the CPU: one new position
//! (a decode step, [`attend_one`]) and a prompt's positions each over those up to its own
//! ([`attend_causal`]). The cache may hold f32 or f16 ([`Widen`]). A general matmul, with its
//! packing and the transposes and copies around it, makes a decode step's few dot products per
//! cached position several times as costly, and a prompt's masked scores compute the future
//! only to throw it away. `model::attention` keeps candle's matmul route for training and
//! other devices.

use super::isa;
use super::pool;
use super::simd::{self, Widen};
use anyhow::Result;
use candle_core::{DType, Tensor};
use half::f16;

/// One new position's attention over the cache. `q`: `(batch, heads, 1, head_dim)` f32; `k`,
/// `v`: `(batch, kv_heads, total, head_dim)` views of the cache in f32 or f16, each head's rows
/// contiguous; `groups` query heads share a key/value head. Returns `(batch, heads · head_dim)`.
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, groups: usize) -> Result<Tensor> {
    match k.dtype() {
        DType::F16 => attend_one_in::<f16>(q, k, v, groups),
        _ => attend_one_in::<f32>(q, k, v, groups),
    }
}

/// The causal attention of the last `seq` positions of the cache, each over the positions up to
/// its own. `q`: `(batch, heads, seq, head_dim)` f32; `k`, `v` as for [`attend_one`]. Returns
/// `(batch, seq, heads · head_dim)`, ready for the output projection.
pub fn attend_causal(q: &Tensor, k: &Tensor, v: &Tensor, groups: usize) -> Result<Tensor> {
    match k.dtype() {
        DType::F16 => attend_causal_in::<f16>(q, k, v, groups),
        _ => attend_causal_in::<f32>(q, k, v, groups),
    }
}

/// Query rows (of `hd` values) that share one key/value head, row `r` over the first `lens[r]`
/// of its cached keys and values (rows of `hd`), into `ys`.
fn attend_rows<E: Widen>(qs: &[f32], lens: &[usize], (keys, values): (&[E], &[E]), ys: &mut [f32]) {
    let hd = ys.len() / lens.len().max(1);
    #[cfg(target_arch = "x86_64")]
    if isa::Isa::detect() == Some(isa::Isa::Avx512Vnni) && hd.is_multiple_of(16) {
        // SAFETY: the CPU has AVX-512F (and AVX2, FMA, F16C); the rows are whole multiples of
        // 16 values.
        return unsafe { attend_rows_avx512(qs, lens, (keys, values), hd, ys) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa::simd() && hd.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2, FMA and F16C; the rows are whole multiples of 8 values.
        return unsafe { attend_rows_avx2(qs, lens, (keys, values), hd, ys) };
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for ((q, y), &len) in qs.chunks_exact(hd).zip(ys.chunks_exact_mut(hd)).zip(lens) {
        let mut scores: Vec<f32> = keys
            .chunks_exact(hd)
            .take(len)
            .map(|key| {
                q.iter()
                    .zip(key)
                    .map(|(a, b)| a * b.to_f64() as f32)
                    .sum::<f32>()
                    * scale
            })
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
                *y += p / sum * v.to_f64() as f32;
            }
        }
    }
}

/// [`attend_rows`] with AVX2. The scores go 8 cached positions at a time: those 8 keys stay
/// in L1 while every query row reads them, and one reduction ([`sum_lanes8`]) finishes 8 dot
/// products instead of one. Then the softmax's exponentials 8 at a time
/// ([`exp_avx2`](simd::exp_avx2)), and the weighted sum of values
/// ([`weighted_sums_avx2`]). With TinyLlama's shape at a 576-token context this is 1.5 ms of an
/// 18.5 ms decode step, against 2.2 ms for each head reading the cache alone, one dot product at
/// a time (2 threads, AVX-512 VNNI EPYC; results/README.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_rows_avx2<E: Widen>(
    qs: &[f32],
    lens: &[usize],
    (keys, values): (&[E], &[E]),
    hd: usize,
    ys: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX2, FMA and F16C, and that `keys` and `values` hold
    // `max(lens)` rows of `hd` values (a multiple of 8) and `qs`, `ys` one row per entry of
    // `lens`: every pointer below stays inside them.
    unsafe {
        use std::arch::x86_64::*;
        let longest = lens.iter().copied().max().unwrap_or(0);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = vec![0f32; lens.len() * longest];
        let q = |r: usize| qs[r * hd..(r + 1) * hd].as_ptr();
        let vscale = _mm256_set1_ps(scale);
        let mut j = 0;
        while j + 8 <= longest {
            let block = keys[j * hd..(j + 8) * hd].as_ptr();
            let mut r = 0;
            while r < lens.len() {
                let pair = r + 1 < lens.len() && lens[r].min(lens[r + 1]) >= j + 8;
                if pair {
                    // Two rows by four keys: each key vector loaded serves both rows.
                    for half in [0, 4] {
                        let mut acc = [_mm256_setzero_ps(); 8];
                        for d in (0..hd).step_by(8) {
                            let qa = _mm256_loadu_ps(q(r).add(d));
                            let qb = _mm256_loadu_ps(q(r + 1).add(d));
                            for p in 0..4 {
                                let k = E::load8(block.add((half + p) * hd + d));
                                acc[p] = _mm256_fmadd_ps(qa, k, acc[p]);
                                acc[4 + p] = _mm256_fmadd_ps(qb, k, acc[4 + p]);
                            }
                        }
                        let s = _mm256_mul_ps(sum_lanes8(acc), vscale);
                        let at = r * longest + j + half;
                        _mm_storeu_ps(scores[at..][..4].as_mut_ptr(), _mm256_castps256_ps128(s));
                        let at = at + longest;
                        _mm_storeu_ps(
                            scores[at..][..4].as_mut_ptr(),
                            _mm256_extractf128_ps::<1>(s),
                        );
                    }
                    r += 2;
                    continue;
                }
                if lens[r] >= j + 8 {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for d in (0..hd).step_by(8) {
                        let qv = _mm256_loadu_ps(q(r).add(d));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(qv, E::load8(block.add(p * hd + d)), *acc);
                        }
                    }
                    let s = _mm256_mul_ps(sum_lanes8(acc), vscale);
                    _mm256_storeu_ps(scores[r * longest + j..][..8].as_mut_ptr(), s);
                }
                r += 1;
            }
            j += 8;
        }
        let values_of: (WeightedSums<E, 4>, WeightedSums<E, 1>) =
            (weighted_sums_avx2::<E, 4, 4>, weighted_sums_avx2::<E, 1, 8>);
        finish_rows(
            qs,
            lens,
            (keys, values),
            hd,
            (&mut scores, longest),
            values_of,
            ys,
        );
    }
}

/// What follows the scores of 8-key blocks, alike for both instruction sets but for the kernel
/// of the weighted sums: the scores of the positions past the last whole block, each row's
/// softmax, then the values, 4 rows at a time (rows of a 4-row pass share the positions up to
/// the longest of them, as past its own length a row's probabilities are zeros) or one.
///
/// # Safety
/// AVX2, FMA and F16C, and what the kernels of `values_of` need; as [`attend_rows_avx2`] for
/// the slices; `scores` holds `lens.len()` rows of `longest`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn finish_rows<E: Widen>(
    qs: &[f32],
    lens: &[usize],
    (keys, values): (&[E], &[E]),
    hd: usize,
    (scores, longest): (&mut [f32], usize),
    values_of: (WeightedSums<E, 4>, WeightedSums<E, 1>),
    ys: &mut [f32],
) {
    // SAFETY: the caller guarantees the CPU features and the slices' sizes above: every row
    // read lies within `keys`, `scores` and `qs`, every pointer into `ys` within its rows.
    unsafe {
        let scale = 1.0 / (hd as f32).sqrt();
        for ((q, row), &len) in qs
            .chunks_exact(hd)
            .zip(scores.chunks_exact_mut(longest))
            .zip(lens)
        {
            for (jj, score) in row.iter_mut().enumerate().take(len).skip(len / 8 * 8) {
                *score = simd::dot_avx2(q, &keys[jj * hd..][..hd]) * scale;
            }
        }
        let inv: Vec<f32> = scores
            .chunks_exact_mut(longest)
            .zip(lens)
            .map(|(row, &len)| 1.0 / exp_in_place_avx2(&mut row[..len]))
            .collect();
        let out = ys.as_mut_ptr();
        let mut r = 0;
        while r < lens.len() {
            let rows = if lens.len() - r >= 4 { 4 } else { 1 };
            let n = lens[r..r + rows].iter().copied().max().unwrap_or(0);
            let p = |i: usize| &scores[(r + i) * longest..][..n];
            let y = |i: usize| out.add((r + i) * hd);
            if rows == 4 {
                let (p, y) = ([p(0), p(1), p(2), p(3)], [y(0), y(1), y(2), y(3)]);
                (values_of.0)(p, (values, hd), &inv[r..r + 4], y);
            } else {
                (values_of.1)([p(0)], (values, hd), &inv[r..r + 1], [y(0)]);
            }
            r += rows;
        }
    }
}

/// A kernel of `R` rows' weighted sums of values ([`weighted_sums_avx2`],
/// [`weighted_sums_avx512`]).
type WeightedSums<E, const R: usize> = unsafe fn([&[f32]; R], (&[E], usize), &[f32], [*mut f32; R]);

/// `y_r = inv_r · Σ_j p_r[j] · values[j]` for `R` rows of probabilities (of one length) at once,
/// `8W` output values at a time held in registers across all positions. Each value vector
/// loaded serves the `R` rows: one row at a time, a long prompt's value pass was bound by
/// reading the values from L2. And `R · W` accumulators keep both FMA units busy (each waits 4
/// cycles for its previous FMA; with four, a decode step's value pass ran at half speed).
///
/// # Safety
/// AVX2, FMA and F16C; `values` holds `p[r].len()` rows of `hd` (a multiple of 8) values, each
/// `y[r]` room for `hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sums_avx2<E: Widen, const R: usize, const W: usize>(
    p: [&[f32]; R],
    (values, hd): (&[E], usize),
    inv: &[f32],
    y: [*mut f32; R],
) {
    // SAFETY: the caller guarantees AVX2, FMA and F16C, and the ranges described above: each load
    // reads within `probs` and `values`, each store within `ys`.
    unsafe {
        use std::arch::x86_64::*;
        let n = p[0].len();
        let mut d = 0;
        while d < hd {
            let width = if d + 8 * W <= hd { W } else { 1 };
            let mut acc = [[_mm256_setzero_ps(); W]; R];
            for j in 0..n {
                let v = values[j * hd + d..].as_ptr();
                let vs: [__m256; W] = std::array::from_fn(|k| {
                    if k < width {
                        E::load8(v.add(8 * k))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                for (acc, p) in acc.iter_mut().zip(&p) {
                    let w = _mm256_set1_ps(*p.get_unchecked(j));
                    for (a, v) in acc.iter_mut().zip(&vs) {
                        *a = _mm256_fmadd_ps(w, *v, *a);
                    }
                }
            }
            for ((acc, &y), &inv) in acc.iter().zip(&y).zip(inv) {
                for (k, a) in acc.iter().enumerate().take(width) {
                    _mm256_storeu_ps(y.add(d + 8 * k), _mm256_mul_ps(*a, _mm256_set1_ps(inv)));
                }
            }
            d += 8 * width;
        }
    }
}

/// [`attend_rows_avx2`] on 512-bit registers: each FMA covers 16 values of a row, half as
/// many as with AVX2, and the value pass's 16 accumulators (4 rows × 64 values) stay in the 32
/// registers, where AVX2's 16 spill. A speculative verification's attention over a long context
/// is its largest cost after the matmuls: SmolLM2-135M's forward over 9 tokens after 250 took
/// 10.41 ms with the AVX2 kernel and 10.04 ms with this one (medians of five runs, builds
/// taking turns; AVX-512 VNNI host, 2 threads).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn attend_rows_avx512<E: Widen>(
    qs: &[f32],
    lens: &[usize],
    (keys, values): (&[E], &[E]),
    hd: usize,
    ys: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX-512F, AVX2, FMA and F16C, and that `keys` and `values`
    // hold `max(lens)` rows of `hd` values (a multiple of 16) and `qs`, `ys` one row per entry
    // of `lens`: every pointer below stays inside them.
    unsafe {
        use std::arch::x86_64::*;
        let longest = lens.iter().copied().max().unwrap_or(0);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = vec![0f32; lens.len() * longest];
        let q = |r: usize| qs[r * hd..(r + 1) * hd].as_ptr();
        let vscale = _mm256_set1_ps(scale);
        let mut j = 0;
        while j + 8 <= longest {
            let block = keys[j * hd..(j + 8) * hd].as_ptr();
            let mut r = 0;
            while r < lens.len() {
                let pair = r + 1 < lens.len() && lens[r].min(lens[r + 1]) >= j + 8;
                if pair {
                    // Two rows by four keys: each key vector loaded serves both rows.
                    for half in [0, 4] {
                        let mut acc = [_mm512_setzero_ps(); 8];
                        for d in (0..hd).step_by(16) {
                            let qa = _mm512_loadu_ps(q(r).add(d));
                            let qb = _mm512_loadu_ps(q(r + 1).add(d));
                            for p in 0..4 {
                                let k = E::load16(block.add((half + p) * hd + d));
                                acc[p] = _mm512_fmadd_ps(qa, k, acc[p]);
                                acc[4 + p] = _mm512_fmadd_ps(qb, k, acc[4 + p]);
                            }
                        }
                        let s = _mm256_mul_ps(sum_lanes8(acc.map(|a| fold16(a))), vscale);
                        let at = r * longest + j + half;
                        _mm_storeu_ps(scores[at..][..4].as_mut_ptr(), _mm256_castps256_ps128(s));
                        let at = at + longest;
                        _mm_storeu_ps(
                            scores[at..][..4].as_mut_ptr(),
                            _mm256_extractf128_ps::<1>(s),
                        );
                    }
                    r += 2;
                    continue;
                }
                if lens[r] >= j + 8 {
                    let mut acc = [_mm512_setzero_ps(); 8];
                    for d in (0..hd).step_by(16) {
                        let qv = _mm512_loadu_ps(q(r).add(d));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(qv, E::load16(block.add(p * hd + d)), *acc);
                        }
                    }
                    let s = _mm256_mul_ps(sum_lanes8(acc.map(|a| fold16(a))), vscale);
                    _mm256_storeu_ps(scores[r * longest + j..][..8].as_mut_ptr(), s);
                }
                r += 1;
            }
            j += 8;
        }
        let values_of: (WeightedSums<E, 4>, WeightedSums<E, 1>) = (
            weighted_sums_avx512::<E, 4, 4>,
            weighted_sums_avx512::<E, 1, 4>,
        );
        finish_rows(
            qs,
            lens,
            (keys, values),
            hd,
            (&mut scores, longest),
            values_of,
            ys,
        );
    }
}

/// [`weighted_sums_avx2`] on 512-bit registers, `16W` output values at a time.
///
/// # Safety
/// AVX-512F; `values` holds `p[r].len()` rows of `hd` (a multiple of 16) values, each `y[r]`
/// room for `hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn weighted_sums_avx512<E: Widen, const R: usize, const W: usize>(
    p: [&[f32]; R],
    (values, hd): (&[E], usize),
    inv: &[f32],
    y: [*mut f32; R],
) {
    // SAFETY: the caller guarantees AVX-512F and the ranges described above: each load reads
    // within `p` and `values`, each store within `y`.
    unsafe {
        use std::arch::x86_64::*;
        let n = p[0].len();
        let mut d = 0;
        while d < hd {
            let width = if d + 16 * W <= hd { W } else { 1 };
            let mut acc = [[_mm512_setzero_ps(); W]; R];
            for j in 0..n {
                let v = values[j * hd + d..].as_ptr();
                let vs: [__m512; W] = std::array::from_fn(|k| {
                    if k < width {
                        E::load16(v.add(16 * k))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (acc, p) in acc.iter_mut().zip(&p) {
                    let w = _mm512_set1_ps(*p.get_unchecked(j));
                    for (a, v) in acc.iter_mut().zip(&vs) {
                        *a = _mm512_fmadd_ps(w, *v, *a);
                    }
                }
            }
            for ((acc, &y), &inv) in acc.iter().zip(&y).zip(inv) {
                for (k, a) in acc.iter().enumerate().take(width) {
                    _mm512_storeu_ps(y.add(d + 16 * k), _mm512_mul_ps(*a, _mm512_set1_ps(inv)));
                }
            }
            d += 16 * width;
        }
    }
}

/// The two 256-bit halves of `v` added: 8 lanes with the same sum as its 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn fold16(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), high)
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
    // SAFETY: the caller guarantees AVX2 and FMA; the loads and stores go through
    // `chunks_exact_mut(8)`, eight values each.
    unsafe {
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
            let e = simd::exp_avx2(_mm256_sub_ps(
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
}

/// Cached keys or values on the CPU: a `(batch, kv_heads, total, head_dim)` view whose rows
/// are contiguous within each head (the [`KvCache`] buffer, or a contiguous tensor).
struct CacheRows<'a, E> {
    data: &'a [E],
    start: usize,
    strides: [usize; 2],
    head_len: usize,
}

impl<'a, E: Widen> CacheRows<'a, E> {
    fn new(
        data: &'a candle_core::CpuStorage,
        layout: &candle_core::Layout,
        total: usize,
        hd: usize,
    ) -> Result<Self> {
        let st = layout.stride();
        if st[3] != 1 || st[2] != hd {
            anyhow::bail!("our attention kernels need each head's cached rows contiguous");
        }
        Ok(CacheRows {
            data: data.as_slice::<E>()?,
            start: layout.start_offset(),
            strides: [st[0], st[1]],
            head_len: total * hd,
        })
    }

    /// The `total` rows of one key/value head.
    fn head(&self, batch: usize, kv: usize) -> &[E] {
        &self.data[self.start + batch * self.strides[0] + kv * self.strides[1]..][..self.head_len]
    }
}

/// Runs `f` on the rows of `k` and `v` (see [`CacheRows`]); fails on another device or layout.
fn with_cache_rows<E: Widen, R>(
    k: &Tensor,
    v: &Tensor,
    f: impl FnOnce(CacheRows<E>, CacheRows<E>) -> Result<R>,
) -> Result<R> {
    use candle_core::Storage;
    let (_, _, total, hd) = k.dims4()?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(ks), Storage::Cpu(vs)) = (&*ks, &*vs) else {
        anyhow::bail!("our attention kernels run on the CPU");
    };
    f(
        CacheRows::new(ks, kl, total, hd)?,
        CacheRows::new(vs, vl, total, hd)?,
    )
}

/// One new position's attention over the cache in plain loops: a decode step's attention is a
/// few dot products per cached position, which a general matmul (with its packing, and the
/// transposes and copies around it) makes several times as costly. Each task takes query heads
/// that share a key/value head ([`heads_per_task`]), so a cached key is fetched once for them.
/// `q`: `(batch, heads, 1, head_dim)`; `k`, `v`: `(batch, kv_heads, total, head_dim)` views of
/// the cache (each head's rows contiguous). Returns `(batch, heads, head_dim)` as one row.
fn attend_one_in<E: Widen>(q: &Tensor, k: &Tensor, v: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, nh, _, hd) = q.dims4()?;
    let total = k.dim(2)?;
    let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let per_task = heads_per_task(b * nh, groups, rayon::current_num_threads());
    let lens = vec![total; per_task];
    let mut out = vec![0f32; b * nh * hd];
    with_cache_rows::<E, _>(k, v, |keys, values| {
        pool::for_each_chunk_mut(&mut out, per_task * hd, |task, ys| {
            let first = task * per_task;
            let (batch, kv) = (first / nh, first % nh / groups);
            let cache = (keys.head(batch, kv), values.head(batch, kv));
            attend_rows(&q[first * hd..][..ys.len()], &lens, cache, ys);
        });
        Ok(())
    })?;
    Ok(Tensor::from_vec(
        out,
        (b, nh * hd),
        &candle_core::Device::Cpu,
    )?)
}

/// The attention of `seq` new positions, the last `seq` of the cache's `total`, each over the
/// positions up to its own, in our own loops ([`attend_rows`]): what the model's matmul route does with
/// two matmuls, a mask and a softmax, without writing out every head's `(seq, total)` scores or
/// computing the masked future. A task takes a block of positions ([`positions_per_task`]) for
/// one key/value head with all its query heads, so each block of 8 keys read serves them all.
/// `q`: `(b, nh, seq, hd)`; `k`, `v` as for [`attend_one`]. Returns `(b, seq, nh * hd)`, ready
/// for the output projection.
fn attend_causal_in<E: Widen>(q: &Tensor, k: &Tensor, v: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, nh, seq, hd) = q.dims4()?;
    let (nkv, total) = (k.dim(1)?, k.dim(2)?);
    let past = total - seq;
    let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let block = positions_per_task(seq, b * nkv, groups * total, rayon::current_num_threads());
    let tasks: Vec<(usize, usize, usize)> = (0..b)
        .flat_map(|batch| (0..nkv).map(move |kv| (batch, kv)))
        .flat_map(|(batch, kv)| (0..seq).step_by(block).map(move |p0| (batch, kv, p0)))
        .collect();
    // Each task's rows are (position, query head of the group), in that order.
    let ys: Vec<Vec<f32>> = with_cache_rows::<E, _>(k, v, |keys, values| {
        Ok(pool::map_tasks(tasks.len(), |task| {
            let (batch, kv, p0) = tasks[task];
            let positions = p0..(p0 + block).min(seq);
            let rows = positions.len() * groups;
            let (mut qs, mut lens) = (Vec::with_capacity(rows * hd), Vec::with_capacity(rows));
            for p in positions {
                for h in kv * groups..(kv + 1) * groups {
                    qs.extend_from_slice(&q[((batch * nh + h) * seq + p) * hd..][..hd]);
                    lens.push(past + p + 1);
                }
            }
            let mut ys = vec![0f32; rows * hd];
            let seen = lens.iter().copied().max().unwrap_or(0) * hd;
            let (keys, values) = (
                &keys.head(batch, kv)[..seen],
                &values.head(batch, kv)[..seen],
            );
            if rows >= WIDEN_ROWS {
                let (keys, values) = (E::widen(keys), E::widen(values));
                attend_rows::<f32>(&qs, &lens, (&keys, &values), &mut ys);
            } else {
                attend_rows::<E>(&qs, &lens, (keys, values), &mut ys);
            }
            ys
        }))
    })?;
    let mut out = vec![0f32; b * seq * nh * hd];
    for (&(batch, kv, p0), ys) in tasks.iter().zip(&ys) {
        for (r, y) in ys.chunks_exact(hd).enumerate() {
            let (p, h) = (p0 + r / groups, kv * groups + r % groups);
            out[((batch * seq + p) * nh + h) * hd..][..hd].copy_from_slice(y);
        }
    }
    Ok(Tensor::from_vec(
        out,
        (b, seq, nh * hd),
        &candle_core::Device::Cpu,
    )?)
}

/// Query rows from which a task of [`attend_causal`] widens an f16 cache to f32 once, instead of
/// converting each cached row as it reads it (once per pair of query rows). A prompt's tasks
/// read each cached row for a hundred rows and more, and widening pays (2-3% of a 512-token
/// prefill); a speculative verification's tasks have a few positions of a few heads, and the
/// copy costs more than it saves (SmolLM2-135M after 250 tokens, 36 rows per task: 32 tokens
/// take 41.5–43.2 ms read in place, 43.1–45.1 ms widened; 144 rows per task: 128 tokens take
/// 139–140 ms widened, 142–150 ms in place; AVX-512 VNNI host, 2 threads).
const WIDEN_ROWS: usize = 64;

/// Positions per task of [`attend_causal`]: few enough that there are 4 tasks per thread (the
/// later positions' rows are longer, so tasks differ in cost), and that a task's scores
/// (`row_len` floats for each of its positions) stay within 1 MB, in L2.
fn positions_per_task(seq: usize, heads: usize, row_len: usize, threads: usize) -> usize {
    let for_balance = (seq * heads).div_ceil(4 * threads);
    let for_cache = (1 << 18) / row_len.max(1);
    for_balance.min(for_cache).clamp(1, seq)
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
        // Head sizes of the SIMD paths (64, 256: AVX-512 where the host has it, else AVX2) and
        // of the plain one (20); contexts with and without a partial block of 8 positions; GQA
        // groups of 1, 3 and 8; caches in f32 and in f16 (whose rounding is then part of the
        // input the f64 attention gets).
        for dtype in [DType::F32, DType::F16] {
            for (hd, total, nh, nkv) in [
                (64, 37, 32, 4),
                (256, 16, 8, 8),
                (20, 5, 9, 3),
                (64, 1, 9, 3),
            ] {
                let dev = candle_core::Device::Cpu;
                let mut cached = |n: usize| -> (Vec<f32>, Tensor) {
                    let t = Tensor::from_vec((0..n).map(|_| rand()).collect(), n, &dev).unwrap();
                    let t = t.to_dtype(dtype).unwrap();
                    let exact = t.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
                    (exact, t.reshape((1, nkv, total, hd)).unwrap())
                };
                let (k, kt) = cached(nkv * total * hd);
                let (v, vt) = cached(nkv * total * hd);
                let q: Vec<f32> = (0..nh * hd).map(|_| rand()).collect();
                let qt = Tensor::from_slice(&q, (1, nh, 1, hd), &dev).unwrap();
                let y = attend_one(&qt, &kt, &vt, nh / nkv);
                let y: Vec<f32> = y.unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for h in 0..nh {
                    let kv = h / (nh / nkv);
                    let rows = kv * total * hd..(kv + 1) * total * hd;
                    let want = naive(&q[h * hd..][..hd], &k[rows.clone()], &v[rows]);
                    for (a, b) in y[h * hd..][..hd].iter().zip(&want) {
                        assert!(
                            (*a as f64 - b).abs() < 1e-5,
                            "{dtype:?} hd {hd} head {h}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// Both instruction sets' kernels on the same rows, whichever the host would choose: rows of
    /// different lengths (pairs, a 4-row value pass and single rows, partial blocks of 8 keys),
    /// head sizes of one and of several 64-value passes, caches in f32 and f16.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_avx512_kernels_match_softmax_attention() {
        let mut seed = 11u32;
        let mut rand = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
        };
        let lens = [259, 260, 261, 262, 263, 264, 265, 3, 250];
        let total = 265;
        for hd in [64, 80, 256] {
            let qs: Vec<f32> = (0..lens.len() * hd).map(|_| rand()).collect();
            let keys: Vec<f32> = (0..total * hd).map(|_| rand()).collect();
            let values: Vec<f32> = (0..total * hd).map(|_| rand()).collect();
            let halves = |x: &[f32]| x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
            let (keys16, values16) = (halves(&keys), halves(&values));
            let widened = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
            let (keys_w, values_w) = (widened(&keys16), widened(&values16));
            let want = |k: &[f32], v: &[f32]| -> Vec<f64> {
                (0..lens.len())
                    .flat_map(|r| {
                        let n = lens[r] * hd;
                        naive(&qs[r * hd..][..hd], &k[..n], &v[..n])
                    })
                    .collect()
            };
            let (want32, want16) = (want(&keys, &values), want(&keys_w, &values_w));
            let mut runs: Vec<(&str, Vec<f32>, Vec<f32>)> = Vec::new();
            let mut run = |name, f: &dyn Fn(&mut [f32], &mut [f32])| {
                let (mut y32, mut y16) = (vec![0f32; qs.len()], vec![0f32; qs.len()]);
                f(&mut y32, &mut y16);
                runs.push((name, y32, y16));
            };
            if isa::Isa::Avx2.available() {
                // SAFETY: the CPU has AVX2, FMA and F16C; the cache holds the longest row's
                // keys and values, and `qs`, `y32`, `y16` one row of `hd` per length.
                run("AVX2", &|y32, y16| unsafe {
                    attend_rows_avx2::<f32>(&qs, &lens, (&keys, &values), hd, y32);
                    attend_rows_avx2::<f16>(&qs, &lens, (&keys16, &values16), hd, y16);
                });
            }
            if isa::Isa::Avx512Vnni.available() && hd % 16 == 0 {
                // SAFETY: as above, with AVX-512F and `hd` a multiple of 16.
                run("AVX-512", &|y32, y16| unsafe {
                    attend_rows_avx512::<f32>(&qs, &lens, (&keys, &values), hd, y32);
                    attend_rows_avx512::<f16>(&qs, &lens, (&keys16, &values16), hd, y16);
                });
            }
            for (name, y32, y16) in &runs {
                for (got, want) in [(y32, &want32), (y16, &want16)] {
                    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (*a as f64 - b).abs() < 1e-5,
                            "{name} hd {hd} row {} value {}: {a} vs {b}",
                            i / hd,
                            i % hd
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn task_blocks_balance_the_threads_and_fit_in_l2() {
        // An MMLU question on SmolLM2 (3 key/value heads of 3 queries, 150 new positions after
        // 1,350): 57 positions a task, 9 tasks.
        assert_eq!(positions_per_task(150, 3, 3 * 1500, 2), 57);
        // A 512-token TinyLlama prompt: the scores of 8 heads over 512 positions cap it at 64.
        assert_eq!(positions_per_task(512, 4, 8 * 512, 2), 64);
        // A 5-token speculative verification: one position a task.
        assert_eq!(positions_per_task(5, 1, 5, 2), 1);
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
