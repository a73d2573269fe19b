//! The decoding loop: draft, verify in one target forward, accept or correct, roll back.

use super::drafter::{sample_from, Drafter, Proposal};
use super::schedule::{CostModel, KSchedule};
use crate::model::generation::{generate, GenerateOptions, Generation, Sampler, SamplingParams};
use crate::model::Transformer;
use anyhow::{bail, Result};
use candle_core::{IndexOp, Tensor};
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// What a speculative generation produced, and how the drafts fared.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativeOutput {
    pub tokens: Vec<u32>,
    /// For each token: true when it was drafted and accepted, false when the target produced
    /// it (a correction after a rejection, the bonus token, or a round without drafts).
    pub from_draft: Vec<bool>,
    pub prompt_tokens: usize,
    pub rounds: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Target forwards, the prefill included.
    pub target_forwards: usize,
    /// Per draft position i (0-based): how many rounds drafted a token there, and how many of
    /// those were accepted.
    pub drafted_at: Vec<usize>,
    pub accepted_at: Vec<usize>,
    /// Rounds by how many drafts they verified (index 0: plain steps).
    pub rounds_by_k: Vec<usize>,
    /// Per situation the drafter named ([`Drafter::situation`], prompt lookup's
    /// [`super::Lead`] as a number): the rounds whose first proposal was checked (verified, or
    /// compared with the plain step's token as a K = 0 guess), and those where it was right.
    pub first_right_by_situation: Vec<(usize, usize)>,
    pub prefill_s: f64,
    /// Seconds after the first token: drafting and verifying.
    pub decode_s: f64,
    pub stopped_at_eos: bool,
}

impl SpeculativeOutput {
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// New tokens per verification round (1 + accepted drafts on average).
    pub fn tokens_per_round(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.rounds.max(1) as f64
    }

    /// Decode speed, counted like plain generation's: tokens after the first, per second.
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_s.max(1e-9)
    }
}

/// Decodes a target model with a drafter.
pub struct SpeculativeDecoder<'a> {
    pub target: &'a mut Transformer,
    pub drafter: &'a mut dyn Drafter,
    pub schedule: KSchedule,
    pub sampling: SamplingParams,
}

