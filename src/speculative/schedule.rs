//! How many tokens each round drafts: a fixed K, Hugging Face's heuristic, or the K that the
//! costs measured so far say is fastest.
//!
//! The speedup formula of Leviathan et al. (see [`super::expected_speedup`]) gives the tokens
//! a round yields per unit of time for an acceptance rate α, a draft cost and a verification
//! cost. [`CostModel`] keeps running estimates of all three from the rounds already decoded
//! and picks the K that maximises it, K = 0 (a plain step) included: where drafting does not
//! pay, the decoder falls back to plain decoding instead of paying for rejected drafts.

use serde::{Deserialize, Serialize};

/// How many tokens each round drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KSchedule {
    Fixed(usize),
    /// Hugging Face's heuristic: K grows by 2 after a round whose drafts were all accepted and
    /// shrinks by 1 (to at least 1) after a rejection. It assumes a verification costs about
    /// one step whatever K is, which holds on a GPU but not on a CPU.
    Adaptive {
        start: usize,
        max: usize,
    },
    /// K from 0 to `max`, chosen each round from the measured acceptance rate and costs
    /// ([`CostModel`]).
    Cost {
        max: usize,
    },
}

impl KSchedule {
    /// The K of the first round.
    pub fn start(self) -> usize {
        match self {
            KSchedule::Fixed(k) => k,
            KSchedule::Adaptive { start, .. } => start,
            // Nothing is measured yet: a middling K that tells the cost of drafting.
            KSchedule::Cost { max } => max.min(4),
        }
    }

    /// The largest K the schedule may ask for.
    pub fn max(self) -> usize {
        match self {
            KSchedule::Fixed(k) => k,
            KSchedule::Adaptive { max, .. } | KSchedule::Cost { max } => max,
        }
    }

    /// Hugging Face's update (for `Adaptive`); `Fixed` keeps its K, `Cost` asks its model.
    pub(super) fn next(self, k: usize, all_accepted: bool) -> usize {
        match self {
            KSchedule::Fixed(k) => k,
            KSchedule::Adaptive { max, .. } if all_accepted => (k + 2).min(max),
            KSchedule::Adaptive { .. } => k.saturating_sub(1).max(1),
            KSchedule::Cost { .. } => k,
        }
    }

    /// A short label for tables: "4", "adaptive", "by cost".
    pub fn label(self) -> String {
        match self {
            KSchedule::Fixed(k) => k.to_string(),
            KSchedule::Adaptive { .. } => "adaptive".to_string(),
            KSchedule::Cost { .. } => "by cost".to_string(),
        }
    }
}

/// How much the past weighs: each round multiplies the earlier evidence by this, so the
/// estimates follow the text (a copied passage, then free writing) over ten rounds or so.
const DECAY: f64 = 0.9;

/// A verification of K + 1 tokens is assumed to cost `1 + PRIOR_SLOPE · K` plain steps until
/// two different K have been timed (two AVX2 cores measure about 0.5 on SmolLM2-135M; where a
/// step is bound by reading the weights, as on a GPU, the slope is far smaller).
const PRIOR_SLOPE: f64 = 0.5;

/// Running estimates of what a round costs and yields, and the K they favour.
#[derive(Debug, Clone, Default)]
pub struct CostModel {
    /// Acceptance counts by situation. Drafts come right in stretches (a copied passage, then
    /// the model's own words), so what a round starts from tells much about its drafts. By
    /// default the situation is the last round's outcome: `[0]` after a round that kept all
    /// its drafts, `[1]` after a rejection (after a clean round a lookup is likely still in
    /// step, after a rejection it has to find its place again; Hugging Face's heuristic
    /// follows the same signal with its K ± 1). A drafter that knows how it came by its
    /// proposal names the situation itself instead ([`Self::set_situation`]).
    counts: Vec<PositionCounts>,
    /// Which of `counts` the next round falls under.
    situation: usize,
    /// Whether the drafter names the situations (else they follow the last round's outcome).
    named: bool,
    /// Decayed weighted sums for the least-squares line `seconds = a + b·K` through the timed
    /// verifications (K = 0 for a plain step): Σw, Σw·K, Σw·K², Σw·s, Σw·K·s.
    w: f64,
    wk: f64,
    wkk: f64,
    ws: f64,
    wks: f64,
    /// Decayed drafting seconds and drafted tokens: seconds per drafted token.
    draft_s: f64,
    drafted: f64,
}

