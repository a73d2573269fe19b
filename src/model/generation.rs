//! Turning logits into tokens: greedy, temperature and nucleus (top-p) sampling, and the
//! generation loop with its timing (prefill and decode measured separately).

use crate::model::Transformer;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How the next token is picked from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probabilities add up to `top_p` (1.0 keeps all).
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 42,
        }
    }
}

/// Picks tokens; owns its random generator so a seed makes a run repeatable.
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        if params.temperature.is_nan() || params.temperature < 0.0 {
            bail!(
                "temperature must be 0 (greedy) or positive, got {}",
                params.temperature
            );
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            bail!("top-p must be in (0, 1], got {}", params.top_p);
        }
        Ok(Self {
            params,
            rng: rand::rngs::StdRng::seed_from_u64(params.seed),
        })
    }

    // ANCHOR: sample
    /// The next token from one row of logits; `banned` ids are never chosen.
    pub fn sample(&mut self, logits: &[f32], banned: &[u32]) -> Result<u32> {
        if self.params.temperature == 0.0 {
            return argmax(logits, banned);
        }
        let probs = self.nucleus(logits, banned)?;
        let kept_total: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * kept_total;
        for (i, p) in &probs {
            if r < *p {
                return Ok(*i as u32);
            }
            r -= p;
        }
        Ok(probs.last().unwrap().0 as u32)
    }
    // ANCHOR_END: sample

    /// The distribution [`Sampler::sample`] draws from, as one probability per token: one-hot
    /// on the largest logit when greedy, else softmax at the temperature cut to the nucleus.
    /// Speculative decoding compares the target's and the draft's distributions token by
    /// token, so both must be shaped by exactly the same rule.
    pub fn distribution(&self, logits: &[f32], banned: &[u32]) -> Result<Vec<f32>> {
        let mut dist = vec![0f32; logits.len()];
        if self.params.temperature == 0.0 {
            dist[argmax(logits, banned)? as usize] = 1.0;
            return Ok(dist);
        }
        if self.params.top_p >= 1.0 {
            // The whole vocabulary is the nucleus: no need to sort it.
            let t = self.params.temperature as f32;
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            for (d, &v) in dist.iter_mut().zip(logits) {
                let p = ((v - max) / t).exp();
                *d = if p.is_finite() { p } else { 0.0 };
            }
            for &b in banned {
                if let Some(d) = dist.get_mut(b as usize) {
                    *d = 0.0;
                }
            }
            let total: f32 = dist.iter().sum();
            if total <= 0.0 {
                bail!("no token can be sampled: all probabilities are zero");
            }
            dist.iter_mut().for_each(|d| *d /= total);
            return Ok(dist);
        }
        let probs = self.nucleus(logits, banned)?;
        let kept_total: f32 = probs.iter().map(|p| p.1).sum();
        for (i, p) in probs {
            dist[i] = p / kept_total;
        }
        Ok(dist)
    }

    // ANCHOR: nucleus
    /// The tokens of the nucleus with their unnormalised weights, most likely first.
    fn nucleus(&self, logits: &[f32], banned: &[u32]) -> Result<Vec<(usize, f32)>> {
        let t = self.params.temperature as f32;
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| !banned.contains(&(*i as u32)))
            .map(|(i, &v)| (i, ((v - max) / t).exp()))
            .filter(|(_, p)| p.is_finite() && *p > 0.0)
            .collect();
        if probs.is_empty() {
            bail!("no token can be sampled: all probabilities are zero");
        }
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f32 = probs.iter().map(|p| p.1).sum();
        // Nucleus: keep the head of the sorted distribution up to top_p of the mass.
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            kept += 1;
            mass += p.1 / total;
            if mass >= self.params.top_p as f32 {
                break;
            }
        }
        probs.truncate(kept);
        Ok(probs)
    }
    // ANCHOR_END: nucleus

    /// The sampling settings.
    pub fn params(&self) -> SamplingParams {
        self.params
    }

    /// The random generator, for draws that follow the same seed (speculative decoding's
    /// acceptance tests and residual samples).
    pub fn rng(&mut self) -> &mut rand::rngs::StdRng {
        &mut self.rng
    }
}

/// The largest allowed logit's id, the last of equal ones; NaN never wins.
fn argmax(logits: &[f32], banned: &[u32]) -> Result<u32> {
    let best = if banned.is_empty() {
        // Sixteen running maxima, which the compiler keeps in vector registers, then the last
        // position of the largest: 49,152 logits take ~10 µs, where one pass comparing each
        // with the best so far takes ~57 µs. Greedy speculative decoding pays it once per
        // position verified, K + 1 times a round.
        let mut lanes = [f32::NEG_INFINITY; 16];
        let chunks = logits.chunks_exact(16);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(v);
            }
        }
        let max = lanes
            .iter()
            .chain(rest)
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        logits.iter().rposition(|&v| v == max)
    } else {
        logits
            .iter()
            .enumerate()
            .filter(|(i, v)| !banned.contains(&(*i as u32)) && !v.is_nan())
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    best.map(|i| i as u32)
        .ok_or_else(|| anyhow::anyhow!("no token can be sampled: all logits are NaN or banned"))
}

