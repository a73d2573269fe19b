//! A CPU matmul for GGML-quantized weights (`q4_0`, `q4_1`, `q8_0`): int8 activations times
//! 4- or 8-bit weights with the widest integer dot product the CPU has.
//!
//! Why our own: candle 0.11 multiplies these formats one block at a time, has no SIMD kernel
//! for `q4_1`, and treats a prefill like many separate vector products. Here:
//! - the weights are split at load time into plain arrays (scales, offsets, unsigned nibbles or
//!   bytes) in the order the kernel reads them: two 32-value blocks at a time;
//! - the activations are quantized to int8 blocks once per matmul (GGML's q8_0 / q8_1);
//! - a micro-kernel multiplies a tile of 4 weight rows by a tile of tokens, so each unpacked
//!   weight block serves several tokens and each activation block several rows;
//! - the instruction set is chosen at run time ([`Isa`]): AVX-512 VNNI's `vpdpbusd` (64 byte
//!   products summed into 16 lanes in one instruction) where the CPU has it, AVX2's
//!   `vpmaddubsw` + `vpmaddwd` otherwise, so one binary is right and fast on both kinds of host.
//!
//! The arithmetic: a weight block of 32 values is `d·(q - 8)` (`q4_0`), `d·q + m` (`q4_1`) or
//! `d·q` (`q8_0`); an activation block is `dx·qx`. The byte products take an unsigned and a
//! signed operand, so the weights are kept unsigned (the nibble `q`; for `q8_0` on VNNI,
//! `q + 128`) and the shift comes back out in the integer sum: it starts from `-8·Σqx` (or
//! `-128·Σqx`), computed once per activation block, so a block still costs one `vpdpbusd`.
//! `q4_1`'s float offset adds `m·dx·Σqx` per block after the loop. The integer sums are exact,
//! so results differ from GGML's only in the order of float additions.

use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;
use std::sync::OnceLock;

const BLOCK: usize = 32;
/// Weight rows per micro-kernel tile; matrices are padded to a multiple of it.
const ROWS: usize = 4;
/// Tokens of a prefill that share the L2 cache while a strip of weight rows passes over them.
const TOKEN_CHUNK: usize = 64;

/// The integer dot product the kernel is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW) with VNNI: `vpdpbusd` on 512-bit registers, two blocks per instruction.
    Avx512Vnni,
    /// AVX2 with FMA: `vpmaddubsw` + `vpmaddwd` on 256-bit registers, one block at a time.
    Avx2,
}

impl Isa {
    /// Tokens per micro-kernel tile: as many accumulators as the registers hold (32 zmm, 16 ymm).
    fn tokens_per_tile(self) -> usize {
        match self {
            Isa::Avx512Vnni => 4,
            Isa::Avx2 => 2,
        }
    }

    /// Whether this CPU runs `self`.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Isa::Avx2 => avx2,
                Isa::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The best this CPU has, or `None` without AVX2. `BILLION_LLM_ISA=avx2` asks for the AVX2
    /// kernel on a VNNI host (to compare the two, or to test the AVX2 path there).
    pub fn detect() -> Option<Isa> {
        static ISA: OnceLock<Option<Isa>> = OnceLock::new();
        *ISA.get_or_init(|| {
            let forced_avx2 = std::env::var("BILLION_LLM_ISA").is_ok_and(|v| v == "avx2");
            [Isa::Avx512Vnni, Isa::Avx2]
                .into_iter()
                .filter(|&isa| !(forced_avx2 && isa == Isa::Avx512Vnni))
                .find(|isa| isa.available())
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "AVX-512 VNNI",
            Isa::Avx2 => "AVX2",
        }
    }
}

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    Isa::detect().is_some()
}

