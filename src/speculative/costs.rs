//! What a round of speculative decoding costs on this machine: one draft token, one plain
//! target token, and one target verification of K + 1 tokens, timed on loaded models.
//!
//! With these costs [`expected_speedup`] models the speedup of a draft/target pair at any
//! acceptance rate, which is how a pair without reachable trained weights (TinyLlama drafting
//! for Llama 2 7B) is judged here: random weights of the real configs cost the same per token
//! as trained ones, but cannot say how often the draft is right.

use super::{check_same_vocab_size, expected_speedup};
use crate::eval::results::RunHeader;
use crate::eval::speed::{prompt_ids, Measured};
use crate::model::Transformer;
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What to time, and how often.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostSettings {
    /// Drafts per round whose verification is timed.
    pub ks: Vec<usize>,
    /// Tokens already in both caches when a step is timed (a short prompt's worth).
    pub context_tokens: usize,
    /// Untimed rounds first (page faults, thread pool start-up).
    pub warmup: usize,
    /// Timed rounds; the medians are reported.
    pub runs: usize,
}

impl Default for CostSettings {
    fn default() -> Self {
        Self {
            ks: vec![1, 2, 4, 8],
            context_tokens: 64,
            warmup: 1,
            runs: 5,
        }
    }
}

/// The time of one verification forward over K + 1 positions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyCost {
    pub k: usize,
    pub seconds: Measured,
    /// Median verification time over the median plain target step: the `v` of the speedup
    /// formula, which the papers take as 1.
    pub v: f64,
}

/// The measured costs of a draft/target pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepCosts {
    /// One decode step of the target: a forward over one token.
    pub target_token_s: Measured,
    /// One decode step of the draft model.
    pub draft_token_s: Measured,
    /// Median draft step over median target step: the `c` of the speedup formula.
    pub c: f64,
    pub verify: Vec<VerifyCost>,
}

impl StepCosts {
    /// The speedup these costs give at acceptance rate `alpha` with `k` drafts per round, or
    /// `None` for a K whose verification was not timed.
    pub fn modelled_speedup(&self, alpha: f64, k: usize) -> Option<f64> {
        let v = self.verify.iter().find(|v| v.k == k)?.v;
        Some(expected_speedup(alpha, k, self.c, v))
    }

    /// The lowest acceptance rate at which drafting `k` tokens per round beats plain decoding
    /// (the speedup rises with α), or `None` when even α = 1 does not.
    pub fn break_even_acceptance(&self, k: usize) -> Option<f64> {
        if self.modelled_speedup(1.0, k)? <= 1.0 {
            return None;
        }
        if self.modelled_speedup(0.0, k)? >= 1.0 {
            return Some(0.0);
        }
        let (mut low, mut high) = (0.0, 1.0);
        for _ in 0..50 {
            let mid = 0.5 * (low + high);
            if self.modelled_speedup(mid, k)? < 1.0 {
                low = mid;
            } else {
                high = mid;
            }
        }
        Some(high)
    }
}

/// One `results/speculative-costs-<timestamp>.json`: what `billion-llm speculative-costs`
/// measured, with the models, the settings and the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostsRecord {
    /// When, from which commit, on what machine and with which kernels.
    #[serde(flatten)]
    pub header: RunHeader,
    pub target: CostedModel,
    pub draft: CostedModel,
    pub settings: CostSettings,
    pub threads: usize,
    pub costs: StepCosts,
    /// The process's peak resident set right after loading the target (loaded first, so this
    /// is the target's load), and at the end.
    pub target_load_peak_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// The 1-minute load average before timing: other work on the machine slows every step.
    pub load_average: Option<f64>,
}

/// A model as the costs file records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostedModel {
    /// The name it was loaded by (`--target`, `--draft`).
    pub model: String,
    /// A short name for tables: the zoo's, else the name given.
    pub name: String,
    pub parameters: usize,
    /// `pretrained` or `random`.
    pub weights: String,
    /// `--quantize` as given (a GGUF keeps its own formats).
    pub quantization: Option<String>,
    /// Bytes its weights hold once loaded.
    pub weight_bytes: usize,
    /// Bytes the same weights would take in f32.
    pub f32_bytes: usize,
    pub load_s: f64,
}

