//! GGML's K formats (`q2_K` to `q6_K`) in the packed layout: super-blocks of 256 values, each
//! with one f16 scale `d` and small integer scales for its groups.
//!
//! - `q4_K`, `q5_K`: value `d·sc·q - dmin·m` with `q` 4 or 5 bits, and a 6-bit `sc` and `m`
//!   per 32 values;
//! - `q2_K`: the same with `q` 2 bits, and a 4-bit `sc` and `m` per 16 values;
//! - `q6_K`: value `d·sc·(q - 32)` with `q` 6 bits and an int8 `sc` per 16 values;
//! - `q3_K`: value `d·sc·(q - 4)` with `q` 3 bits and a 6-bit `sc - 32` per 16 values.
//!
//! Per super-block of a tile of [`ROWS`] rows (`at`), the layout holds: the weights of its
//! eight 32-value groups one after another. For `q4_K`, `q5_K` and `q6_K` each group starts with
//! two 64-byte vectors of nibbles (byte `8r + e` of vector `h` holds slot `(2h, e)` of row `r` in
//! its low nibble and `(2h + 1, e)` in its high one, slots as [`k_slot`] orders the values); for
//! `q6_K` one 64-byte vector of the top two bits follows (slot `(j, e)` at bits `2j`), for
//! `q5_K` 32 bytes of fifth bits (lane `L = 8r + e` in nibble `L / 32` of byte `L % 32`, bit
//! `j`). `q2_K` and `q3_K` keep their low two bits in one 64-byte vector laid out as `q6_K`'s
//! top bits, and `q3_K` its third bit in 32 bytes laid out as `q5_K`'s fifth, so they take the
//! file's bits per weight. Then the group scales as int8 pairs, per group and row the scales of
//! its two halves (`q4_K`'s one scale twice; `q2_K`'s scale in the low nibble and its `m` in the
//! high one, as the file packs them); `q4_K`'s `m` as pairs of groups per row; `d` and `dmin`
//! per row in f16, as the file has them.

use super::super::k_tiles::{group_bytes, two_bit, weight};
use super::super::q8::{k_slot, SUPER};
use super::super::tiles::ROWS;
use super::PackedMatrix;
use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;
use half::f16;

/// Bytes of one super-block of one row in the file.
pub(super) fn file_bytes(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q2K => 84,
        GgmlDType::Q3K => 110,
        GgmlDType::Q4K => 144,
        GgmlDType::Q5K => 176,
        _ => 210,
    }
}

/// One super-block of the file decoded to integers.
struct Decoded {
    /// The 256 unsigned weights (0..4, 0..8, 0..16, 0..32 or 0..64).
    q: [u8; SUPER],
    /// Per 16 values, the scale (`q4_K`, `q5_K`: its group's).
    sc: [i8; 16],
    /// The offset multipliers: `q4_K`'s and `q5_K`'s per 32 values (the first 8), `q2_K`'s per 16.
    m: [i8; 16],
    d: f16,
    dmin: f16,
}

/// GGML's `get_scale_min_k4`: the 6-bit scale and offset of group `j` from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Where `q5_K`'s fifth bit of slot `(j, e)` of tile row `lane` lies in its group's 32 bytes of
/// them: the byte and the bit.
fn fifth_bit(lane: usize, e: usize, j: usize) -> (usize, u8) {
    let l = 8 * lane + e;
    (l % 32, (4 * (l / 32) + j) as u8)
}