/// A `(rows, cols)` quantized matrix in the layout the kernel reads.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
    isa: Isa,
    /// Blocks per row, rounded up to an even number (a padding block has scale 0).
    blocks: usize,
    /// Per block, in [`QuantMatrix::slot`] order: the scale `d` (in f16, as the file has it) ...
    scales: Vec<f16>,
    /// ... and for `q4_1` the offset `m`, row by row.
    mins: Vec<f32>,
    /// What the unsigned weights were shifted by (8 for q4_0, 128 for q8_0 on VNNI), taken back
    /// out of every integer dot product; 0 when the bytes are the weights themselves.
    shift: i32,
    /// Per pair of blocks, in [`QuantMatrix::slot`] order: q4, 32 bytes, byte `j` holding
    /// value `j` of the first block in its low nibble and value `j` of the second in its high
    /// one; q8, the two blocks' 64 bytes.
    qs: Vec<u8>,
}

/// Activations quantized to int8 blocks, one row per token (padded like the weights' rows).
struct Q8Rows {
    qs: Vec<i8>,
    scales: Vec<f32>,
    /// For q4_1: `dx · Σ qx` per block, what the offsets `m` multiply.
    sums: Vec<f32>,
    /// For shifted weights: `-shift · (qx[4j] + … + qx[4j + 3])` per group of four bytes, the
    /// integer dot product's starting value.
    start: Vec<i32>,
}

/// `rows` rows of `cols` values → int8 blocks, `blocks` per row (zero-padded), and `padded_rows`
/// rows in all (zero-padded). With `q8_1` the sums are rounded to f16 as GGML's q8_1 blocks
/// (the partner of q4_1) store them, so q4_1 results stay within float rounding of GGML's.
fn quantize_rows(
    x: &[f32],
    (rows, cols): (usize, usize),
    (padded_rows, blocks): (usize, usize),
    q8_1: bool,
    shift: i32,
) -> Q8Rows {
    let mut qs = vec![0i8; padded_rows * blocks * BLOCK];
    let mut scales = vec![0f32; padded_rows * blocks];
    let mut sums = vec![0f32; if q8_1 { padded_rows * blocks } else { 0 }];
    let groups = if shift != 0 {
        padded_rows * blocks * BLOCK / 4
    } else {
        0
    };
    let mut start = vec![0i32; groups];
    for r in 0..rows {
        for b in 0..cols / BLOCK {
            let src = &x[r * cols + b * BLOCK..r * cols + (b + 1) * BLOCK];
            let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let i = r * blocks + b;
            let mut s = 0i32;
            for (j, (q, v)) in qs[i * BLOCK..(i + 1) * BLOCK]
                .iter_mut()
                .zip(src)
                .enumerate()
            {
                let v = (v * inv).round() as i32;
                *q = v as i8;
                s += v;
                if shift != 0 {
                    start[i * BLOCK / 4 + j / 4] -= shift * v;
                }
            }
            // The scale is kept in f16, as GGML's q8 blocks store it.
            let d16 = f16::from_f32(d);
            scales[i] = d16.to_f32();
            if q8_1 {
                sums[i] = (f16::from_f32(s as f32) * d16).to_f32();
            }
        }
    }
    Q8Rows {
        qs,
        scales,
        sums,
        start,
    }
}