/// Per draft position i, decayed counts of the rounds that reached it (drafted it with every
/// draft before it kept) and of those that kept it: their ratio is the acceptance rate at i
/// given that the round got there. A lookup's first draft is often wrong where the following
/// ones, once the copy is in step, are almost always right; one rate for all positions would
/// hide that.
#[derive(Debug, Clone, Default)]
struct PositionCounts {
    reached: Vec<f64>,
    kept: Vec<f64>,
}

impl PositionCounts {
    /// Decayed (kept, reached) summed over the positions.
    fn totals(&self) -> (f64, f64) {
        (self.kept.iter().sum(), self.reached.iter().sum())
    }
}

impl CostModel {
    /// The acceptance rate over all positions and rounds so far, with one kept and one
    /// rejected draft of prior.
    pub fn acceptance(&self) -> f64 {
        let (kept, reached) = self
            .counts
            .iter()
            .map(PositionCounts::totals)
            .fold((0.0, 0.0), |(k, r), (k1, r1)| (k + k1, r + r1));
        (kept + 1.0) / (reached + 2.0)
    }

    /// The acceptance rate at draft position `i` of the next round, given that it gets there:
    /// the counts there in the round's situation, with one round's worth of prior at that
    /// situation's rate over all positions (itself with two drafts' worth at
    /// [`Self::acceptance`]), so that a position seldom reached counts as an average one, not
    /// as a sure one (the end of a copied passage is where long drafts fail).
    pub fn acceptance_at(&self, i: usize) -> f64 {
        let none = PositionCounts::default();
        let counts = self.counts.get(self.situation).unwrap_or(&none);
        let (all_kept, all_reached) = counts.totals();
        let rate = (all_kept + 2.0 * self.acceptance()) / (all_reached + 2.0);
        let (kept, reached) = (
            counts.kept.get(i).copied().unwrap_or(0.0),
            counts.reached.get(i).copied().unwrap_or(0.0),
        );
        (kept + rate) / (reached + 1.0)
    }

    /// Records a round's outcome: the first `accepted` of `drafted` drafts kept.
    pub fn record_acceptance(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        if self.counts.len() <= self.situation {
            self.counts
                .resize(self.situation + 1, PositionCounts::default());
        }
        let counts = &mut self.counts[self.situation];
        let reached = (accepted + 1).min(drafted);
        if counts.reached.len() < drafted {
            counts.reached.resize(drafted, 0.0);
            counts.kept.resize(drafted, 0.0);
        }
        for i in 0..counts.reached.len() {
            counts.reached[i] = DECAY * counts.reached[i] + f64::from(u8::from(i < reached));
            counts.kept[i] = DECAY * counts.kept[i] + f64::from(u8::from(i < accepted));
        }
        if !self.named {
            self.situation = usize::from(accepted < drafted);
        }
    }

    /// The situation of the next round as the drafter names it (prompt lookup: in step with
    /// its source, a fresh match, a guess past a substitution): from now on the acceptance is
    /// counted, and K chosen, per named situation rather than after the last round's outcome.
    pub fn set_situation(&mut self, situation: usize) {
        self.named = true;
        self.situation = situation;
    }

    /// New tokens a round drafting `k` yields on average: the target's own token, plus draft
    /// i whenever drafts 0..=i are all kept.
    pub fn expected_tokens(&self, k: usize) -> f64 {
        let mut all_kept = 1.0;
        let mut tokens = 1.0;
        for i in 0..k {
            all_kept *= self.acceptance_at(i);
            tokens += all_kept;
        }
        tokens
    }

    /// Records the time of a target forward over `k` drafts plus the pending token.
    pub fn record_verification(&mut self, k: usize, seconds: f64) {
        let k = k as f64;
        self.w = DECAY * self.w + 1.0;
        self.wk = DECAY * self.wk + k;
        self.wkk = DECAY * self.wkk + k * k;
        self.ws = DECAY * self.ws + seconds;
        self.wks = DECAY * self.wks + k * seconds;
    }

    /// Records the time a drafter took for `tokens` proposals.
    pub fn record_drafting(&mut self, tokens: usize, seconds: f64) {
        self.draft_s = DECAY * self.draft_s + seconds;
        self.drafted = DECAY * self.drafted + tokens as f64;
    }

