//! The drafters: where the K proposed tokens come from.

use crate::model::generation::Sampler;
use crate::model::Transformer;
use anyhow::Result;
use candle_core::Tensor;

/// One drafted token and the distribution it was drawn from.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub token: u32,
    /// The drafter's probabilities over the vocabulary (shaped by the same temperature and
    /// top-p as the target's); `None` for a deterministic proposal, whose q is one-hot.
    pub q: Option<Vec<f32>>,
}

/// Proposes tokens to follow a context.
pub trait Drafter {
    /// What drafts, for reports.
    fn describe(&self) -> String;

    /// Up to `k` tokens to follow `context` (fewer, or none, when it has nothing to offer).
    /// `target` is the model being decoded (self-drafting runs part of it); `sampler` shapes
    /// and draws the draft distribution.
    fn draft(
        &mut self,
        target: &mut Transformer,
        context: &[u32],
        k: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>>;

    /// Forgets the previous generation (the decoder calls it before each one).
    fn reset(&mut self) {}

    /// Whether a proposal costs next to nothing (a lookup, not a forward), so the decoder may
    /// ask for one even when it will not verify it, to see whether it would have been right.
    fn drafts_for_free(&self) -> bool {
        false
    }

    /// How the last `draft` came by its proposal, for a drafter whose proposals are right at
    /// rates that differ with how they were found (prompt lookup's [`Lead`]): the cost
    /// schedule keeps each situation's acceptance apart. `None`: all proposals are alike.
    fn situation(&self) -> Option<usize> {
        None
    }
}

/// Tokens whose keys and values a drafter's cache holds, so that each round feeds only what
/// is new: the longest common prefix with the context is kept (the cache rolls back to it).
#[derive(Debug, Default)]
struct CachedPrefix(Vec<u32>);

impl CachedPrefix {
    /// How many leading context tokens are cached and still valid; at least the last context
    /// token is always fed again, since its logits are what the first draft needs.
    fn reusable(&self, context: &[u32]) -> usize {
        let common = self
            .0
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count();
        common.min(context.len().saturating_sub(1))
    }
}

/// Runs `step` (one forward returning the last position's logits) over the context from
/// `keep` on (the cache already holds the rest), then over each drafted token but the last,
/// sampling as it goes.
fn draft_autoregressively(
    context: &[u32],
    keep: usize,
    k: usize,
    sampler: &mut Sampler,
    device: &candle_core::Device,
    mut step: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Proposal>> {
    let input = |ids: &[u32]| -> Result<Tensor> { Ok(Tensor::new(ids, device)?.unsqueeze(0)?) };
    let mut logits = step(&input(&context[keep..])?)?;
    let mut proposals = Vec::with_capacity(k);
    for i in 0..k {
        let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let q = sampler.distribution(&row, &[])?;
        let token = sample_from(&q, sampler.rng());
        proposals.push(Proposal { token, q: Some(q) });
        if i + 1 < k {
            logits = step(&input(&[token])?)?;
        }
    }
    Ok(proposals)
}

/// A draw from a probability vector.
pub(crate) fn sample_from(dist: &[f32], rng: &mut impl rand::Rng) -> u32 {
    let total: f32 = dist.iter().sum();
    let mut r = rng.random::<f32>() * total;
    let mut last = 0;
    for (i, &p) in dist.iter().enumerate() {
        if p > 0.0 {
            if r < p {
                return i as u32;
            }
            r -= p;
            last = i;
        }
    }
    last as u32
}

/// A smaller model of the same family, with the same tokenizer, drafting with its own cache.
pub struct DraftModel {
    model: Transformer,
    name: String,
    cached: CachedPrefix,
}

impl DraftModel {
    pub fn new(model: Transformer, name: impl Into<String>) -> Self {
        let mut model = model;
        model.reset_cache();
        Self {
            model,
            name: name.into(),
            cached: CachedPrefix::default(),
        }
    }
}

impl Drafter for DraftModel {
    fn describe(&self) -> String {
        format!("draft model {}", self.name)
    }

    fn reset(&mut self) {
        self.cached = CachedPrefix::default();
        self.model.reset_cache();
    }

    fn draft(
        &mut self,
        _target: &mut Transformer,
        context: &[u32],
        k: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>> {
        // The draft's own context may be shorter than the target's (TinyLlama's 2,048 under
        // Llama 2's 4,096): past it, it has nothing to offer and the target decodes alone.
        let room = self.model.config().max_position_embeddings;
        let k = k.min((room + 1).saturating_sub(context.len()));
        if k == 0 {
            return Ok(Vec::new());
        }
        let keep = self.cached.reusable(context);
        self.model.truncate_cache(keep);
        let device = self.model.device().clone();
        let model = &mut self.model;
        let proposals = draft_autoregressively(context, keep, k, sampler, &device, |ids| {
            model.forward_last(ids)
        })?;
        // The draft's cache now holds the context and every proposal but the last.
        let fed = proposals[..proposals.len() - 1].iter().map(|p| p.token);
        self.cached = CachedPrefix(context.iter().copied().chain(fed).collect());
        Ok(proposals)
    }
}

/// Self-speculative drafting: the target's first `layers` blocks, then its final norm and
/// head. Shallow layers already predict many easy tokens; the draft costs about
/// `layers / num_layers` of a target step and no extra weights. It drafts on the target's own
/// KV cache (those layers' entries for the context are exactly what it would compute) and
/// rolls it back afterwards.
pub struct LayerSkip {
    layers: usize,
}

impl LayerSkip {
    pub fn new(layers: usize) -> Self {
        Self { layers }
    }
}

impl Drafter for LayerSkip {
    fn describe(&self) -> String {
        format!("the target's first {} layers", self.layers)
    }

    fn draft(
        &mut self,
        target: &mut Transformer,
        context: &[u32],
        k: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>> {
        // The target's cache holds every context token but the last.
        let cached = target.cache_len();
        let device = target.device().clone();
        let layers = self.layers;
        let proposals = draft_autoregressively(context, cached, k, sampler, &device, |ids| {
            target.forward_early_exit(ids, layers)
        });
        target.truncate_cache(cached);
        proposals
    }
}

/// Prompt lookup decoding: propose what followed an earlier occurrence of the text just
/// written. Free, and right whenever the output copies the input (edits, summaries, code
/// changes).
///
/// It keeps a cursor into the context where the copied text continues, so that it keeps
/// drafting where a plain n-gram search stops: after the target substitutes a token (a fixed
/// typo), the last tokens occur nowhere earlier, yet the source goes on after the replaced
/// token. Each round:
/// 1. while the tokens decided since the last round matched the source at the cursor, it
///    proposes what follows there;
/// 2. else the latest earlier occurrence of the context's last n tokens (n from `max_ngram`
///    down to `min_ngram`, searching the prompt and the text generated so far) moves the
///    cursor;
/// 3. else, after a substitution, the last token is looked for a few tokens around the cursor
///    (the source may have lost or gained a token there), and failing that the cursor skips
///    the substituted token and proposes from the next.
///
/// Which of these found the proposal is its [`Lead`], and the cost schedule keeps each lead's
/// acceptance apart: a proposal in step with its source is almost always right, a skip past a
/// substitution seldom (once the answer has left the source, every token is a
/// "substitution").
#[derive(Debug, Clone)]
pub struct PromptLookup {
    pub max_ngram: usize,
    /// Shorter matches propose nothing: a single recurring token (a space, "the") is mostly
    /// chance, and each failed proposal costs a wider verification.
    pub min_ngram: usize,
    cursor: Option<Cursor>,
    lead: Option<Lead>,
}

/// How prompt lookup found its last proposal (the steps of [`PromptLookup`]'s doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// The tokens decided since the last round followed the source: it goes on.
    InStep,
    /// The context's last tokens recur earlier: what followed them there.
    Match,
    /// After a substitution, the last token recurs a few tokens from the cursor.
    Resync,
    /// After a substitution and no match: the source past the replaced token.
    Skip,
}

impl Lead {
    /// Every lead, in the order of their numbers (`lead as usize`).
    pub const ALL: [Lead; 4] = [Lead::InStep, Lead::Match, Lead::Resync, Lead::Skip];

    /// What the lead is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Lead::InStep => "in step with the text it copies",
            Lead::Match => "a fresh match of the last tokens",
            Lead::Resync => "a re-synchronisation after an inserted token",
            Lead::Skip => "a guess past a substituted token",
        }
    }
}

/// Where the copied text continues: `context[next]` is the token the source predicts next,
/// as of a context of `seen` tokens.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: usize,
    seen: usize,
}

