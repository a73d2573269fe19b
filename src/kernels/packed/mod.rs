//! A CPU matmul for GGML-quantized weights (`q4_0`, `q4_1`, `q5_0`, `q5_1`, `q8_0`, and the K
//! formats `q2_K` to `q6_K` of [`k_quants`]): int8 activations times 2- to 8-bit weights with
//! the widest integer dot product the CPU has.
//!
//! Why our own: candle 0.11 multiplies these formats one block at a time, has no SIMD kernel
//! for `q4_1`, and treats a prefill like many separate vector products. Here:
//! - the weights are repacked at load time into plain arrays (scales, offsets, unsigned nibbles
//!   or bytes) with the rows of a tile interleaved, so one 64-byte register holds a few values
//!   of every row of the tile: for AVX-512 VNNI, [`WIDE_ROWS`] = 16 rows four values at a time;
//!   for AVX2 (and the K formats), [`ROWS`] = 8 rows eight values at a time (see
//!   [`PackedMatrix`]);
//! - the activations are quantized to int8 blocks once per matmul (GGML's q8_0 / q8_1), stored
//!   block by block with the tokens side by side, so a tile reads its tokens from one pointer;
//! - a micro-kernel multiplies a tile of weight rows by a tile of tokens: on VNNI one block of
//!   16 rows is eight `vpdpbusd` per token, each against four activation bytes broadcast to
//!   every row, and the float work (convert, scale, accumulate) is done once per block for all
//!   16 rows, one row per lane;
//! - the instruction set is chosen at run time ([`Isa`]): AVX-512 VNNI's `vpdpbusd` (64 byte
//!   products summed into 16 lanes in one instruction) where the CPU has it, AVX2's
//!   `vpmaddubsw` + `vpmaddwd` otherwise, so one binary is right and fast on both kinds of host.
//!
//! The arithmetic: a weight block of 32 values is `d·(q - 8)` (`q4_0`), `d·(q - 16)` (`q5_0`),
//! `d·q + m` (`q4_1`, `q5_1`) or `d·q` (`q8_0`); an activation block is `dx·qx`. The byte
//! products take an unsigned and a signed operand, so the weights are kept unsigned (the
//! nibble, or with q5's fifth bit OR-ed in from a plane of its own; for `q8_0` on VNNI,
//! `q + 128`) and the shift comes back out in the integer sum: it starts from `-8·Σqx` (or
//! `-16·Σqx`, `-128·Σqx`), computed once per activation block. The float offset `m` adds
//! `m·dx·Σqx` per block, one FMA beside the scale's for all the tile's rows. The integer sums are
//! exact, so results differ from GGML's only in the order of float additions.

use super::isa::Isa;
use super::k_tiles::{group_bytes, k_tile_avx2_tokens, k_tile_vnni_tokens, KTileWeights};
use super::q8::{quantize_rows, quantize_rows_k, Q8KRows, Q8Rows, BLOCK, SUPER};
use super::tiles::{
    tile_avx2_tokens, tile_vnni_tokens, Accumulators, TileWeights, AVX2_TOKENS, BYTES, MAX_TOKENS,
    NIBBLES, NIBBLES_AND_BIT, NO_SUM, OFFSET, ROWS, SHIFT, STEP_TOKENS, WIDE_ROWS,
};
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

mod k_quants;

/// Tokens of a prefill that share the L2 cache while a strip of weight rows passes over them.
const TOKEN_CHUNK: usize = 64;

/// Tokens per micro-kernel tile for `remaining` tokens: as many accumulators as the registers
/// hold (32 zmm, 16 ymm). The VNNI tiles come in every width up to [`MAX_TOKENS`], so a
/// speculative verification of K + 1 tokens is one pass over the weights for K ≤ 8; a longer run
/// goes [`STEP_TOKENS`] at a time. AVX2 tiles take up to [`AVX2_TOKENS`].
fn tokens_per_tile(isa: Isa, remaining: usize) -> usize {
    match isa {
        Isa::Avx512Vnni if remaining <= MAX_TOKENS => remaining.max(1),
        Isa::Avx512Vnni => STEP_TOKENS,
        Isa::Avx2 => remaining.clamp(1, AVX2_TOKENS),
    }
}