impl SpeculativeDecoder<'_> {
    // ANCHOR: round
    /// Generates up to `max_new_tokens` after `prompt` (the target's cache is reset first);
    /// `on_token` sees each token as it is decided, with whether it came from the draft.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        mut on_token: impl FnMut(u32, bool) -> Result<()>,
    ) -> Result<SpeculativeOutput> {
        if prompt.is_empty() {
            bail!("the prompt is empty: give at least one token");
        }
        if let KSchedule::Fixed(0) | KSchedule::Adaptive { start: 0, .. } = self.schedule {
            bail!(
                "K, the number of drafted tokens per round, must be at least 1 (the cost \
                 schedule chooses K = 0, plain steps, by itself where drafting does not pay)"
            );
        }
        let eos = self.target.config().eos_token_ids.clone();
        let device = self.target.device().clone();
        let mut sampler = Sampler::new(self.sampling)?;
        let mut out = SpeculativeOutput {
            tokens: Vec::new(),
            from_draft: Vec::new(),
            prompt_tokens: prompt.len(),
            rounds: 0,
            drafted: 0,
            accepted: 0,
            target_forwards: 1,
            drafted_at: Vec::new(),
            accepted_at: Vec::new(),
            rounds_by_k: Vec::new(),
            first_right_by_situation: Vec::new(),
            prefill_s: 0.0,
            decode_s: 0.0,
            stopped_at_eos: false,
        };
        let start = Instant::now();
        self.target.reset_cache();
        let logits = self
            .target
            .forward_last(&Tensor::new(prompt, &device)?.unsqueeze(0)?)?;
        let first = sampler.sample(&logits.squeeze(0)?.to_vec1()?, &[])?;
        out.prefill_s = start.elapsed().as_secs_f64();
        let decode_start = Instant::now();
        // The target's cache holds every context token but the last one (`pending`).
        let mut context = prompt.to_vec();
        let mut decided = vec![(first, false)];
        let mut k = self.schedule.start();
        let mut costs = CostModel::default();
        let free = self.drafter.drafts_for_free();
        let mut plain_rounds = 0usize;
        let limit = self.target.config().max_position_embeddings;
        self.drafter.reset();
        loop {
            for (token, drafted) in decided.drain(..) {
                if out.tokens.len() == max_new_tokens || out.stopped_at_eos {
                    break;
                }
                out.tokens.push(token);
                out.from_draft.push(drafted);
                context.push(token);
                on_token(token, drafted)?;
                out.stopped_at_eos = eos.contains(&token);
            }
            let remaining = max_new_tokens - out.tokens.len();
            if remaining == 0 || out.stopped_at_eos {
                break;
            }
            // Drafting more than will be kept is wasted work, and the verification must fit
            // in the target's context (which then holds the context and the drafts).
            let room = (remaining - 1).min(limit.saturating_sub(context.len()));
            // A free drafter under the cost schedule offers all it has first, and K is chosen
            // once it says how it found its proposal (a lookup in step with its source is
            // right far more often than one guessing past a substitution).
            let choose_after = free && matches!(self.schedule, KSchedule::Cost { .. });
            let want = k.min(room);
            // A free drafter is asked even at K = 0: whether its guess matches the token the
            // plain step decides keeps the acceptance estimate current.
            let ask = if choose_after {
                self.schedule.max().min(room).max(1)
            } else if want == 0 && free {
                1
            } else {
                want
            };
            let drafting = Instant::now();
            let mut proposals = if ask > 0 {
                self.drafter
                    .draft(self.target, &context, ask, &mut sampler)?
            } else {
                Vec::new()
            };
            costs.record_drafting(proposals.len(), drafting.elapsed().as_secs_f64());
            let situation = self.drafter.situation().filter(|_| !proposals.is_empty());
            if let Some(situation) = situation {
                costs.set_situation(situation);
            }
            let want = if choose_after {
                costs.best_k(self.schedule.max(), k).min(room)
            } else {
                want
            };
            let guess = (want == 0).then(|| proposals.first().cloned()).flatten();
            proposals.truncate(want);
            let base = context.len() - 1;
            let mut input = vec![*context.last().unwrap()];
            input.extend(proposals.iter().map(|p| p.token));
            let verifying = Instant::now();
            let rows = self
                .target
                .forward(&Tensor::new(input.as_slice(), &device)?.unsqueeze(0)?)?
                .i(0)?;
            let (accepted, next) = verify(&rows, &proposals, &mut sampler)?;
            costs.record_verification(proposals.len(), verifying.elapsed().as_secs_f64());
            out.target_forwards += 1;
            out.rounds += 1;
            // Keep the pending token and the accepted drafts; the rest of the forward is undone.
            self.target.truncate_cache(base + 1 + accepted);
            out.drafted += proposals.len();
            out.accepted += accepted;
            if out.rounds_by_k.len() <= proposals.len() {
                out.rounds_by_k.resize(proposals.len() + 1, 0);
            }
            out.rounds_by_k[proposals.len()] += 1;
            for i in 0..proposals.len() {
                if out.drafted_at.len() <= i {
                    out.drafted_at.push(0);
                    out.accepted_at.push(0);
                }
                out.drafted_at[i] += 1;
                out.accepted_at[i] += usize::from(i < accepted);
            }
            let first_right = match &guess {
                Some(g) => g.token == next,
                None => accepted > 0,
            };
            match guess {
                Some(_) => costs.record_acceptance(1, usize::from(first_right)),
                None => costs.record_acceptance(proposals.len(), accepted),
            }
            if let Some(situation) = situation {
                let by = &mut out.first_right_by_situation;
                if by.len() <= situation {
                    by.resize(situation + 1, (0, 0));
                }
                by[situation].0 += 1;
                by[situation].1 += usize::from(first_right);
            }
            decided.extend(proposals[..accepted].iter().map(|p| (p.token, true)));
            decided.push((next, false));
            k = match self.schedule {
                KSchedule::Cost { max } => {
                    let best = costs.best_k(max, k);
                    plain_rounds = if best == 0 { plain_rounds + 1 } else { 0 };
                    // A drafter that costs time is tried again now and then (K = 0 alone
                    // would never learn that the text has turned predictable), unless it
                    // could not pay even with every draft accepted.
                    if !free && plain_rounds % 16 == 15 && costs.could_pay(max) {
                        1
                    } else {
                        best
                    }
                }
                _ if proposals.is_empty() => k,
                schedule => schedule.next(k, accepted == proposals.len()),
            };
        }
        out.decode_s = decode_start.elapsed().as_secs_f64();
        Ok(out)
    }
    // ANCHOR_END: round

    /// [`Self::generate`], then plain decoding of the same prompt by the same target with the
    /// same sampling: the speedup is a ratio of two runs in one process, minutes apart at most.
    pub fn generate_beside_plain(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        on_token: impl FnMut(u32, bool) -> Result<()>,
    ) -> Result<SameRun> {
        let speculative = self.generate(prompt, max_new_tokens, on_token)?;
        self.target.reset_cache();
        let opts = GenerateOptions {
            max_new_tokens,
            sampling: self.sampling,
            ignore_eos: false,
            stop: None,
        };
        let plain = generate(self.target, prompt, &opts, |_| Ok(()))?;
        Ok(SameRun { speculative, plain })
    }
}

