//! GGML's K formats (`q4_K`, `q5_K`, `q6_K`) in the packed layout: super-blocks of 256 values, each
//! with one f16 scale `d` and small integer scales for its groups.
//!
//! - `q4_K`, `q5_K`: value `d·sc·q - dmin·m` with `q` 4 or 5 bits, and a 6-bit `sc` and `m`
//!   per 32 values;
//! - `q6_K`: value `d·sc·(q - 32)` with `q` 6 bits and an int8 `sc` per 16 values.
//!
//! Per super-block of a tile of [`ROWS`] rows (`at`), the layout holds: the weights of its
//! eight 32-value groups one after another, each as two 64-byte vectors of nibbles (byte
//! `8r + e` of vector `h` holds slot `(2h, e)` of row `r` in its low nibble and `(2h + 1, e)`
//! in its high one, slots as [`k_slot`] orders the values); for `q6_K` one 64-byte vector of
//! the top two bits (slot `(j, e)` at bits `2j`), for `q5_K` 32 bytes of fifth bits (lane
//! `L = 8r + e` in nibble `L / 32` of byte `L % 32`, bit `j`); the group scales as int8 pairs, per group
//! and row the scales of its two halves (`q4_K`'s one scale twice); `q4_K`'s `m` as pairs of
//! groups per row; `d` and `dmin` per row in f16, as the file has them.

use super::super::k_tiles::group_bytes;
use super::super::q8::{k_slot, SUPER};
use super::super::tiles::ROWS;
use super::PackedMatrix;
use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;
use half::f16;

/// Bytes of one super-block of one row in the file.
pub(super) fn file_bytes(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q4K => 144,
        GgmlDType::Q5K => 176,
        _ => 210,
    }
}

/// One super-block of the file decoded to integers.
struct Decoded {
    /// The 256 unsigned weights (0..16 or 0..64).
    q: [u8; SUPER],
    /// Per 16 values, the scale (`q4_K`: its group's).
    sc: [i8; 16],
    /// Per 32 values, `q4_K`'s offset multiplier.
    m: [i8; 8],
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
        m: [0; 8],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    if dtype != GgmlDType::Q6K {
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
        for (dr, row) in data.chunks_exact(row_bytes).enumerate() {
            let r = r0 + dr;
            let lane = r % ROWS;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let at = self.at(r, b);
                let x = decode(self.dtype, block);
                self.scales[at * ROWS + lane] = x.d;
                if self.dtype != GgmlDType::Q6K {
                    self.dmins[at * ROWS + lane] = x.dmin;
                    for (g, &m) in x.m.iter().enumerate() {
                        self.sub_mins[at * 64 + (g / 2) * 16 + 2 * lane + g % 2] = m;
                    }
                }
                for g in 0..8 {
                    let scales = &mut self.sub_scales[at * 128 + g * 16 + 2 * lane..][..2];
                    scales.copy_from_slice(&x.sc[2 * g..2 * g + 2]);
                    let base = at * 8 * group + g * group;
                    for v in 0..32 {
                        let q = x.q[32 * g + v];
                        let slot = k_slot(v);
                        let (j, e) = (slot / 8, slot % 8);
                        let byte = &mut self.qs[base + 64 * (j / 2) + 8 * lane + e];
                        let shift = 4 * (j % 2);
                        *byte = (*byte & !(0x0F << shift)) | ((q & 0x0F) << shift);
                        if self.dtype == GgmlDType::Q6K {
                            let byte = &mut self.qs[base + 128 + 8 * lane + e];
                            *byte = (*byte & !(3 << (2 * j))) | ((q >> 4) << (2 * j));
                        }
                        if self.dtype == GgmlDType::Q5K {
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
        let group = group_bytes(self.dtype);
        for b in 0..self.blocks {
            let at = self.at(r, b);
            let d = self.scales[at * ROWS + lane].to_f32();
            for g in 0..8 {
                let scales = &self.sub_scales[at * 128 + g * 16 + 2 * lane..][..2];
                let base = at * 8 * group + g * group;
                for v in 0..32 {
                    let slot = k_slot(v);
                    let (j, e) = (slot / 8, slot % 8);
                    let mut q =
                        (self.qs[base + 64 * (j / 2) + 8 * lane + e] >> (4 * (j % 2))) & 0x0F;
                    if self.dtype == GgmlDType::Q6K {
                        q |= ((self.qs[base + 128 + 8 * lane + e] >> (2 * j)) & 3) << 4;
                    }
                    if self.dtype == GgmlDType::Q5K {
                        let (at_byte, bit) = fifth_bit(lane, e, j);
                        q |= ((self.qs[base + 128 + at_byte] >> bit) & 1) << 4;
                    }
                    let y = &mut out[b * SUPER + 32 * g + v];
                    *y = if self.dtype != GgmlDType::Q6K {
                        let m = self.sub_mins[at * 64 + (g / 2) * 16 + 2 * lane + g % 2];
                        let dmin = self.dmins[at * ROWS + lane].to_f32();
                        d * scales[0] as f32 * q as f32 - dmin * m as f32
                    } else {
                        d * scales[v / 16] as f32 * (q as i32 - 32) as f32
                    };
                }
            }
        }
    }
}