/// What one generation produced and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Seconds spent reading the prompt (one forward over all its tokens).
    pub prefill_s: f64,
    /// Seconds from the first new token to the last: the one-token forwards, reading their
    /// logits and sampling (the llama.cpp side of the speed benchmark is timed alike).
    pub decode_s: f64,
    /// Seconds from the start until the first new token was picked.
    pub time_to_first_token_s: f64,
    /// True when an EOS token ended the generation before the limit.
    pub stopped_at_eos: bool,
    /// True when the caller's stop flag ended it (Ctrl-C in the chat).
    pub interrupted: bool,
}

impl Generation {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_s.max(1e-9)
    }

    /// Decode speed counts the steps after the first new token: it comes out of the prefill,
    /// so N new tokens cost N - 1 decode steps (llama.cpp counts the same way).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1);
        if steps == 0 {
            return 0.0;
        }
        steps as f64 / self.decode_s.max(1e-9)
    }
}

/// Options of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Never stop early: EOS ids are masked (transformers' `min_new_tokens`).
    pub ignore_eos: bool,
    /// Checked before every step: setting it ends the generation (Ctrl-C in the chat).
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            ignore_eos: false,
            stop: None,
        }
    }
}

/// Generates after `prompt`, continuing from whatever the model's KV cache holds.
/// `on_token` sees each new token as it is picked (for streaming output).
pub fn generate(
    model: &mut Transformer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    let eos = model.config().eos_token_ids.clone();
    let banned: &[u32] = if opts.ignore_eos { &eos } else { &[] };
    let mut sampler = Sampler::new(opts.sampling)?;
    let device: Device = model.device().clone();
    let input = |ids: &[u32]| -> Result<Tensor> { Ok(Tensor::new(ids, &device)?.unsqueeze(0)?) };

    let start = Instant::now();
    let mut logits = model.forward_last(&input(prompt)?)?;
    let prefill_s = start.elapsed().as_secs_f64();

    let mut tokens = Vec::with_capacity(opts.max_new_tokens);
    // Decoding is timed from the first token to the last, everything included (reading the
    // logits, sampling, `on_token`), as a speculative decoder's rounds are.
    let mut decode_start = start;
    let mut time_to_first_token_s = 0.0;
    let mut stopped_at_eos = false;
    let mut interrupted = false;
    while tokens.len() < opts.max_new_tokens {
        if opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            interrupted = true;
            break;
        }
        let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let next = sampler.sample(&row, banned)?;
        if tokens.is_empty() {
            time_to_first_token_s = start.elapsed().as_secs_f64();
            decode_start = Instant::now();
        }
        tokens.push(next);
        on_token(next)?;
        if !opts.ignore_eos && eos.contains(&next) {
            stopped_at_eos = true;
            break;
        }
        if tokens.len() == opts.max_new_tokens {
            break;
        }
        logits = model.forward_last(&input(&[next])?)?;
    }
    let decode_s = if tokens.is_empty() {
        0.0
    } else {
        decode_start.elapsed().as_secs_f64()
    };
    Ok(Generation {
        tokens,
        prompt_tokens: prompt.len(),
        prefill_s,
        decode_s,
        time_to_first_token_s,
        stopped_at_eos,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_allowed_logit() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[]).unwrap(), 1);
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[1]).unwrap(), 2);
    }

    #[test]
    fn argmax_takes_the_last_of_the_largest_and_skips_nan() {
        // Lengths off the 16 lanes; ties, infinities and NaN anywhere; the banned path (which
        // compares one logit at a time) as the reference with nothing banned that matters.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [1, 15, 16, 17, 100, 1000] {
            for _ in 0..50 {
                let logits: Vec<f32> = (0..len)
                    .map(|_| match rng.random_range(0..10) {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        2 => 3.0,
                        _ => rng.random_range(-4.0..3.0),
                    })
                    .collect();
                let fast = argmax(&logits, &[]).ok();
                let reference = argmax(&logits, &[u32::MAX]).ok();
                assert_eq!(fast, reference, "{logits:?}");
            }
        }
        assert!(argmax(&[f32::NAN; 20], &[]).is_err());
        assert_eq!(argmax(&[f32::NEG_INFINITY; 20], &[]).unwrap(), 19);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
        };
        let mut s = Sampler::new(params).unwrap();
        // Token 0 holds ~88% of the mass, so a 0.5 nucleus is token 0 alone.
        for _ in 0..100 {
            assert_eq!(s.sample(&[4.0, 2.0, 0.0], &[]).unwrap(), 0);
        }
    }

    #[test]
    fn sampling_with_a_seed_is_repeatable_and_varied() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 3,
        };
        let draw = || {
            let mut s = Sampler::new(params).unwrap();
            (0..50)
                .map(|_| s.sample(&[1.0, 1.0, 1.0, 1.0], &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(a.iter().any(|&t| t != a[0]), "a uniform draw should vary");
    }

    #[test]
    fn bad_parameters_are_errors() {
        let bad = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
    }
}