/// A `(rows, cols)` quantized matrix in the layout the kernel reads.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
    isa: Isa,
    /// Blocks per row (of 32 values, or of 256 for the K formats).
    blocks: usize,
    /// Rows per tile: [`WIDE_ROWS`] for the 32-value formats on AVX-512 VNNI, [`ROWS`]
    /// otherwise (see [`PackedMatrix::tile_rows`]).
    tile_rows: usize,
    /// Per block, tile after tile, block after block, the tile's rows side by side: the
    /// scale `d` (in f16, as the file has it) ...
    scales: Vec<f16>,
    /// ... for `q4_K` and `q5_K` the offset scale `dmin`, alike ...
    dmins: Vec<f16>,
    /// ... for the K formats the groups' integer scales and `q4_K`/`q5_K`'s offsets (see
    /// [`k_quants`]) ...
    sub_scales: Vec<i8>,
    sub_mins: Vec<i8>,
    /// ... and for `q4_1` and `q5_1` the offset `m`, laid out like `scales`.
    mins: Vec<f16>,
    /// What the unsigned weights were shifted by (8 for q4_0, 128 for q8_0 on VNNI), taken back
    /// out of every integer dot product; 0 when the bytes are the weights themselves.
    shift: i32,
    /// Per block of a tile, in the order of [`PackedMatrix::at`], with `g` = 64 / tile rows
    /// values of a row side by side (8 in a tile of 8 rows, 4 in a tile of 16): q8, 32/g
    /// 64-byte vectors, vector `j` holding values `gj..gj + g` of row 0, then of row 1, …; q4,
    /// half as many, byte `gr + e` of vector `h` holding value `2gh + e` of row `r` in its low
    /// nibble and value `2gh + g + e` in its high one (so masking and shifting one vector gives
    /// two of q8's).
    qs: Vec<u8>,
    /// For q5, per block of a tile, the fifth bits of its values, 4 bytes per row. In a tile of
    /// 8 rows, lane `L = 8r + e` of the 64-byte vectors above keeps the fifth bits of its four
    /// values (of vectors `j` = 0..4 of q8's order) in bits `j` of byte `L % 32`'s nibble
    /// `L / 32`, so one 32-byte load and a shift give every lane its bits; in a tile of 16,
    /// byte `L = 4r + e` keeps those of its eight values (vectors `j` = 0..8) in bits `j`.
    qh: Vec<u8>,
}

impl PackedMatrix {
    /// Whether the kernel handles this format.
    pub fn handles(dtype: GgmlDType) -> bool {
        matches!(
            dtype,
            GgmlDType::Q4_0
                | GgmlDType::Q4_1
                | GgmlDType::Q5_0
                | GgmlDType::Q5_1
                | GgmlDType::Q8_0
                | GgmlDType::Q2K
                | GgmlDType::Q3K
                | GgmlDType::Q4K
                | GgmlDType::Q5K
                | GgmlDType::Q6K
        )
    }

