//! Which models can draft for which: the draft's token ids must mean the target's tokens.

use crate::hub::tokenizer::Tokenizer;
use anyhow::{bail, Result};

/// Zoo pairs (draft → target) that share a tokenizer.
pub const DRAFT_PAIRS: [(&str, &str); 5] = [
    ("tinyllama", "llama-2-7b-chat"),
    ("llama3.2-1b", "llama3.2-3b"),
    ("pythia-160m", "pythia-1b"),
    ("pythia-410m", "pythia-1b"),
    ("smollm2-135m", "smollm2-1.7b"),
];

/// The zoo pairs as "draft → target", for error messages.
fn known_pairs() -> String {
    DRAFT_PAIRS
        .iter()
        .map(|(d, t)| format!("{d} → {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a draft whose output layer is not as wide as the target's: its distributions
/// could not be compared with the target's token by token, even where the tokenizers agree
/// (a vocabulary padded to another multiple, say).
pub fn check_same_vocab_size(
    target_vocab: usize,
    draft_vocab: usize,
    target_name: &str,
    draft_name: &str,
) -> Result<()> {
    if target_vocab != draft_vocab {
        bail!(
            "{draft_name} cannot draft for {target_name}: its output layer scores {draft_vocab} \
             tokens and the target's {target_vocab}, so their distributions cannot be compared \
             token by token. Pick a draft with the target's vocabulary, e.g. {}; or draft \
             without a second model (--draft lookup, --draft layers:N)",
            known_pairs()
        );
    }
    Ok(())
}

/// Refuses a draft whose ids map to other tokens than the target's: its proposals would be
/// verified as different text, so almost none would be accepted (the original demo paired
/// such models and measured a slowdown).
pub fn check_same_vocabulary(
    target: &Tokenizer,
    draft: &Tokenizer,
    target_name: &str,
    draft_name: &str,
) -> Result<()> {
    let pairs = known_pairs();
    let (nt, nd) = (target.vocab_size(), draft.vocab_size());
    if nt != nd {
        bail!(
            "{draft_name} cannot draft for {target_name}: their tokenizers differ ({nd} vs {nt} \
             tokens), so the same id means different text. Pick a draft from the target's \
             family with the same tokenizer, e.g. {pairs}; or draft without a second model \
             (--draft lookup, --draft layers:N)"
        );
    }
    if let Some(id) = (0..nt as u32).find(|&id| target.id_to_token(id) != draft.id_to_token(id)) {
        bail!(
            "{draft_name} cannot draft for {target_name}: token id {id} is {:?} for the draft \
             but {:?} for the target, so the same id means different text. Pick a draft from \
             the target's family with the same tokenizer, e.g. {pairs}; or draft without a \
             second model (--draft lookup, --draft layers:N)",
            draft.id_to_token(id).unwrap_or_default(),
            target.id_to_token(id).unwrap_or_default()
        );
    }
    Ok(())
}
