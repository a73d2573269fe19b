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
//! How many tokens a round drafts is a [`KSchedule`]: fixed, Hugging Face's adaptive rule, or
//! chosen each round by a [`CostModel`] from the acceptance and the verification times
//! measured so far (K = 0, a plain step, when drafting does not pay).
//!
//! [`measure_costs`] times a draft step, a target step and a verification of K + 1 tokens, the
//! inputs of [`expected_speedup`]: how a pair is judged when only its architecture is at hand.
//! [`bench`] is Short 6's benchmark: speculative and plain decoding taking turns, with
//! [`hindsight_speedup`], the most a free drafter could give there with K chosen in hindsight.
//!
//! Within the folder: `schedule`, `pairing`, `drafter` and `hindsight` use no other file of it
//! (`hindsight`'s tests drive `drafter`'s prompt lookup), `decoder` uses `drafter` and
//! `schedule`, `costs` uses `decoder` and `pairing`, `job` all of these, and `bench` uses `job`,
//! `decoder`, `costs` and `hindsight`.
//!
//! Uses the model (`Transformer`, its KV cache that truncates in O(1)), the sampler, the
//! tokenizer and the loader, and `eval`'s results files and timing; nothing above them.

pub mod bench;
mod costs;
mod decoder;
mod drafter;
mod hindsight;
pub mod job;
mod pairing;
mod schedule;

pub use costs::{
    measure_costs, measure_forwards, CostSettings, CostedModel, CostsRecord, StepCosts, VerifyCost,
};
pub use decoder::{expected_speedup, SameRun, SpeculativeDecoder, SpeculativeOutput};
pub use drafter::{DraftModel, Drafter, LayerSkip, Lead, PromptLookup, Proposal};
pub use hindsight::{hindsight_rounds, hindsight_speedup};
pub use pairing::{check_same_vocab_size, check_same_vocabulary, DRAFT_PAIRS};
pub use schedule::{CostModel, KSchedule};