/// Times one draft step, one target step and one verification per K, all at the same context
/// length, in interleaved rounds (so a burst of other load on the machine hits every kind of
/// step alike); medians over `settings.runs` rounds after `settings.warmup`. Both caches are
/// reset first and rolled back after every timed forward.
pub fn measure_costs(
    target: &mut Transformer,
    draft: &mut Transformer,
    settings: &CostSettings,
) -> Result<StepCosts> {
    let vocab = target.config().vocab_size;
    check_same_vocab_size(vocab, draft.config().vocab_size, "the target", "the draft")?;
    let Some(&max_k) = settings.ks.iter().max() else {
        bail!("give at least one K to time (--k 1,2,4,8)");
    };
    if settings.ks.contains(&0) || settings.runs == 0 || settings.context_tokens == 0 {
        bail!("K, the number of runs and the context length must all be at least 1");
    }
    let timer = ForwardTimer::new(
        &mut [&mut *target, &mut *draft],
        settings.context_tokens,
        max_k + 1,
    )?;
    let mut target_steps = Vec::new();
    let mut draft_steps = Vec::new();
    let mut verifies = vec![Vec::new(); settings.ks.len()];
    for round in 0..settings.warmup + settings.runs {
        let timed = round >= settings.warmup;
        let t = timer.time(target, 1, false)?;
        let d = timer.time(draft, 1, false)?;
        let mut v = Vec::with_capacity(settings.ks.len());
        for &k in &settings.ks {
            v.push(timer.time(target, k + 1, true)?);
        }
        if timed {
            target_steps.push(t);
            draft_steps.push(d);
            for (runs, seconds) in verifies.iter_mut().zip(v) {
                runs.push(seconds);
            }
        }
    }
    target.reset_cache();
    draft.reset_cache();
    let target_token_s = Measured::new(target_steps);
    let draft_token_s = Measured::new(draft_steps);
    let step = target_token_s.median;
    let verify = settings
        .ks
        .iter()
        .zip(verifies)
        .map(|(&k, runs)| {
            let seconds = Measured::new(runs);
            VerifyCost {
                k,
                v: seconds.median / step,
                seconds,
            }
        })
        .collect();
    Ok(StepCosts {
        c: draft_token_s.median / step,
        target_token_s,
        draft_token_s,
        verify,
    })
}

/// The time of a forward of the target alone over 1, 2, … `most` tokens after
/// `context_tokens` (entry `m - 1`: `m` tokens): the cost table of
/// [`super::hindsight_speedup`]. A one-token forward reads the last position's logits, as a
/// plain step does; a wider one every position's, as a verification does. Interleaved rounds,
/// medians over `runs` after `warmup`.
pub fn measure_forwards(
    target: &mut Transformer,
    most: usize,
    context_tokens: usize,
    (warmup, runs): (usize, usize),
) -> Result<Vec<Measured>> {
    if most == 0 || runs == 0 || context_tokens == 0 {
        bail!("time at least one forward, once, after at least one token of context");
    }
    let timer = ForwardTimer::new(&mut [&mut *target], context_tokens, most)?;
    let mut times = vec![Vec::new(); most];
    for round in 0..warmup + runs {
        for (m, runs) in (1..=most).zip(&mut times) {
            let seconds = timer.time(target, m, m > 1)?;
            if round >= warmup {
                runs.push(seconds);
            }
        }
    }
    target.reset_cache();
    Ok(times.into_iter().map(Measured::new).collect())
}

/// Forwards of a few tokens after a fixed context, all models' caches holding the same
/// context first.
struct ForwardTimer {
    ids: Vec<u32>,
    context: usize,
}

impl ForwardTimer {
    /// Resets `models` and fills their caches with `context` tokens; forwards of up to `most`
    /// tokens follow.
    fn new(models: &mut [&mut Transformer], context: usize, most: usize) -> Result<Self> {
        let vocab = models.first().map_or(1, |m| m.config().vocab_size);
        let timer = Self {
            ids: prompt_ids(context + most, vocab),
            context,
        };
        for model in models.iter_mut() {
            model.reset_cache();
            model.forward_last(&timer.input(model, 0..context)?)?;
        }
        Ok(timer)
    }

    fn input(&self, model: &Transformer, range: std::ops::Range<usize>) -> Result<Tensor> {
        Ok(Tensor::new(&self.ids[range], model.device())?.unsqueeze(0)?)
    }

    /// One forward over `tokens` after the context, its logits read back as the decoder reads
    /// them (every position's, or the last one's), then the cache rolled back to the context.
    fn time(&self, model: &mut Transformer, tokens: usize, all_rows: bool) -> Result<f64> {
        let x = self.input(model, self.context..self.context + tokens)?;
        let start = Instant::now();
        let logits = if all_rows {
            model.forward(&x)?.flatten_all()?
        } else {
            model.forward_last(&x)?.flatten_all()?
        };
        logits.to_vec1::<f32>()?;
        let seconds = start.elapsed().as_secs_f64();
        model.truncate_cache(self.context);
        Ok(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(c: f64, vs: &[(usize, f64)]) -> StepCosts {
        let m = Measured::new(vec![1.0]);
        StepCosts {
            target_token_s: m.clone(),
            draft_token_s: m.clone(),
            c,
            verify: vs
                .iter()
                .map(|&(k, v)| VerifyCost {
                    k,
                    seconds: m.clone(),
                    v,
                })
                .collect(),
        }
    }

    #[test]
    fn break_even_is_where_the_modelled_speedup_crosses_one() {
        let s = costs(0.1, &[(4, 2.0)]);
        let alpha = s.break_even_acceptance(4).unwrap();
        assert!((s.modelled_speedup(alpha, 4).unwrap() - 1.0).abs() < 1e-9);
        // Free drafts and free verification: any acceptance gains.
        assert_eq!(costs(0.0, &[(2, 1.0)]).break_even_acceptance(2), Some(0.0));
        // Verifying 9 tokens costs 9 steps: nothing to gain, even when every draft is kept.
        assert_eq!(costs(0.1, &[(8, 9.0)]).break_even_acceptance(8), None);
        assert_eq!(s.modelled_speedup(0.5, 8), None, "K = 8 was not timed");
    }
}