/// How far from the cursor a lone token may re-synchronise it.
const RESYNC_WINDOW: usize = 4;

impl Default for PromptLookup {
    fn default() -> Self {
        Self::new(2, 3)
    }
}

impl PromptLookup {
    pub fn new(min_ngram: usize, max_ngram: usize) -> Self {
        Self {
            max_ngram,
            min_ngram,
            cursor: None,
            lead: None,
        }
    }

    /// How the last proposal was found; `None` when there was none.
    pub fn lead(&self) -> Option<Lead> {
        self.lead
    }

    /// The tokens that followed the latest earlier match of the longest suffix that recurs.
    pub fn lookup<'c>(&self, context: &'c [u32], k: usize) -> &'c [u32] {
        match self.ngram_match(context) {
            Some(from) => &context[from..(from + k).min(context.len())],
            None => &[],
        }
    }

    /// Where the text after the latest earlier occurrence of the longest recurring suffix
    /// starts.
    fn ngram_match(&self, context: &[u32]) -> Option<usize> {
        let len = context.len();
        for n in (self.min_ngram.max(1)..=self.max_ngram.min(len.saturating_sub(1))).rev() {
            let suffix = &context[len - n..];
            // Latest first: recent text predicts the next tokens best.
            if let Some(start) = (0..len - n).rev().find(|&i| &context[i..i + n] == suffix) {
                return Some(start + n);
            }
        }
        None
    }

    /// Up to `k` tokens to follow `context`, moving the cursor (see the type's doc).
    pub fn propose<'c>(&mut self, context: &'c [u32], k: usize) -> &'c [u32] {
        let len = context.len();
        // Follow the cursor through the tokens decided since the last round.
        let mut in_step = false;
        if let Some(c) = &mut self.cursor {
            if c.seen > len || c.next >= c.seen {
                self.cursor = None;
            } else {
                for &token in &context[c.seen..] {
                    in_step = context[c.next] == token;
                    // A different token replaced the source's: skip it.
                    c.next += 1;
                }
                c.seen = len;
            }
        }
        let found = match self.cursor {
            Some(c) if in_step => Some((c.next, Lead::InStep)),
            _ => self
                .ngram_match(context)
                .map(|from| (from, Lead::Match))
                .or_else(|| {
                    let c = self.cursor?;
                    let last = *context.last()?;
                    let near =
                        c.next.saturating_sub(RESYNC_WINDOW)..(c.next + RESYNC_WINDOW).min(len - 1);
                    near.filter(|&j| context[j] == last)
                        .min_by_key(|&j| j.abs_diff(c.next))
                        .map_or(Some((c.next, Lead::Skip)), |j| Some((j + 1, Lead::Resync)))
                }),
        };
        let Some((from, lead)) = found.filter(|&(f, _)| f < len) else {
            self.cursor = None;
            self.lead = None;
            return &[];
        };
        self.lead = Some(lead);
        self.cursor = Some(Cursor {
            next: from,
            seen: len,
        });
        &context[from..(from + k).min(len)]
    }
}