fn decode(dtype: GgmlDType, block: &[u8]) -> Decoded {
    let f16_at = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]);
    let mut out = Decoded {
        q: [0; SUPER],
        sc: [0; 16],
        m: [0; 16],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    // Where value `v` of a `q2_K` or `q3_K` super-block keeps its low two bits: value
    // 128n + 32j + l is bits 2j of qs[32n + l] (and `q3_K`'s third bit is bit 4n + j of
    // hmask[l]), the scale of value v is number v / 16.
    let two_bits = |qs: &[u8], v: usize| (qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32))) & 3;
    if dtype == GgmlDType::Q2K {
        // scales[16] (scale | m << 4), qs[64], d, dmin.
        let (scales, qs) = (&block[..16], &block[16..80]);
        out.d = f16_at(80);
        out.dmin = f16_at(82);
        for (k, &byte) in scales.iter().enumerate() {
            out.sc[k] = (byte & 0x0F) as i8;
            out.m[k] = (byte >> 4) as i8;
        }
        for v in 0..SUPER {
            out.q[v] = two_bits(qs, v);
        }
    } else if dtype == GgmlDType::Q3K {
        // hmask[32], qs[64], scales[12], d. Scale k (6 bits, stored plus 32): its low four bits
        // are the low (k < 8) or high (k ≥ 8) nibble of scales[k % 8], its top two bits
        // 2(k / 4).. of scales[8 + k % 4].
        let (hmask, qs, scales) = (&block[..32], &block[32..96], &block[96..108]);
        out.d = f16_at(108);
        for (k, sc) in out.sc.iter_mut().enumerate() {
            let low = (scales[k % 8] >> (4 * (k / 8))) & 0x0F;
            let high = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
            *sc = (low | (high << 4)) as i8 - 32;
        }
        for v in 0..SUPER {
            let third = (hmask[v % 32] >> (4 * (v / 128) + v % 128 / 32)) & 1;
            out.q[v] = two_bits(qs, v) | (third << 2);
        }
    } else if dtype != GgmlDType::Q6K {
        // d, dmin, scales[12], (q5_K: qh[32],) qs[128]: group 2k is the low nibbles of
        // qs[32k..32k + 32], group 2k + 1 their high nibbles; q5_K's fifth bit of value
        // 32g + l is bit g of qh[l].
        out.d = f16_at(0);
        out.dmin = f16_at(2);
        let scales = &block[4..16];
        let (qh, qs) = block[16..].split_at(if dtype == GgmlDType::Q5K { 32 } else { 0 });
        for g in 0..8 {
            let (sc, m) = scale_min_k4(g, scales);
            out.sc[2 * g] = sc as i8;
            out.sc[2 * g + 1] = sc as i8;
            out.m[g] = m as i8;
            for l in 0..32 {
                let high = qh.get(l).map_or(0, |h| (h >> g) & 1);
                out.q[32 * g + l] = ((qs[32 * (g / 2) + l] >> (4 * (g % 2))) & 0x0F) | (high << 4);
            }
        }
    } else {
        // ql[128], qh[64], scales[16] (int8), d: value 128n + 32g + l takes its low bits from
        // ql[64n + 32(g % 2) + l] (nibble g / 2) and its top two from qh[32n + l] (bits 2g).
        let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
        out.d = f16_at(208);
        for (k, sc) in out.sc.iter_mut().enumerate() {
            *sc = scales[k] as i8;
        }
        for v in 0..SUPER {
            let (n, g, l) = (v / 128, v % 128 / 32, v % 32);
            let low = (ql[64 * n + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0x0F;
            let high = (qh[32 * n + l] >> (2 * g)) & 3;
            out.q[v] = low | (high << 4);
        }
    }
    out
}

impl PackedMatrix {
    /// Copies whole rows of K super-blocks (`data`), starting at row `r0`, into the layout.
    pub(super) fn fill_rows_k(&mut self, r0: usize, data: &[u8]) -> Result<()> {
        let block_bytes = file_bytes(self.dtype);
        let row_bytes = self.blocks * block_bytes;
        if !data.len().is_multiple_of(row_bytes) || r0 + data.len() / row_bytes > self.rows {
            bail!("unexpected size of a {:?} tensor", self.dtype);
        }
        let group = group_bytes(self.dtype);
        let dtype = self.dtype;
        for (dr, row) in data.chunks_exact(row_bytes).enumerate() {
            let r = r0 + dr;
            let lane = r % ROWS;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let at = self.at(r, b);
                let x = decode(dtype, block);
                self.scales[at * ROWS + lane] = x.d;
                if !self.dmins.is_empty() {
                    self.dmins[at * ROWS + lane] = x.dmin;
                }
                if !self.sub_mins.is_empty() {
                    for (g, &m) in x.m[..8].iter().enumerate() {
                        self.sub_mins[at * 64 + (g / 2) * 16 + 2 * lane + g % 2] = m;
                    }
                }
                for g in 0..8 {
                    let scales = &mut self.sub_scales[at * 128 + g * 16 + 2 * lane..][..2];
                    for (k, s) in scales.iter_mut().enumerate() {
                        let k = 2 * g + k;
                        *s = if dtype == GgmlDType::Q2K {
                            (x.sc[k] as u8 | ((x.m[k] as u8) << 4)) as i8
                        } else {
                            x.sc[k]
                        };
                    }
                    let base = at * 8 * group + g * group;
                    for v in 0..32 {
                        let q = x.q[32 * g + v];
                        let slot = k_slot(v);
                        let (j, e) = (slot / 8, slot % 8);
                        if two_bit(dtype) {
                            let byte = &mut self.qs[base + 8 * lane + e];
                            *byte = (*byte & !(3 << (2 * j))) | ((q & 3) << (2 * j));
                            if dtype == GgmlDType::Q3K {
                                let (at_byte, bit) = fifth_bit(lane, e, j);
                                let byte = &mut self.qs[base + 64 + at_byte];
                                *byte = (*byte & !(1 << bit)) | ((q >> 2) << bit);
                            }
                            continue;
                        }
                        let byte = &mut self.qs[base + 64 * (j / 2) + 8 * lane + e];
                        let shift = 4 * (j % 2);
                        *byte = (*byte & !(0x0F << shift)) | ((q & 0x0F) << shift);
                        if dtype == GgmlDType::Q6K {
                            let byte = &mut self.qs[base + 128 + 8 * lane + e];
                            *byte = (*byte & !(3 << (2 * j))) | ((q >> 4) << (2 * j));
                        }
                        if dtype == GgmlDType::Q5K {
                            let (at_byte, bit) = fifth_bit(lane, e, j);
                            let byte = &mut self.qs[base + 128 + at_byte];
                            *byte = (*byte & !(1 << bit)) | ((q >> 4) << bit);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Row `r` as floats, with GGML's order of operations so the values equal its own.
    pub(super) fn dequantize_row_k(&self, r: usize, out: &mut [f32]) {
        let lane = r % ROWS;
        let dtype = self.dtype;
        let group = group_bytes(dtype);
        for b in 0..self.blocks {
            let at = self.at(r, b);
            let d = self.scales[at * ROWS + lane].to_f32();
            let dmin = self.dmins.get(at * ROWS + lane).map_or(0.0, |m| m.to_f32());
            for g in 0..8 {
                let scales = &self.sub_scales[at * 128 + g * 16 + 2 * lane..][..2];
                let base = at * 8 * group + g * group;
                for v in 0..32 {
                    let slot = k_slot(v);
                    let (j, e) = (slot / 8, slot % 8);
                    let q = weight(dtype, &self.qs, base, 8 * lane + e, j);
                    let sc = scales[v / 16];
                    out[b * SUPER + 32 * g + v] = match dtype {
                        GgmlDType::Q2K => {
                            let (sc, m) = (sc as u8 & 0x0F, sc as u8 >> 4);
                            d * sc as f32 * q as f32 - dmin * m as f32
                        }
                        GgmlDType::Q3K => d * sc as f32 * (q as i32 - 4) as f32,
                        GgmlDType::Q6K => d * sc as f32 * (q as i32 - 32) as f32,
                        _ => {
                            let m = self.sub_mins[at * 64 + (g / 2) * 16 + 2 * lane + g % 2];
                            d * sc as f32 * q as f32 - dmin * m as f32
                        }
                    };
                }
            }
        }
    }
}