impl QuantMatrix {
    /// Whether the kernel handles this format.
    pub fn handles(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0)
    }

    /// Splits a `q4_0`, `q4_1` or `q8_0` tensor into the layout of this CPU's kernel.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let Some(isa) = Isa::detect() else {
            bail!("the quantized CPU kernel needs AVX2 and FMA");
        };
        Self::with_isa(q, isa)
    }

    /// Splits a tensor into the layout of `isa`'s kernel.
    pub fn with_isa(q: &QTensor, isa: Isa) -> Result<Self> {
        let (rows, cols) = q.shape().dims2()?;
        let mut m = Self::empty(q.dtype(), (rows, cols), isa)?;
        m.fill_rows(0, &q.data()?)?;
        Ok(m)
    }

    /// Quantizes a float matrix to `dtype` a slice of rows at a time: `next(n)` hands over the
    /// next `n` rows. The float matrix never needs to exist whole, so a random or streamed
    /// weight costs its quantized size plus one slice (what keeps a 1B model's peak memory
    /// near its weights' size; an f32 embedding of Llama 3.2 alone is 1 GB).
    pub fn quantize(
        dtype: GgmlDType,
        (rows, cols): (usize, usize),
        mut next: impl FnMut(usize) -> Result<Tensor>,
    ) -> Result<Self> {
        let Some(isa) = Isa::detect() else {
            bail!("the quantized CPU kernel needs AVX2 and FMA");
        };
        let mut m = Self::empty(dtype, (rows, cols), isa)?;
        const SLICE: usize = 256;
        for r0 in (0..rows).step_by(SLICE) {
            let n = SLICE.min(rows - r0);
            let mut t = next(n)?;
            if t.dims() != [n, cols] {
                bail!(
                    "quantize: expected a ({n}, {cols}) slice, got {:?}",
                    t.dims()
                );
            }
            // candle 0.11's QTensor::quantize reads a tensor's storage from its start,
            // whatever view of it the tensor is: a slice of a larger tensor gets its own
            // storage first.
            if t.layout().start_offset() != 0 || !t.is_contiguous() {
                let values = t
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                t = Tensor::from_vec(values, (n, cols), &Device::Cpu)?;
            }
            m.fill_rows(r0, &QTensor::quantize(&t, dtype)?.data()?)?;
        }
        Ok(m)
    }

    /// An all-zero matrix in `isa`'s layout, for [`QuantMatrix::fill_rows`].
    fn empty(dtype: GgmlDType, (rows, cols): (usize, usize), isa: Isa) -> Result<Self> {
        if !isa.available() {
            bail!("this CPU lacks {}", isa.name());
        }
        if !Self::handles(dtype) {
            bail!("QuantMatrix holds q4_0, q4_1 or q8_0, not {dtype:?}");
        }
        if !cols.is_multiple_of(BLOCK) {
            bail!("a quantized matrix needs rows of a multiple of {BLOCK} values, got {cols}");
        }
        let blocks = (cols / BLOCK).next_multiple_of(2);
        let n = rows.next_multiple_of(ROWS) * blocks;
        // AVX2's vpsignb takes signed q8_0 bytes as they are; VNNI wants them unsigned.
        let shift = match dtype {
            GgmlDType::Q4_0 => 8,
            GgmlDType::Q8_0 if isa == Isa::Avx512Vnni => 128,
            _ => 0,
        };
        Ok(Self {
            rows,
            cols,
            dtype,
            isa,
            blocks,
            scales: vec![f16::ZERO; n],
            mins: vec![0f32; if dtype == GgmlDType::Q4_1 { n } else { 0 }],
            shift,
            qs: vec![0u8; n * if dtype == GgmlDType::Q8_0 { 32 } else { 16 }],
        })
    }

    /// Copies whole rows of GGML blocks (`data`), starting at row `r0`, into the layout.
    fn fill_rows(&mut self, r0: usize, data: &[u8]) -> Result<()> {
        let block_bytes = match self.dtype {
            GgmlDType::Q4_0 => 18,
            GgmlDType::Q4_1 => 20,
            _ => 34,
        };
        let file_blocks = self.cols / BLOCK;
        let row_bytes = file_blocks * block_bytes;
        if !data.len().is_multiple_of(row_bytes) || r0 + data.len() / row_bytes > self.rows {
            bail!("unexpected size of a {:?} tensor", self.dtype);
        }
        let (blocks, shift) = (self.blocks, self.shift);
        for (dr, row) in data.chunks_exact(row_bytes).enumerate() {
            let r = r0 + dr;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let slot = Self::slot(blocks, r, b);
                self.scales[2 * slot + b % 2] = f16::from_le_bytes([block[0], block[1]]);
                if self.dtype == GgmlDType::Q8_0 {
                    let dst = &mut self.qs[slot * 64 + (b % 2) * 32..][..32];
                    for (u, &v) in dst.iter_mut().zip(&block[2..]) {
                        // q + 128 is q's byte with the sign bit flipped.
                        *u = if shift == 128 { v ^ 0x80 } else { v };
                    }
                    continue;
                }
                let packed = if self.dtype == GgmlDType::Q4_1 {
                    self.mins[r * blocks + b] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                    &block[4..]
                } else {
                    &block[2..]
                };
                // GGML packs value j in the low nibble of byte j and value j + 16 in its high
                // nibble; byte j of a pair holds value j of the pair's first block in its low
                // nibble and value j of its second block in its high nibble.
                let nibble = 4 * (b % 2);
                let dst = &mut self.qs[slot * 32..][..32];
                for j in 0..16 {
                    dst[j] = (dst[j] & !(0x0F << nibble)) | ((packed[j] & 0x0F) << nibble);
                    dst[j + 16] = (dst[j + 16] & !(0x0F << nibble)) | ((packed[j] >> 4) << nibble);
                }
            }
        }
        Ok(())
    }

    /// Row `r` as floats: an embedding lookup reads its rows from the quantized matrix, which a
    /// tied output projection shares, instead of keeping a float copy of the whole table.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let q8 = self.dtype == GgmlDType::Q8_0;
        for b in 0..self.cols / BLOCK {
            let slot = Self::slot(self.blocks, r, b);
            let d = self.scales[2 * slot + b % 2].to_f32();
            let m = self.mins.get(r * self.blocks + b).copied().unwrap_or(0.0);
            for (j, y) in out[b * BLOCK..(b + 1) * BLOCK].iter_mut().enumerate() {
                let q = if q8 {
                    let u = self.qs[slot * 64 + (b % 2) * 32 + j];
                    if self.shift == 0 {
                        u as i8 as i32
                    } else {
                        u as i32 - self.shift
                    }
                } else {
                    let byte = self.qs[slot * 32 + j];
                    ((byte >> (4 * (b % 2))) & 0x0F) as i32 - self.shift
                };
                // GGML's order of operations, so the values equal its dequantization's.
                *y = if self.mins.is_empty() {
                    q as f32 * d
                } else {
                    q as f32 * d + m
                };
            }
        }
    }

    /// Where the pair of blocks holding block `b` of row `r` is stored: the pairs of a tile of
    /// [`ROWS`] rows are interleaved (row 0's pair 0, row 1's pair 0, …, row 0's pair 1, …),
    /// so a tile reads its weights as one sequential stream, the pattern prefetchers serve
    /// best. (Row after row, the four streams of a tile decoded at 20 tokens/s instead of 31 on
    /// TinyLlama's shape.)
    fn slot(blocks: usize, r: usize, b: usize) -> usize {
        ((r / ROWS) * (blocks / 2) + b / 2) * ROWS + r % ROWS
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn size_in_bytes(&self) -> usize {
        self.qs.len() + 2 * self.scales.len() + 4 * self.mins.len()
    }

    /// `x`: `(.., cols)` f32 on the CPU → `(.., rows)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let cols = *dims.last().unwrap_or(&0);
        if cols != self.cols {
            bail!(
                "QuantMatrix: input has {cols} columns, the matrix {}",
                self.cols
            );
        }
        let m = x.elem_count() / cols;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let out = self.matmul(&xs, m);
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.rows;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }

    /// `m` rows of activations (row-major, `cols` each) → `m` rows of `rows` outputs.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut outs = matmul_group(&[self], x, m).expect("one matrix always forms a group");
        outs.pop().unwrap_or_default()
    }

    /// Whether `self` and `other` can share one quantization of their input.
    fn same_kind(&self, other: &QuantMatrix) -> bool {
        (self.cols, self.dtype, self.isa) == (other.cols, other.dtype, other.isa)
    }

    /// Rows `r..r + ROWS` times tokens `i..i + tile` into `acc[token][row]`.
    fn tile(&self, r: usize, q8: &Q8Rows, i: usize, tile: usize, acc: &mut [[f32; ROWS]; 4]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `with_isa` checked that the CPU has `self.isa`; rows and tokens are padded so
        // the tile's blocks exist.
        unsafe {
            let shifted = self.shift != 0;
            match (self.isa, shifted, self.dtype == GgmlDType::Q8_0, tile) {
                (Isa::Avx512Vnni, false, _, 1) => tile_vnni::<false, 1>(self, r, q8, i, acc),
                (Isa::Avx512Vnni, false, _, _) => tile_vnni::<false, 4>(self, r, q8, i, acc),
                (Isa::Avx512Vnni, true, _, 1) => tile_vnni::<true, 1>(self, r, q8, i, acc),
                (Isa::Avx512Vnni, true, _, _) => tile_vnni::<true, 4>(self, r, q8, i, acc),
                (Isa::Avx2, _, false, 1) => tile_avx2::<false, 1>(self, r, q8, i, acc),
                (Isa::Avx2, _, false, _) => tile_avx2::<false, 2>(self, r, q8, i, acc),
                (Isa::Avx2, _, true, 1) => tile_avx2::<true, 1>(self, r, q8, i, acc),
                (Isa::Avx2, _, true, _) => tile_avx2::<true, 2>(self, r, q8, i, acc),
            }
        }
        if !self.mins.is_empty() {
            let n = self.blocks;
            for (t, acc) in acc.iter_mut().enumerate().take(tile) {
                let sums = &q8.sums[(i + t) * n..][..n];
                for (dr, a) in acc.iter_mut().enumerate() {
                    let mins = &self.mins[(r + dr) * n..][..n];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has AVX2 (checked in `with_isa`); both slices hold n values.
                    {
                        *a += unsafe { super::gemv::dot_avx2(mins, sums) };
                    }
                }
            }
        }
    }
}

