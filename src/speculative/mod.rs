//! Speculative decoding: a cheap drafter proposes K tokens, the target model checks all of them
//! in one forward over K + 1 positions, and a rejection rule (Leviathan et al. 2023, Chen et
//! al. 2023) keeps exactly the target's own output distribution. Greedy decoding gives the
//! target's greedy tokens; sampling gives tokens distributed as the target's.
//!
//! Three kinds of [`Drafter`]: a smaller [`DraftModel`] that shares the target's tokenizer,
//! the target's own first layers ([`LayerSkip`], no second model in memory), and
//! [`PromptLookup`], which copies what followed the latest earlier occurrence of the last few
//! tokens (no model at all; strong when the answer repeats the prompt).
//!
//! Uses the model (`Transformer`, its KV cache that truncates in O(1)), the sampler and the
//! tokenizer; nothing above them.

pub mod cli;
mod decoder;
mod drafter;
mod pairing;

pub use decoder::{expected_speedup, KSchedule, SpeculativeDecoder, SpeculativeOutput};
pub use drafter::{DraftModel, Drafter, LayerSkip, PromptLookup, Proposal};
pub use pairing::{check_same_vocabulary, DRAFT_PAIRS};