/// A speculative generation and plain decoding of the same prompt, timed in the same run.
#[derive(Debug, Clone)]
pub struct SameRun {
    pub speculative: SpeculativeOutput,
    pub plain: Generation,
}

impl SameRun {
    /// Speculative decode speed over plain decode speed.
    pub fn speedup(&self) -> f64 {
        self.speculative.decode_tokens_per_s() / self.plain.decode_tokens_per_s().max(1e-9)
    }

    /// Whether both produced the same tokens (always, when greedy; by chance otherwise).
    pub fn same_tokens(&self) -> bool {
        self.speculative.tokens == self.plain.tokens
    }
}

// ANCHOR: verify
/// The modified rejection sampling of Leviathan et al. / Chen et al.: draft token x at
/// position i is kept with probability min(1, p(x) / q(x)); at the first rejection the token
/// is drawn from norm(max(0, p − q)) instead; when all are kept, a bonus token comes from the
/// target's last row. Returns how many drafts were accepted and the target's own next token.
fn verify(rows: &Tensor, proposals: &[Proposal], sampler: &mut Sampler) -> Result<(usize, u32)> {
    for (i, proposal) in proposals.iter().enumerate() {
        let p = sampler.distribution(&rows.i(i)?.to_vec1::<f32>()?, &[])?;
        let x = proposal.token as usize;
        let q_x = proposal.q.as_ref().map_or(1.0, |q| q[x]);
        let accept = p[x] >= q_x || sampler.rng().random::<f32>() < p[x] / q_x;
        if !accept {
            let mut residual: Vec<f32> = match &proposal.q {
                Some(q) => p.iter().zip(q).map(|(p, q)| (p - q).max(0.0)).collect(),
                None => p.clone(),
            };
            if proposal.q.is_none() {
                residual[x] = 0.0;
            }
            // p ≤ q everywhere only when p = q, where a rejection cannot happen; rounding
            // aside, fall back to p.
            let next = if residual.iter().sum::<f32>() > 0.0 {
                sample_from(&residual, sampler.rng())
            } else {
                sample_from(&p, sampler.rng())
            };
            return Ok((i, next));
        }
    }
    let last = rows.i(proposals.len())?.to_vec1::<f32>()?;
    Ok((proposals.len(), sampler.sample(&last, &[])?))
}
// ANCHOR_END: verify