/// Several matrices times the same activations in one parallel region: q, k and v of an
/// attention layer, or gate and up of an MLP. The activations are quantized once, and the
/// threads meet once instead of once per matrix (a decode step of a 22-layer model has about
/// 150 matmuls, and each meeting costs microseconds). `None` when the matrices differ in
/// width, format or kernel (or `x` does not hold `m` rows of their width).
pub fn matmul_group(mats: &[&QuantMatrix], x: &[f32], m: usize) -> Option<Vec<Vec<f32>>> {
    let first = mats.first()?;
    if mats.iter().any(|w| !w.same_kind(first)) || x.len() != m * first.cols {
        return None;
    }
    let tile = if m == 1 {
        1
    } else {
        first.isa.tokens_per_tile()
    };
    let q8 = quantize_rows(
        x,
        (m, first.cols),
        (m.next_multiple_of(tile), first.blocks),
        first.dtype == GgmlDType::Q4_1,
        first.shift,
    );
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows]).collect();
    // Work split over strips of row tiles, a few per thread to balance the load without paying
    // for many hand-offs. Each strip writes its own columns of its matrix's output.
    let total: usize = mats.iter().map(|w| w.rows.div_ceil(ROWS)).sum();
    let per_strip = total.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut strips = Vec::new();
    for (j, (w, out)) in mats.iter().zip(&mut outs).enumerate() {
        let tiles = w.rows.div_ceil(ROWS);
        for t0 in (0..tiles).step_by(per_strip) {
            strips.push((
                j,
                t0,
                (t0 + per_strip).min(tiles),
                SharedOut(out.as_mut_ptr()),
            ));
        }
    }
    strips.par_iter().for_each(|(j, t0, t1, out)| {
        let w = mats[*j];
        for c0 in (0..m).step_by(TOKEN_CHUNK) {
            let c1 = (c0 + TOKEN_CHUNK).min(m);
            for t in *t0..*t1 {
                for i in (c0..c1).step_by(tile) {
                    let mut acc = [[0f32; ROWS]; 4];
                    w.tile(t * ROWS, &q8, i, tile, &mut acc);
                    for (dt, row) in acc.iter().enumerate().take(tile.min(m - i)) {
                        for (dr, &v) in row.iter().enumerate() {
                            let r = t * ROWS + dr;
                            if r < w.rows {
                                // SAFETY: strips own disjoint sets of rows `r` of their
                                // matrix, so no two tasks write the same element, and
                                // `(i + dt, r)` is in bounds (`i + dt < m`, `r < rows`).
                                unsafe { *out.0.add((i + dt) * w.rows + r) = v };
                            }
                        }
                    }
                }
            }
        }
    });
    Some(outs)
}