impl Drafter for PromptLookup {
    fn describe(&self) -> String {
        format!(
            "prompt lookup (n-grams of {} to {})",
            self.min_ngram, self.max_ngram
        )
    }

    fn draft(
        &mut self,
        _target: &mut Transformer,
        context: &[u32],
        k: usize,
        _sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>> {
        Ok(self
            .propose(context, k)
            .iter()
            .map(|&token| Proposal { token, q: None })
            .collect())
    }

    fn reset(&mut self) {
        self.cursor = None;
        self.lead = None;
    }

    fn drafts_for_free(&self) -> bool {
        true
    }

    fn situation(&self) -> Option<usize> {
        self.lead.map(|lead| lead as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_copies_what_followed_the_latest_longest_match() {
        let l = PromptLookup::new(1, 3);
        // The suffix 1 2 3 occurred twice before: the latest one was followed by 7 8 4.
        let ctx = [1, 2, 3, 9, 5, 1, 2, 3, 7, 8, 4, 1, 2, 3];
        assert_eq!(l.lookup(&ctx, 2), &[7, 8]);
        assert_eq!(l.lookup(&ctx, 10), &[7, 8, 4, 1, 2, 3]);
        // Only a 1-gram recurs.
        assert_eq!(l.lookup(&[5, 6, 7, 6], 3), &[7, 6]);
        // Nothing recurs.
        assert!(l.lookup(&[1, 2, 3], 4).is_empty());
        assert!(l.lookup(&[], 4).is_empty());
        // By default a lone recurring token proposes nothing.
        assert!(PromptLookup::default().lookup(&[5, 6, 7, 6], 3).is_empty());
    }

    /// The source is 1..=8, then a separator 0; the answer copies it with changes.
    fn answer(tokens: &[u32]) -> Vec<u32> {
        let mut c: Vec<u32> = (1..=8).chain([0]).collect();
        c.extend(tokens);
        c
    }

    #[test]
    fn lookup_keeps_drafting_after_a_substituted_token() {
        let mut l = PromptLookup::default();
        assert_eq!(l.propose(&answer(&[1, 2]), 3), &[3, 4, 5]);
        assert_eq!(l.lead(), Some(Lead::Match));
        // 3 was accepted, then the target wrote 9 where the source has 4: "3 9" occurs
        // nowhere, but the source goes on after the replaced token.
        assert_eq!(l.propose(&answer(&[1, 2, 3, 9]), 3), &[5, 6, 7]);
        assert_eq!(l.lead(), Some(Lead::Skip));
        // Back in step: the cursor moves on with the answer.
        assert_eq!(l.propose(&answer(&[1, 2, 3, 9, 5, 6]), 3), &[7, 8, 0]);
        assert_eq!(l.lead(), Some(Lead::InStep));
        assert_eq!(l.situation(), Some(Lead::InStep as usize));
        assert!(Lead::ALL
            .iter()
            .enumerate()
            .all(|(i, &lead)| lead as usize == i));
    }

    #[test]
    fn lookup_resynchronises_after_an_inserted_token() {
        let mut l = PromptLookup::default();
        assert_eq!(l.propose(&answer(&[1, 2, 3]), 2), &[4, 5]);
        // The target inserted 99 before 4: the cursor first assumes a substitution ...
        assert_eq!(l.propose(&answer(&[1, 2, 3, 99]), 2), &[5, 6]);
        // ... and when 4 comes, finds it just behind itself.
        assert_eq!(l.propose(&answer(&[1, 2, 3, 99, 4]), 2), &[5, 6]);
        assert_eq!(l.lead(), Some(Lead::Resync));
        // A new generation starts from scratch.
        l.reset();
        assert!(l.propose(&answer(&[7]), 2).is_empty());
        assert_eq!(l.lead(), None);
    }

    #[test]
    fn cached_prefix_keeps_the_common_part_but_refeeds_the_last_token() {
        let c = CachedPrefix(vec![1, 2, 3, 4]);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5]), 4);
        assert_eq!(c.reusable(&[1, 2, 9]), 2);
        assert_eq!(c.reusable(&[1, 2, 3, 4]), 3);
    }
}