    /// The fitted verification cost `(a, b)`: `a + b·K` seconds for K drafts, or `None`
    /// before anything is timed.
    pub fn verification_line(&self) -> Option<(f64, f64)> {
        if self.w <= 0.0 {
            return None;
        }
        let mean_k = self.wk / self.w;
        let mean_s = self.ws / self.w;
        let var_k = self.wkk / self.w - mean_k * mean_k;
        // Fewer than two distinct K (or nearly so): scale the prior line through the mean.
        if var_k < 0.1 {
            let a = mean_s / (1.0 + PRIOR_SLOPE * mean_k);
            return Some((a, PRIOR_SLOPE * a));
        }
        let b = (self.wks / self.w - mean_k * mean_s) / var_k;
        // Noise can tilt the line the wrong way; a verification never costs less with more
        // tokens.
        let b = b.max(0.0);
        let a = (mean_s - b * mean_k).max(1e-9);
        Some((a, b))
    }

    /// Seconds per drafted token (0 before any drafting is timed).
    pub fn draft_token_s(&self) -> f64 {
        if self.drafted > 0.0 {
            self.draft_s / self.drafted
        } else {
            0.0
        }
    }

    /// Expected new tokens per second of a round drafting `k` tokens, in the units of the
    /// fitted line; `None` before any verification is timed.
    pub fn tokens_per_second(&self, k: usize) -> Option<f64> {
        let (a, b) = self.verification_line()?;
        let tokens = self.expected_tokens(k);
        let seconds = a + (b + self.draft_token_s()) * k as f64;
        Some(tokens / seconds)
    }

    /// Whether drafting some K in `1..=max` could beat a plain step if every draft were
    /// accepted; once the costs say no (a draft as dear as a layer-skipping one here), there
    /// is nothing left to find out by trying.
    pub fn could_pay(&self, max: usize) -> bool {
        let Some((a, b)) = self.verification_line() else {
            return true;
        };
        let c = self.draft_token_s();
        (1..=max).any(|k| (k + 1) as f64 / (a + (b + c) * k as f64) > 1.0 / a)
    }