    /// Whether `dtype`'s blocks carry an offset `m` (`q4_1`, `q5_1`).
    fn has_mins(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_1)
    }

    /// Whether `dtype` is one of GGML's K formats, blocks of [`SUPER`] values.
    fn k_format(dtype: GgmlDType) -> bool {
        matches!(
            dtype,
            GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
        )
    }

    /// Splits a tensor of a format [`PackedMatrix::handles`] into the layout of this CPU's
    /// kernel.
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

    /// Reads a matrix stored in GGML's layout (rows of blocks, row after row, as a GGUF file
    /// holds it) from `reader` a slice of rows at a time: the file's copy never sits whole in
    /// memory beside the packed one, so loading peaks at the weights' size plus one slice.
    pub fn read(
        dtype: GgmlDType,
        (rows, cols): (usize, usize),
        reader: &mut impl std::io::Read,
    ) -> Result<Self> {
        let Some(isa) = Isa::detect() else {
            bail!("the quantized CPU kernel needs AVX2 and FMA");
        };
        let mut m = Self::empty(dtype, (rows, cols), isa)?;
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        const SLICE: usize = 256;
        let mut slice = vec![0u8; SLICE.min(rows) * row_bytes];
        for r0 in (0..rows).step_by(SLICE) {
            let bytes = &mut slice[..SLICE.min(rows - r0) * row_bytes];
            reader.read_exact(bytes)?;
            m.fill_rows(r0, bytes)?;
        }
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

    /// An all-zero matrix in `isa`'s layout, for [`PackedMatrix::fill_rows`].
    fn empty(dtype: GgmlDType, (rows, cols): (usize, usize), isa: Isa) -> Result<Self> {
        if !isa.available() {
            bail!("this CPU lacks {}", isa.name());
        }
        if !Self::handles(dtype) {
            bail!("PackedMatrix holds q4_0, q4_1, q5_0, q5_1, q8_0 or q2_K to q6_K, not {dtype:?}");
        }
        let k = Self::k_format(dtype);
        // The offsets `dmin·m` of q2_K, q4_K and q5_K; q4_K's and q5_K's `m` apart (q2_K's
        // sit beside its scales).
        let dmins = matches!(dtype, GgmlDType::Q2K | GgmlDType::Q4K | GgmlDType::Q5K);
        let k_mins = matches!(dtype, GgmlDType::Q4K | GgmlDType::Q5K);
        let block = if k { SUPER } else { BLOCK };
        if !cols.is_multiple_of(block) {
            bail!(
                "a {dtype:?} matrix needs rows of a multiple of {block} values, got {cols}: \
                 choose q8_0, q4_0 or q4_1 for this model"
            );
        }
        let blocks = cols / block;
        let tile_rows = Self::tile_rows(dtype, isa);
        let n = rows.next_multiple_of(tile_rows) * blocks;
        // AVX2's vpsignb takes signed q8_0 bytes as they are; VNNI wants them unsigned.
        let shift = match dtype {
            GgmlDType::Q4_0 => 8,
            GgmlDType::Q5_0 => 16,
            GgmlDType::Q8_0 if isa == Isa::Avx512Vnni => 128,
            _ => 0,
        };
        Ok(Self {
            rows,
            cols,
            dtype,
            isa,
            blocks,
            tile_rows,
            scales: vec![f16::ZERO; n],
            dmins: vec![f16::ZERO; if dmins { n } else { 0 }],
            sub_scales: vec![0; if k { 16 * n } else { 0 }],
            sub_mins: vec![0; if k_mins { 8 * n } else { 0 }],
            mins: vec![f16::ZERO; if Self::has_mins(dtype) { n } else { 0 }],
            shift,
            qs: vec![
                0u8;
                match dtype {
                    GgmlDType::Q8_0 => 32 * n,
                    _ if k => group_bytes(dtype) * n,
                    _ => 16 * n,
                }
            ],
            qh: vec![0u8; if Self::five_bits(dtype) { 4 * n } else { 0 }],
        })
    }

    /// Copies whole rows of GGML blocks (`data`), starting at row `r0`, into the layout.
    fn fill_rows(&mut self, r0: usize, data: &[u8]) -> Result<()> {
        if Self::k_format(self.dtype) {
            return self.fill_rows_k(r0, data);
        }
        let block_bytes = match self.dtype {
            GgmlDType::Q4_0 => 18,
            GgmlDType::Q4_1 => 20,
            GgmlDType::Q5_0 => 22,
            GgmlDType::Q5_1 => 24,
            _ => 34,
        };
        let row_bytes = self.blocks * block_bytes;
        if !data.len().is_multiple_of(row_bytes) || r0 + data.len() / row_bytes > self.rows {
            bail!("unexpected size of a {:?} tensor", self.dtype);
        }
        for (dr, row) in data.chunks_exact(row_bytes).enumerate() {
            let r = r0 + dr;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let at = self.at(r, b);
                let lane = at * self.tile_rows + r % self.tile_rows;
                self.scales[lane] = f16::from_le_bytes([block[0], block[1]]);
                if Self::has_mins(self.dtype) {
                    self.mins[lane] = f16::from_le_bytes([block[2], block[3]]);
                }
                // q5's fifth bits: a little-endian u32 before the nibbles, bit v for value v.
                let high_bits = if Self::five_bits(self.dtype) {
                    let at_bits = block_bytes - 20;
                    u32::from_le_bytes(block[at_bits..at_bits + 4].try_into()?)
                } else {
                    0
                };
                let quants = &block[block_bytes
                    - if self.dtype == GgmlDType::Q8_0 {
                        32
                    } else {
                        16
                    }..];
                for v in 0..BLOCK {
                    let (byte, nibble) = self.place(r, v);
                    if self.dtype == GgmlDType::Q8_0 {
                        // q + 128 is q's byte with the sign bit flipped.
                        let q = quants[v];
                        self.qs[at * 32 * self.tile_rows + byte] =
                            if self.shift == 128 { q ^ 0x80 } else { q };
                    } else {
                        // GGML packs value j in the low nibble of byte j and value j + 16 in
                        // its high nibble.
                        let q = (quants[v % 16] >> (4 * (v / 16))) & 0x0F;
                        let dst = &mut self.qs[at * 16 * self.tile_rows + byte];
                        *dst = (*dst & !(0x0F << nibble)) | (q << nibble);
                        if Self::five_bits(self.dtype) {
                            let (byte, bit) = self.place_high_bit(r, v);
                            let dst = &mut self.qh[at * 4 * self.tile_rows + byte];
                            *dst = (*dst & !(1 << bit)) | ((((high_bits >> v) & 1) as u8) << bit);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Row `r` as floats: an embedding lookup reads its rows from the quantized matrix, which a
    /// tied output projection shares, instead of keeping a float copy of the whole table.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if Self::k_format(self.dtype) {
            return self.dequantize_row_k(r, out);
        }
        for b in 0..self.blocks {
            let at = self.at(r, b);
            let lane = at * self.tile_rows + r % self.tile_rows;
            let d = self.scales[lane].to_f32();
            let m = self.mins.get(lane).map_or(0.0, |m| m.to_f32());
            for (v, y) in out[b * BLOCK..(b + 1) * BLOCK].iter_mut().enumerate() {
                let (byte, nibble) = self.place(r, v);
                let q = if self.dtype == GgmlDType::Q8_0 {
                    let u = self.qs[at * 32 * self.tile_rows + byte];
                    if self.shift == 0 {
                        u as i8 as i32
                    } else {
                        u as i32 - self.shift
                    }
                } else {
                    let mut q = (self.qs[at * 16 * self.tile_rows + byte] >> nibble) & 0x0F;
                    if Self::five_bits(self.dtype) {
                        let (byte, bit) = self.place_high_bit(r, v);
                        q |= ((self.qh[at * 4 * self.tile_rows + byte] >> bit) & 1) << 4;
                    }
                    q as i32 - self.shift
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

    /// Rows per tile for `dtype` on `isa`: the VNNI kernel of the 32-value formats takes 16 rows
    /// of four values per register ([`WIDE_ROWS`]); the AVX2 kernels and the K formats' take
    /// 8 rows of eight ([`ROWS`]).
    fn tile_rows(dtype: GgmlDType, isa: Isa) -> usize {
        if isa == Isa::Avx512Vnni && !Self::k_format(dtype) {
            WIDE_ROWS
        } else {
            ROWS
        }
    }

    /// Which block of the layout holds block `b` of row `r`: the blocks of a tile of
    /// [`PackedMatrix::tile_rows`] rows are stored together, and a tile's blocks one after another, so a tile reads its
    /// weights as one sequential stream, the pattern prefetchers serve best (TinyLlama's shape
    /// decodes at 31 tokens/s so, at 20 with the rows stored one after another).
    fn at(&self, r: usize, b: usize) -> usize {
        (r / self.tile_rows) * self.blocks + b
    }

    /// Where value `v` (0..32) of a row-`r` block lies within its layout block: the byte, and
    /// for q4 the nibble's shift (0 or 4). See [`PackedMatrix::qs`].
    fn place(&self, r: usize, v: usize) -> (usize, u8) {
        // Values per row in one 64-byte vector: 8 of 8 rows, or 4 of 16.
        let per_row = 64 / self.tile_rows;
        let lane = per_row * (r % self.tile_rows) + v % per_row;
        if self.dtype == GgmlDType::Q8_0 {
            (64 * (v / per_row) + lane, 0)
        } else {
            (
                64 * (v / (2 * per_row)) + lane,
                4 * ((v / per_row) % 2) as u8,
            )
        }
    }

    /// Whether `dtype` has 5-bit weights: nibbles plus a plane of fifth bits.
    fn five_bits(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q5_0 | GgmlDType::Q5_1)
    }

    /// Where the fifth bit of value `v` (0..32) of a row-`r` block lies within the layout
    /// block's 32 bytes of them (see [`PackedMatrix::qh`]): the byte and the bit.
    fn place_high_bit(&self, r: usize, v: usize) -> (usize, u8) {
        if self.tile_rows == WIDE_ROWS {
            return (4 * (r % WIDE_ROWS) + v % 4, (v / 4) as u8);
        }
        let lane = 8 * (r % ROWS) + v % 8;
        (lane % 32, (4 * (lane / 32) + v / 8) as u8)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn size_in_bytes(&self) -> usize {
        self.qs.len()
            + self.qh.len()
            + 2 * (self.scales.len() + self.dmins.len() + self.mins.len())
            + self.sub_scales.len()
            + self.sub_mins.len()
    }

    /// `x`: `(.., cols)` f32 on the CPU → `(.., rows)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let cols = *dims.last().unwrap_or(&0);
        if cols != self.cols {
            bail!(
                "PackedMatrix: input has {cols} columns, the matrix {}",
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

    /// What its input is quantized to: `q8_K` for the K formats, else `q8_0` (`q8_1` for
    /// `q4_1`) with the start of the shifted weights' integer sums.
    fn activations(&self) -> (bool, bool, i32) {
        (
            Self::k_format(self.dtype),
            Self::has_mins(self.dtype),
            self.shift,
        )
    }

    /// Whether `self` and `other` can share one quantization of their input (a `q4_K` and a
    /// `q6_K` matrix can: a `Q4_K_M` file mixes the two within a layer).
    fn same_kind(&self, other: &PackedMatrix) -> bool {
        (self.cols, self.isa, self.activations()) == (other.cols, other.isa, other.activations())
    }

    /// The activations quantized for this matrix's kernel.
    fn quantize_input(&self, x: &[f32], m: usize) -> Activations {
        let (k, q8_1, shift) = self.activations();
        if k {
            Activations::Q8K(quantize_rows_k(x, (m, self.cols)))
        } else {
            Activations::Q8(quantize_rows(x, (m, self.cols), q8_1, shift))
        }
    }

    /// Rows `tile_rows·tile..` times tokens `i..i + tokens` into `acc[token][row]`.
    fn tile(&self, tile: usize, x: &Activations, i: usize, tokens: usize, acc: &mut Accumulators) {
        let q8 = match x {
            Activations::Q8(q8) => q8,
            Activations::Q8K(q8) => return self.k_tile(tile, q8, i, tokens, acc),
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `with_isa` checked that the CPU has `self.isa`; rows are padded to whole
        // tiles and `tokens_per_tile` keeps the tokens within `q8`. `q8` is this matrix's
        // `quantize_input`, so it has the starts of a shifted format and the sums of q4_1 and
        // q5_1, whose `mins` `empty` allocated.
        unsafe {
            let weights = TileWeights {
                dtype: self.dtype,
                blocks: self.blocks,
                scales: &self.scales,
                mins: &self.mins,
                qs: &self.qs,
                qh: &self.qh,
            };
            let args = (&weights, tile, q8, i, &mut *acc);
            // How the activation sums enter follows from the format (and for q8_0 from the
            // instruction set): `empty` sets `shift` and `mins` to match.
            match (self.isa, self.dtype) {
                (Isa::Avx512Vnni, GgmlDType::Q4_1 | GgmlDType::Q5_1) => {
                    tile_vnni_tokens::<OFFSET>(tokens, args)
                }
                // q4_0, q5_0, and q8_0 (stored as q + 128 for VNNI).
                (Isa::Avx512Vnni, _) => tile_vnni_tokens::<SHIFT>(tokens, args),
                (Isa::Avx2, GgmlDType::Q4_0) => tile_avx2_tokens::<NIBBLES, SHIFT>(tokens, args),
                (Isa::Avx2, GgmlDType::Q4_1) => tile_avx2_tokens::<NIBBLES, OFFSET>(tokens, args),
                (Isa::Avx2, GgmlDType::Q5_0) => {
                    tile_avx2_tokens::<NIBBLES_AND_BIT, SHIFT>(tokens, args)
                }
                (Isa::Avx2, GgmlDType::Q5_1) => {
                    tile_avx2_tokens::<NIBBLES_AND_BIT, OFFSET>(tokens, args)
                }
                (Isa::Avx2, _) => tile_avx2_tokens::<BYTES, NO_SUM>(tokens, args),
            }
        }
    }

    /// [`PackedMatrix::tile`] for the K formats.
    fn k_tile(&self, tile: usize, q8: &Q8KRows, i: usize, tokens: usize, acc: &mut Accumulators) {
        let weights = KTileWeights {
            dtype: self.dtype,
            blocks: self.blocks,
            d: &self.scales,
            dmin: &self.dmins,
            sub_scales: &self.sub_scales,
            sub_mins: &self.sub_mins,
            qs: &self.qs,
        };
        let args = (&weights, tile, q8, i, &mut *acc);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `with_isa` checked that the CPU has `self.isa`; rows are padded to whole
        // tiles and `tokens_per_tile` keeps the tokens within `q8`.
        unsafe {
            match self.isa {
                Isa::Avx512Vnni => k_tile_vnni_tokens(tokens, args),
                Isa::Avx2 => k_tile_avx2_tokens(tokens, args),
            }
        }
    }
}

/// A matmul's input, quantized once for all its matrices.
enum Activations {
    Q8(Q8Rows),
    Q8K(Q8KRows),
}

/// Several matrices times the same activations in one parallel region: q, k and v of an
/// attention layer, or gate and up of an MLP. The activations are quantized once, and the
/// threads meet once instead of once per matrix (a decode step of a 22-layer model has about
/// 150 matmuls, and each meeting costs microseconds). `None` when the matrices differ in
/// width, format or kernel (or `x` does not hold `m` rows of their width).
pub fn matmul_group(mats: &[&PackedMatrix], x: &[f32], m: usize) -> Option<Vec<Vec<f32>>> {
    let first = mats.first()?;
    if mats.iter().any(|w| !w.same_kind(first)) || x.len() != m * first.cols {
        return None;
    }
    let q8 = first.quantize_input(x, m);
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows]).collect();
    // Work split over strips of row tiles, a few per thread to balance the load without paying
    // for many hand-offs. Each strip writes its own columns of its matrix's output.
    let total: usize = mats.iter().map(|w| w.rows.div_ceil(w.tile_rows)).sum();
    let per_strip = total.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut strips = Vec::new();
    for (j, (w, out)) in mats.iter().zip(&mut outs).enumerate() {
        let tiles = w.rows.div_ceil(w.tile_rows);
        for t0 in (0..tiles).step_by(per_strip) {
            strips.push((
                j,
                t0,
                (t0 + per_strip).min(tiles),
                SharedOut(out.as_mut_ptr()),
            ));
        }
    }
    super::pool::for_each_task(strips.len(), |s| {
        let (j, t0, t1, out) = &strips[s];
        let w = mats[*j];
        for c0 in (0..m).step_by(TOKEN_CHUNK) {
            let c1 = (c0 + TOKEN_CHUNK).min(m);
            for t in *t0..*t1 {
                let mut i = c0;
                while i < c1 {
                    let tokens = tokens_per_tile(w.isa, c1 - i);
                    let mut acc = [[0f32; WIDE_ROWS]; MAX_TOKENS];
                    w.tile(t, &q8, i, tokens, &mut acc);
                    for (dt, row) in acc.iter().enumerate().take(tokens) {
                        for (dr, &v) in row.iter().take(w.tile_rows).enumerate() {
                            let r = t * w.tile_rows + dr;
                            if r < w.rows {
                                // SAFETY: strips own disjoint sets of rows `r` of their
                                // matrix, so no two tasks write the same element, and
                                // `(i + dt, r)` is in bounds (`i + dt < m`, `r < rows`).
                                unsafe { *out.0.add((i + dt) * w.rows + r) = v };
                            }
                        }
                    }
                    i += tokens;
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

#[cfg(test)]
mod tests;
