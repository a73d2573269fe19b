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
//! [`measure_costs`] times a draft step, a target step and a verification of K + 1 tokens, the
//! inputs of [`expected_speedup`]: how a pair is judged when only its architecture is at hand.
//!
//! Uses the model (`Transformer`, its KV cache that truncates in O(1)), the sampler, the
//! tokenizer and the loader, and `eval`'s results files and timing; nothing above them.

mod costs;
mod decoder;
mod drafter;
pub mod job;
mod pairing;

pub use costs::{measure_costs, CostSettings, CostedModel, CostsRecord, StepCosts, VerifyCost};
pub use decoder::{expected_speedup, KSchedule, SameRun, SpeculativeDecoder, SpeculativeOutput};
pub use drafter::{DraftModel, Drafter, LayerSkip, PromptLookup, Proposal};
pub use pairing::{check_same_vocabulary, DRAFT_PAIRS};