    /// The K in `0..=max` with the most expected tokens per second; `start` until a
    /// verification has been timed.
    pub fn best_k(&self, max: usize, start: usize) -> usize {
        (0..=max)
            .map(|k| (k, self.tokens_per_second(k)))
            .fold(None, |best: Option<(usize, f64)>, (k, rate)| {
                match (best, rate) {
                    (_, None) => best,
                    (Some((_, top)), Some(r)) if r <= top => best,
                    (_, Some(r)) => Some((k, r)),
                }
            })
            .map_or(start.min(max), |(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_k_grows_after_full_acceptance_and_shrinks_after_rejection() {
        let s = KSchedule::Adaptive { start: 4, max: 10 };
        assert_eq!(s.next(4, true), 6);
        assert_eq!(s.next(10, true), 10);
        assert_eq!(s.next(4, false), 3);
        assert_eq!(s.next(1, false), 1);
        assert_eq!(KSchedule::Fixed(4).next(4, false), 4);
    }

    /// A model fed rounds timed as `step · (1 + slope · K)`, with acceptance rate `alpha`.
    fn fed(slope: f64, alpha: f64, draft_step: f64) -> CostModel {
        let mut m = CostModel::default();
        for round in 0..40 {
            let k = [1, 2, 4, 8][round % 4];
            m.record_verification(k, 0.004 * (1.0 + slope * k as f64));
            m.record_drafting(k, draft_step * k as f64);
        }
        // Rounds of 8 drafts, each kept with probability alpha, in expectation, whatever the
        // round before did.
        let reached: Vec<f64> = (0..8).map(|i| 1000.0 * alpha.powi(i)).collect();
        let kept: Vec<f64> = reached.iter().map(|r| r * alpha).collect();
        m.counts = vec![PositionCounts { reached, kept }; 2];
        m
    }

    #[test]
    fn the_fitted_line_recovers_the_costs() {
        let m = fed(0.6, 0.5, 0.0);
        let (a, b) = m.verification_line().unwrap();
        assert!((a - 0.004).abs() < 1e-9, "{a}");
        assert!((b - 0.0024).abs() < 1e-9, "{b}");
        // One K only: the prior slope through the measured point.
        let mut one = CostModel::default();
        one.record_verification(4, 0.003);
        let (a, b) = one.verification_line().unwrap();
        assert!((a + 4.0 * b - 0.003).abs() < 1e-12 && (b / a - PRIOR_SLOPE).abs() < 1e-12);
        assert_eq!(CostModel::default().best_k(8, 3), 3, "nothing measured yet");
    }

    /// A drafter that names its situations gets each one's acceptance: rounds in step with
    /// the source draft long, guesses none, whatever the last round did.
    #[test]
    fn named_situations_keep_their_own_acceptance() {
        let mut m = fed(0.5, 0.5, 0.0);
        m.counts.clear();
        for round in 0..200 {
            let (situation, accepted) = if round % 3 == 0 { (1, 0) } else { (0, 8) };
            m.set_situation(situation);
            m.record_acceptance(8, accepted);
        }
        m.set_situation(0);
        assert!(m.acceptance_at(0) > 0.95, "{}", m.acceptance_at(0));
        assert_eq!(m.best_k(8, 1), 8);
        m.set_situation(1);
        assert!(m.acceptance_at(0) < 0.05, "{}", m.acceptance_at(0));
        assert_eq!(m.best_k(8, 1), 0);
        // A rejection does not move a named situation (unnamed, the next round would fall
        // under "after a rejection").
        m.set_situation(0);
        m.record_acceptance(8, 0);
        assert!(m.acceptance_at(0) > 0.8, "{}", m.acceptance_at(0));
    }

    #[test]
    fn k_follows_acceptance_and_costs() {
        // The acceptance estimate is kept / reached, over recent rounds.
        let mut m = CostModel::default();
        for _ in 0..200 {
            m.record_acceptance(4, 3);
        }
        assert!((m.acceptance() - 0.75).abs() < 0.02, "{}", m.acceptance());
        // A lookup's pattern: the first draft often wrong, the rest right once it is kept,
        // with rejections and clean rounds in runs (here 5 of each).
        let mut m = CostModel::default();
        for round in 0..200 {
            m.record_acceptance(4, if round % 10 < 5 { 0 } else { 4 });
        }
        // The last round kept everything: the next most likely does too ...
        assert!(m.acceptance_at(0) > 0.7, "{}", m.acceptance_at(0));
        assert!(m.acceptance_at(1) > 0.85, "{}", m.acceptance_at(1));
        let after_clean = m.expected_tokens(4);
        // ... while after a rejection the first draft is likely wrong again.
        m.record_acceptance(4, 0);
        assert!(m.acceptance_at(0) < 0.3, "{}", m.acceptance_at(0));
        assert!(m.expected_tokens(4) < after_clean - 1.0);
        // A position never reached counts at the rate of its rounds over all positions.
        let mut m = CostModel::default();
        for _ in 0..200 {
            m.record_acceptance(2, 1);
        }
        let (kept, reached) = m.counts[1].totals();
        let rate = (kept + 2.0 * m.acceptance()) / (reached + 2.0);
        assert!((m.acceptance_at(6) - rate).abs() < 1e-12);
        assert!(m.acceptance_at(0) > 0.9, "{}", m.acceptance_at(0));
        assert!(m.acceptance_at(1) < 0.1, "{}", m.acceptance_at(1));
        // Cheap verification (a GPU) and a good drafter: the longest K.
        assert_eq!(fed(0.05, 0.9, 0.0).best_k(8, 1), 8);
        // Verification as dear as on this CPU: a shorter K, still above 0 at high acceptance.
        let k = fed(0.6, 0.95, 0.0).best_k(8, 1);
        assert!((1..8).contains(&k), "{k}");
        // A drafter that is rarely right: plain decoding.
        assert_eq!(fed(0.6, 0.2, 0.0).best_k(8, 1), 0);
        // A draft model costing a quarter of a step per token: not worth it at α = 0.8 ...
        assert_eq!(fed(0.6, 0.8, 0.001).best_k(8, 1), 0);
        assert!(
            fed(0.6, 0.8, 0.001).could_pay(8),
            "... but it might be at α = 1"
        );
        // Four fifths of a step per draft (24 of 30 layers): never, whatever the acceptance.
        assert!(!fed(0.6, 0.8, 0.0032).could_pay(8));
    }
}