/// The speedup speculative decoding can expect (Leviathan et al. 2023, eq. 1 and thm. 3.8),
/// with acceptance rate `alpha`, `k` drafts per round, a draft token costing `c` target steps
/// and the verification of k + 1 tokens costing `v` target steps:
/// (1 − α^(k+1)) / ((1 − α)(k·c + v)).
///
/// The paper has v = 1: verifying k + 1 tokens costs one step while a step is bound by reading
/// the weights (a GPU at batch size 1). On a CPU, where the arithmetic of a forward grows with
/// its positions, v grows with k; [`super::measure_costs`] measures it.
pub fn expected_speedup(alpha: f64, k: usize, c: f64, v: f64) -> f64 {
    let tokens_per_round = if (1.0 - alpha).abs() < 1e-12 {
        (k + 1) as f64
    } else {
        (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha)
    };
    tokens_per_round / (k as f64 * c + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_speedup_matches_the_paper() {
        // α = 0 with free drafts: one token per round, no gain.
        assert!((expected_speedup(0.0, 4, 0.0, 1.0) - 1.0).abs() < 1e-12);
        // α = 1 with free drafts: k + 1 tokens per round.
        assert!((expected_speedup(1.0, 4, 0.0, 1.0) - 5.0).abs() < 1e-12);
        // Leviathan et al., α = 0.8, γ = 5, c = 0.05: (1 - 0.8^6) / (0.2 · 1.25) ≈ 2.95.
        let paper = (1.0 - 0.8f64.powi(6)) / 0.25;
        assert!((expected_speedup(0.8, 5, 0.05, 1.0) - paper).abs() < 1e-12);
        // A verification that costs two target steps halves the speedup.
        assert!((expected_speedup(1.0, 4, 0.0, 2.0) - 2.5).abs() < 1e-12);
    }

    /// The rejection rule on a four-token vocabulary: whatever q proposes, the first token a
    /// round decides follows p. (A draft far from the target, so a wrong residual would show.)
    #[test]
    fn verification_turns_draws_from_q_into_draws_from_p() {
        let p = [0.1f32, 0.2, 0.3, 0.4];
        let q = vec![0.7f32, 0.1, 0.1, 0.1];
        let logits = p.map(f32::ln);
        let rows = Tensor::new(&[logits, logits], &candle_core::Device::Cpu).unwrap();
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 11,
        };
        let mut sampler = Sampler::new(params).unwrap();
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let token = sample_from(&q, sampler.rng());
            let proposal = Proposal {
                token,
                q: Some(q.clone()),
            };
            let (accepted, next) = verify(&rows, &[proposal], &mut sampler).unwrap();
            counts[if accepted == 1 { token } else { next } as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&p).enumerate() {
            let sd = (n as f64 * p as f64 * (1.0 - p as f64)).sqrt();
            assert!(
                (c as f64 - n as f64 * p as f64).abs() < 5.0 * sd,
                "token {i}: {c} of {n}, expected {}",
                n as f64 * p as f64
            );
        }
    }

    /// Counts against expected probabilities: each within 5 standard deviations.
    fn assert_follows(counts: &[usize], p: &[f32], what: &str) {
        let n: usize = counts.iter().sum();
        for (i, (&c, &p)) in counts.iter().zip(p).enumerate() {
            let mean = n as f64 * p as f64;
            let sd = (mean * (1.0 - p as f64)).sqrt();
            assert!(
                (c as f64 - mean).abs() < 5.0 * sd + 1.0,
                "{what}, token {i}: {c} of {n}, expected {mean:.0} ± {sd:.0}"
            );
        }
    }

    fn sampler(seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed,
        })
        .unwrap()
    }

    /// Prompt lookup proposes a token without a distribution (q is one-hot on it). At T > 0
    /// it is kept with probability p(x), and after a rejection the residual must leave x out:
    /// drawing from p instead would emit x with probability p(x)(2 − p(x)).
    #[test]
    fn a_deterministic_draft_at_temperature_one_still_gives_p() {
        let p = [0.1f32, 0.2, 0.3, 0.4];
        let row = p.map(f32::ln);
        let rows = Tensor::new(&[row, row], &candle_core::Device::Cpu).unwrap();
        let mut sampler = sampler(5);
        let n = 40_000;
        for x in [1u32, 3] {
            let mut counts = [0usize; 4];
            for _ in 0..n {
                let proposal = Proposal { token: x, q: None };
                let (accepted, next) = verify(&rows, &[proposal], &mut sampler).unwrap();
                counts[if accepted == 1 { x } else { next } as usize] += 1;
            }
            assert_follows(&counts, &p, &format!("draft {x}"));
        }
    }

    /// A round with K = 3 drafts from a q unlike p: every token it decides, the corrections
    /// and the bonus token from the last row included, follows that position's p. The rows
    /// differ by position, so a bonus drawn from the wrong row would show.
    #[test]
    fn every_token_a_round_decides_follows_its_row() {
        let ps: [[f32; 4]; 4] = [
            [0.1, 0.2, 0.3, 0.4],
            [0.4, 0.3, 0.2, 0.1],
            [0.25, 0.25, 0.4, 0.1],
            [0.7, 0.1, 0.1, 0.1],
        ];
        let q = vec![0.3f32, 0.3, 0.2, 0.2];
        let rows = Tensor::new(&ps.map(|p| p.map(f32::ln)), &candle_core::Device::Cpu).unwrap();
        let mut sampler = sampler(9);
        let mut counts = [[0usize; 4]; 4];
        for _ in 0..40_000 {
            let proposals: Vec<Proposal> = (0..3)
                .map(|_| Proposal {
                    token: sample_from(&q, sampler.rng()),
                    q: Some(q.clone()),
                })
                .collect();
            let (accepted, next) = verify(&rows, &proposals, &mut sampler).unwrap();
            for (j, p) in proposals[..accepted].iter().enumerate() {
                counts[j][p.token as usize] += 1;
            }
            counts[accepted][next as usize] += 1;
        }
        assert!(counts[3].iter().sum::<usize>() > 1000, "few bonus tokens");
        for (j, (c, p)) in counts.iter().zip(&ps).enumerate() {
            assert_follows(c, p, &format!("position {j}"));
        }
    }

    #[test]
    fn greedy_verification_keeps_drafts_up_to_the_first_disagreement() {
        // Rows: the target's argmax is 1, then 2, then 0.
        let rows = Tensor::new(
            &[[0f32, 5., 0.], [0., 0., 5.], [5., 0., 0.]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut sampler = Sampler::new(SamplingParams::default()).unwrap();
        let deterministic = |t: u32| Proposal { token: t, q: None };
        let (n, next) = verify(&rows, &[deterministic(1), deterministic(0)], &mut sampler).unwrap();
        assert_eq!((n, next), (1, 2));
        let (n, next) = verify(&rows, &[deterministic(1), deterministic(2)], &mut sampler).unwrap();
        assert_eq!(
            (n, next),
            (2, 0),
            "all accepted: the bonus comes from the last row"
        );
    }
}