/// The output buffer, written by several tasks at disjoint places.
struct SharedOut(*mut f32);
// SAFETY: see the one write through it in `matmul_group`.
unsafe impl Sync for SharedOut {}
// SAFETY: as above; the pointer is only written through while `matmul_group` owns the buffer.
unsafe impl Send for SharedOut {}

/// Asks for the weights 16 pairs of the tile ahead. Decode streams every weight once, so it is
/// bound by memory bandwidth; without the hint a 5632 × 2048 q4_0 matrix streamed at 19 GB/s
/// on 2 threads, with it at 26–28 GB/s (AVX-512 VNNI host).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(w: &QuantMatrix, slot: usize) {
    use std::arch::x86_64::*;
    let bytes = if w.dtype == GgmlDType::Q8_0 { 64 } else { 32 };
    // A prefetch never faults, so running past the end of the matrix is harmless.
    let ahead = w.qs.as_ptr().wrapping_add((slot + 16 * ROWS) * bytes) as *const i8;
    // SAFETY: prefetching has no effect on memory or program state.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(ahead);
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
    }
}

/// `ROWS` weight rows × `T` tokens with AVX-512 VNNI, two blocks (64 bytes) per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const SHIFTED: bool, const T: usize>(
    w: &QuantMatrix,
    r: usize,
    q8: &Q8Rows,
    i: usize,
    out: &mut [[f32; ROWS]; 4],
) {
    use std::arch::x86_64::*;
    let n = w.blocks;
    let low = _mm256_set1_epi8(0x0F);
    // Lanes 0-7 take a pair's first scale, lanes 8-15 its second.
    let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); ROWS]; T];
    for p in 0..n / 2 {
        let slot = QuantMatrix::slot(n, r, 2 * p);
        // The tile's 8 scales (4 rows × 2 blocks), f16 → f32.
        let d = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(
            w.scales.as_ptr().add(2 * slot) as *const __m128i,
        )));
        let mut wq = [_mm512_setzero_si512(); ROWS];
        let mut wd = [_mm512_setzero_ps(); ROWS];
        prefetch(w, slot);
        for k in 0..ROWS {
            wq[k] = if w.dtype == GgmlDType::Q8_0 {
                _mm512_loadu_si512(w.qs.as_ptr().add((slot + k) * 64) as *const __m512i)
            } else {
                let packed =
                    _mm256_loadu_si256(w.qs.as_ptr().add((slot + k) * 32) as *const __m256i);
                let lo = _mm256_and_si256(packed, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
            };
            wd[k] =
                _mm512_permutexvar_ps(_mm512_add_epi32(spread, _mm512_set1_epi32(2 * k as i32)), d);
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let xb = (i + t) * n + 2 * p;
            let x = _mm512_loadu_si512(q8.qs.as_ptr().add(xb * BLOCK) as *const __m512i);
            let xd = _mm512_permutexvar_ps(
                spread,
                _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                    q8.scales.as_ptr().add(xb) as *const __m128i,
                ))),
            );
            let start = if SHIFTED {
                _mm512_loadu_si512(q8.start.as_ptr().add(xb * BLOCK / 4) as *const __m512i)
            } else {
                _mm512_setzero_si512()
            };
            for k in 0..ROWS {
                let dot = _mm512_dpbusd_epi32(start, wq[k], x);
                let scale = _mm512_mul_ps(wd[k], xd);
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[k]);
            }
        }
    }
    for t in 0..T {
        for k in 0..ROWS {
            out[t][k] = _mm512_reduce_add_ps(acc[t][k]);
        }
    }
}

