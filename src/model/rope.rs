//! Rotary position embeddings (RoPE, Su et al. 2021).
//!
//! Each pair of dimensions of a query or key is rotated by an angle proportional to the token's
//! position, so the dot product of a query and a key depends on how far apart they are. Models
//! differ in how many dimensions are rotated (all for Llama, a quarter for StableLM 2 and
//! Pythia), which dimensions form a pair ([`RopeStyle`]), and, for Llama 3, a rescaling of the
//! slow frequencies that stretches the trained context.

use crate::kernels::backprop;
use crate::model::config::{Llama3RopeScaling, RopeStyle, TransformerConfig};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

/// The rotation frequencies of one model; angles are computed per chunk of positions, so any
/// position up to the context limit costs the same and no large table is kept.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
    rotary_dim: usize,
    style: RopeStyle,
}

/// Llama 3's frequency rescaling: long wavelengths are divided by `factor`, short ones kept,
/// and the band between blended smoothly.
pub fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_len = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_len / s.low_freq_factor;
    let high_freq_wavelen = old_len / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / s.factor
    } else {
        let smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

impl Rotary {
    pub fn new(cfg: &TransformerConfig) -> Self {
        let d = cfg.rotary_dim;
        let inv_freq = (0..d)
            .step_by(2)
            .enumerate()
            .map(|(pair, i)| {
                // Computed in f32 like transformers, so angles match to the last bit we can get.
                let f = 1.0 / (cfg.rope_theta as f32).powf(i as f32 / d as f32);
                match (&cfg.rope_scaling, &cfg.rope_freq_factors) {
                    (Some(s), _) => llama3_scale(f as f64, s) as f32,
                    (None, Some(factors)) => f / factors.get(pair).copied().unwrap_or(1.0),
                    (None, None) => f,
                }
            })
            .collect();
        Self {
            inv_freq,
            rotary_dim: d,
            style: cfg.rope_style,
        }
    }

    /// `cos` and `sin` of shape `(seq, rotary_dim / 2)` for positions `start..start + seq`.
    fn angles(&self, start: usize, seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for pos in start..start + seq {
            for f in &self.inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq, half), device)?,
            Tensor::from_vec(sin, (seq, half), device)?,
        ))
    }

    // ANCHOR: rotary_apply
    /// Rotates the first `rotary_dim` dimensions of `x`: `(batch, heads, seq, head_dim)`,
    /// whose first position is `start`.
    pub fn apply(&self, x: &Tensor, start: usize, train: bool) -> Result<Tensor> {
        if self.rotary_dim == 0 {
            return Ok(x.clone());
        }
        let (_b, _h, seq, head_dim) = x.dims4()?;
        let (cos, sin) = self.angles(start, seq, x.device())?;
        let (cos, sin) = if x.dtype() == DType::F32 {
            (cos, sin)
        } else {
            (cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?)
        };
        let rotate = |t: &Tensor| -> Result<Tensor> {
            if train && backprop::applies(t) {
                let interleaved = self.style == RopeStyle::Interleaved;
                return backprop::rotate(t, &cos, &sin, interleaved);
            }
            let t = t.contiguous()?;
            Ok(match (self.style, train) {
                (RopeStyle::Half, false) => candle_nn::rotary_emb::rope(&t, &cos, &sin)?,
                (RopeStyle::Half, true) => candle_nn::rotary_emb::rope_slow(&t, &cos, &sin)?,
                (RopeStyle::Interleaved, false) => candle_nn::rotary_emb::rope_i(&t, &cos, &sin)?,
                (RopeStyle::Interleaved, true) => {
                    candle_nn::rotary_emb::rope_i_slow(&t, &cos, &sin)?
                }
            })
        };
        if self.rotary_dim == head_dim {
            return rotate(x);
        }
        // Partial rotary: rotate the leading dimensions, pass the rest through unchanged.
        let rotated = rotate(&x.narrow(D::Minus1, 0, self.rotary_dim)?)?;
        let pass = x.narrow(D::Minus1, self.rotary_dim, head_dim - self.rotary_dim)?;
        Ok(Tensor::cat(&[&rotated, &pass], D::Minus1)?)
    }
    // ANCHOR_END: rotary_apply
}
