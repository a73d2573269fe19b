//! The drafters: where the K proposed tokens come from.

use crate::model::generation::Sampler;
use crate::model::kv_cache::KvCache;
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
/// `keep` on (the cache already holds the rest), then over each drafted token, sampling as it
/// goes.
fn draft_autoregressively(
    cached: &mut CachedPrefix,
    context: &[u32],
    keep: usize,
    k: usize,
    sampler: &mut Sampler,
    device: &candle_core::Device,
    mut step: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Proposal>> {
    let input = |ids: &[u32]| -> Result<Tensor> { Ok(Tensor::new(ids, device)?.unsqueeze(0)?) };
    let mut logits = step(&input(&context[keep..])?)?;
    let mut fed = context.to_vec();
    let mut proposals = Vec::with_capacity(k);
    for i in 0..k {
        let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let q = sampler.distribution(&row, &[])?;
        let token = sample_from(&q, sampler.rng());
        proposals.push(Proposal { token, q: Some(q) });
        if i + 1 < k {
            logits = step(&input(&[token])?)?;
            fed.push(token);
        }
    }
    cached.0 = fed;
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

    fn draft(
        &mut self,
        _target: &mut Transformer,
        context: &[u32],
        k: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>> {
        let keep = self.cached.reusable(context);
        self.model.truncate_cache(keep);
        let device = self.model.device().clone();
        let model = &mut self.model;
        draft_autoregressively(
            &mut self.cached,
            context,
            keep,
            k,
            sampler,
            &device,
            |ids| model.forward_last(ids),
        )
    }
}

/// Self-speculative drafting: the target's first `layers` blocks, then its final norm and
/// head. Shallow layers already predict many easy tokens; the draft costs about
/// `layers / num_layers` of a target step and no extra weights.
pub struct LayerSkip {
    caches: Vec<KvCache>,
    cached: CachedPrefix,
}

impl LayerSkip {
    pub fn new(layers: usize) -> Self {
        Self {
            caches: vec![KvCache::default(); layers],
            cached: CachedPrefix::default(),
        }
    }
}

impl Drafter for LayerSkip {
    fn describe(&self) -> String {
        format!("the target's first {} layers", self.caches.len())
    }

    fn draft(
        &mut self,
        target: &mut Transformer,
        context: &[u32],
        k: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Proposal>> {
        let keep = self.cached.reusable(context);
        for c in &mut self.caches {
            c.truncate(keep);
        }
        let device = target.device().clone();
        let caches = &mut self.caches;
        draft_autoregressively(
            &mut self.cached,
            context,
            keep,
            k,
            sampler,
            &device,
            |ids| target.forward_early_exit(ids, caches),
        )
    }
}

/// Prompt lookup decoding: find the latest earlier occurrence of the context's last n tokens
/// (n from `max_ngram` down to `min_ngram`) and propose what followed it. Free, and right
/// whenever the output copies the input (edits, summaries, code changes).
pub struct PromptLookup {
    pub max_ngram: usize,
    /// Shorter matches propose nothing: a single recurring token (a space, "the") is mostly
    /// chance, and each failed proposal costs a wider verification.
    pub min_ngram: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        Self {
            max_ngram: 3,
            min_ngram: 2,
        }
    }
}

impl PromptLookup {
    /// The tokens that followed the latest earlier match of the longest suffix that recurs.
    pub fn lookup<'c>(&self, context: &'c [u32], k: usize) -> &'c [u32] {
        let len = context.len();
        for n in (self.min_ngram..=self.max_ngram.min(len.saturating_sub(1))).rev() {
            let suffix = &context[len - n..];
            // Latest first: recent text predicts the next tokens best.
            if let Some(start) = (0..len - n).rev().find(|&i| &context[i..i + n] == suffix) {
                let from = start + n;
                return &context[from..(from + k).min(len)];
            }
        }
        &[]
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
            .lookup(context, k)
            .iter()
            .map(|&token| Proposal { token, q: None })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_copies_what_followed_the_latest_longest_match() {
        let l = PromptLookup {
            max_ngram: 3,
            min_ngram: 1,
        };
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

    #[test]
    fn cached_prefix_keeps_the_common_part_but_refeeds_the_last_token() {
        let c = CachedPrefix(vec![1, 2, 3, 4]);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5]), 4);
        assert_eq!(c.reusable(&[1, 2, 9]), 2);
        assert_eq!(c.reusable(&[1, 2, 3, 4]), 3);
    }
}