/// `ROWS` weight rows × `T` tokens with AVX2, one block (32 bytes) per product.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const Q8: bool, const T: usize>(
    w: &QuantMatrix,
    r: usize,
    q8: &Q8Rows,
    i: usize,
    out: &mut [[f32; ROWS]; 4],
) {
    use std::arch::x86_64::*;
    let n = w.blocks;
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); ROWS]; T];
    for p in 0..n / 2 {
        let slot = QuantMatrix::slot(n, r, 2 * p);
        prefetch(w, slot);
        let mut d = [0f32; 8];
        _mm256_storeu_ps(
            d.as_mut_ptr(),
            _mm256_cvtph_ps(_mm_loadu_si128(
                w.scales.as_ptr().add(2 * slot) as *const __m128i
            )),
        );
        for h in 0..2 {
            let b = 2 * p + h;
            let mut wq = [_mm256_setzero_si256(); ROWS];
            for (k, wq) in wq.iter_mut().enumerate() {
                *wq = if Q8 {
                    _mm256_loadu_si256(w.qs.as_ptr().add((slot + k) * 64 + h * 32) as *const __m256i)
                } else {
                    let packed =
                        _mm256_loadu_si256(w.qs.as_ptr().add((slot + k) * 32) as *const __m256i);
                    let nibbles = if h == 0 {
                        packed
                    } else {
                        _mm256_srli_epi16(packed, 4)
                    };
                    _mm256_and_si256(nibbles, low)
                };
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let xb = (i + t) * n + b;
                let x = _mm256_loadu_si256(q8.qs.as_ptr().add(xb * BLOCK) as *const __m256i);
                let xd = q8.scales[xb];
                let start = if Q8 || w.shift == 0 {
                    _mm256_setzero_si256()
                } else {
                    _mm256_loadu_si256(q8.start.as_ptr().add(xb * BLOCK / 4) as *const __m256i)
                };
                for k in 0..ROWS {
                    // q4: nibbles 0..15 times int8 never saturate vpmaddubsw's int16 pairs;
                    // q8_0: |q| times sign-adjusted x, as GGML does.
                    let products = if Q8 {
                        _mm256_maddubs_epi16(
                            _mm256_sign_epi8(wq[k], wq[k]),
                            _mm256_sign_epi8(x, wq[k]),
                        )
                    } else {
                        _mm256_maddubs_epi16(wq[k], x)
                    };
                    let dot = _mm256_add_epi32(_mm256_madd_epi16(products, ones), start);
                    let scale = _mm256_set1_ps(d[2 * k + h] * xd);
                    acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[k]);
                }
            }
        }
    }
    for t in 0..T {
        for k in 0..ROWS {
            let v = acc[t][k];
            let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            out[t][k] = _mm_cvtss_f32(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    /// Every kernel this CPU runs, on every format, against the exact product of the
    /// dequantized weights and against candle's quantized matmul.
    fn check(dtype: GgmlDType, n: usize, k: usize, m: usize) {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let exact = x
            .matmul(
                &q.dequantize(&Device::Cpu)
                    .unwrap()
                    .t()
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap();
        let scale: f32 = exact.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap())
            .unwrap()
            .forward(&x)
            .unwrap();
        for isa in [Isa::Avx512Vnni, Isa::Avx2] {
            if !isa.available() {
                continue;
            }
            let ours = QuantMatrix::with_isa(&q, isa).unwrap().forward(&x).unwrap();
            assert_eq!(ours.dims(), exact.dims());
            // Only the int8 rounding of the activations separates us from the exact product ...
            let diff: f32 = max_abs_diff(&ours, &exact).unwrap();
            assert!(
                diff / scale < 2e-2,
                "{isa:?} {dtype:?} m={m}: {diff} vs {scale}"
            );
            // ... and from candle, which rounds them the same way, only the order of float
            // additions (and, for q8_0 where candle repacks, its 256-value activation blocks).
            let diff: f32 = max_abs_diff(&ours, &theirs).unwrap();
            let tolerance = if dtype == GgmlDType::Q8_0 { 2e-2 } else { 1e-5 };
            assert!(
                diff / scale < tolerance,
                "{isa:?} {dtype:?} m={m}: candle differs by {diff} (scale {scale})"
            );
        }
    }

    #[test]
    fn rows_dequantize_as_ggml_does() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let w = Tensor::randn(0f32, 1.0, (7, 96), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let expected: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
            for isa in [Isa::Avx512Vnni, Isa::Avx2] {
                if !isa.available() {
                    continue;
                }
                let m = QuantMatrix::with_isa(&q, isa).unwrap();
                for (r, row) in expected.iter().enumerate() {
                    let mut got = vec![0f32; 96];
                    m.dequantize_row(r, &mut got);
                    assert_eq!(&got, row, "{isa:?} {dtype:?} row {r}");
                }
            }
        }
    }

    #[test]
    fn quantizing_slice_by_slice_equals_quantizing_whole() {
        if !supported() {
            return;
        }
        // 600 rows: two full 256-row slices and a short one.
        let w = Tensor::randn(0f32, 1.0, (600, 64), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, 64), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let whole = QuantMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap()).unwrap();
            let mut next = 0;
            let sliced = QuantMatrix::quantize(dtype, (600, 64), |n| {
                next += n;
                Ok(w.narrow(0, next - n, n)?)
            })
            .unwrap();
            assert_eq!(next, 600);
            let diff = max_abs_diff(&whole.forward(&x).unwrap(), &sliced.forward(&x).unwrap());
            assert_eq!(diff.unwrap(), 0.0, "{dtype:?}");
        }
    }

    #[test]
    fn a_group_equals_its_matrices_one_by_one() {
        if !supported() {
            return;
        }
        let x: Vec<f32> = (0..5 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mats: Vec<QuantMatrix> = [40, 8, 8]
            .iter()
            .map(|&n| {
                let w = Tensor::randn(0f32, 1.0, (n, 64), &Device::Cpu).unwrap();
                QuantMatrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()).unwrap()
            })
            .collect();
        let refs: Vec<&QuantMatrix> = mats.iter().collect();
        let grouped = matmul_group(&refs, &x, 5).unwrap();
        for (m, g) in mats.iter().zip(&grouped) {
            assert_eq!(&m.matmul(&x, 5), g);
        }
    }

    #[test]
    fn q4_0_matches_dequantized_and_candle() {
        // Row counts off the 4-row tile, odd block counts, token counts off every tile.
        for (n, k, m) in [
            (96, 256, 1),
            (97, 256, 3),
            (64, 160, 4),
            (30, 64, 9),
            (50, 288, 70),
        ] {
            check(GgmlDType::Q4_0, n, k, m);
        }
    }

    #[test]
    fn q8_0_matches_dequantized_and_candle() {
        for (n, k, m) in [(96, 256, 1), (33, 96, 6)] {
            check(GgmlDType::Q8_0, n, k, m);
        }
    }

    #[test]
    fn q4_1_matches_dequantized_and_candle() {
        for (n, k, m) in [(96, 256, 1), (101, 32, 5)] {
            check(GgmlDType::Q4_1, n, k, m);
        }
    }
}
