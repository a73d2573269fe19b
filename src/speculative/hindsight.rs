//! The ceiling of a free drafter (prompt lookup) on a known answer: the speedup it would give
//! if every round drafted exactly the proposals the target is about to keep.
//!
//! Why: a K schedule can only lose against this. Each round then verifies nothing in vain (K
//! is the number of proposals that match the answer, 0 where the first is wrong, which is a
//! plain step), so what is left between it and plain decoding is the drafter's proposals and
//! the cost of a wider forward. Measured against it, a schedule's shortfall is the schedule's,
//! and a request whose ceiling is low is one the drafter cannot speed up on this machine,
//! whatever the schedule. Drafting, sampling and the decoder's bookkeeping are left out, so a
//! run measures less, unless a schedule happens to steer the drafter's own state (where a
//! lookup copies from) somewhere luckier than the replay's.

use anyhow::Result;

/// Per round, the drafts kept when each round drafts exactly the leading proposals that match
/// `answer`: `propose(context, k)` gives up to `k` proposals to follow `context`, and the
/// decoding starts from `context` (the prompt and the answer's tokens before `answer`, as the
/// prompt's forward gives the first). Every round decides its kept drafts and one token of the
/// target's, so the rounds' `kept + 1` add up to `answer.len()`; a round asks for at most
/// `max_k` and never past the answer's end.
pub fn hindsight_rounds(
    context: &[u32],
    answer: &[u32],
    max_k: usize,
    mut propose: impl FnMut(&[u32], usize) -> Result<Vec<u32>>,
) -> Result<Vec<usize>> {
    let mut context = context.to_vec();
    let mut rounds = Vec::new();
    let mut at = 0;
    while at < answer.len() {
        let k = max_k.min(answer.len() - at - 1);
        let proposals = propose(&context, k)?;
        let kept = proposals
            .iter()
            .take(k)
            .zip(&answer[at..])
            .take_while(|(p, t)| p == t)
            .count();
        context.extend_from_slice(&answer[at..at + kept + 1]);
        at += kept + 1;
        rounds.push(kept);
    }
    Ok(rounds)
}

/// Plain decoding's time over the hindsight rounds' time for the same tokens, given
/// `forward_s[m - 1]`, the time of a forward over `m` tokens (`forward_s[0]` a plain step):
/// a round that keeps `kept` drafts costs a forward over `kept + 1` tokens and decides as many.
/// `None` when a round keeps more drafts than were timed, or there are no rounds.
pub fn hindsight_speedup(rounds: &[usize], forward_s: &[f64]) -> Option<f64> {
    let step = *forward_s.first()?;
    let mut tokens = 0;
    let mut seconds = 0.0;
    for &kept in rounds {
        seconds += forward_s.get(kept)?;
        tokens += kept + 1;
    }
    (tokens > 0).then(|| tokens as f64 * step / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speculative::PromptLookup;

    /// Each round keeps the matching proposals, decides one token more, and never asks past
    /// the answer; the tokens add up to the answer.
    #[test]
    fn rounds_keep_the_matching_proposals_and_one_target_token() {
        // A drafter that always proposes 1, 2, 3, …: right at the start, then wrong.
        let counting = |_: &[u32], k: usize| Ok((1..=k as u32).collect());
        let answer = [1, 2, 9, 1, 2, 3];
        let mut asked = Vec::new();
        let rounds = hindsight_rounds(&[0], &answer, 4, |c, k| {
            asked.push(k);
            counting(c, k)
        })
        .unwrap();
        // Keeps 1, 2, and the target decides 9; then 1, 2 with the target's 3 last: the
        // drafter would also offer the 3, but a round never drafts the answer's last token.
        assert_eq!(rounds, vec![2, 2]);
        assert_eq!(asked, vec![4, 2]);
        assert_eq!(rounds.iter().map(|k| k + 1).sum::<usize>(), answer.len());
    }

    /// Prompt lookup copying its prompt: every round but the last keeps all `max_k`.
    #[test]
    fn lookup_copying_the_prompt_keeps_every_draft() {
        let prompt: Vec<u32> = (10..40).collect();
        let mut lookup = PromptLookup::new(2, 3);
        // The answer repeats the prompt from its third token; the decoding starts with the
        // first two (the prompt's forward gave the second).
        let context: Vec<u32> = prompt.iter().chain(&prompt[..2]).copied().collect();
        let answer = &prompt[2..];
        let rounds = hindsight_rounds(&context, answer, 4, |c, k| {
            Ok(lookup.propose(c, k).to_vec())
        })
        .unwrap();
        assert!(
            rounds[..rounds.len() - 1].iter().all(|&k| k == 4),
            "{rounds:?}"
        );
        assert_eq!(rounds.iter().map(|k| k + 1).sum::<usize>(), answer.len());
    }

    #[test]
    fn the_speedup_is_plain_time_over_the_rounds_time() {
        // A step of 1, a 2-token forward 1.2, a 3-token forward 1.5.
        let forward = [1.0, 1.2, 1.5];
        // 3 + 1 + 2 tokens in 1.5 + 1 + 1.2 against 6 plain steps.
        let s = hindsight_speedup(&[2, 0, 1], &forward).unwrap();
        assert!((s - 6.0 / 3.7).abs() < 1e-12, "{s}");
        // No drafts kept: plain decoding.
        assert_eq!(hindsight_speedup(&[0, 0], &forward), Some(1.0));
        assert_eq!(
            hindsight_speedup(&[3], &forward),
            None,
            "4 tokens were not timed"
        );
        assert_eq!(hindsight_speedup(&[], &forward), None);
    }
}
