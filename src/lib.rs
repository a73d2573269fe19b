//! billion-llm: a workbook about the 1B "sweet spot" of language models.
//!
//! One folder per part, each allowed to use only the parts listed before it (`chat` and `eval`
//! are siblings and never use each other; `kernels` and `report` use nothing of the crate):
//!
//! - [`kernels`]: the CPU loops a forward pass spends its time in, chosen at run time by
//!   instruction set
//! - [`report`]: tables and charts, shown in notebooks and written for the book
//! - [`model`]: the `Transformer` in plain tensor code, its config and weights, LoRA, sampling
//! - [`quantize`]: GGUF files rewritten at fewer bits per weight with llama.cpp's per-tensor
//!   mixes (uses only candle)
//! - [`hub`]: from a name to a loaded model (zoo, hub client, tokenizer, chat template, loader)
//! - [`chat`]: a multi-turn chat session
//! - [`eval`]: MMLU, HumanEval and its sandbox, speed, and the `bench` harness
//! - [`finetune`]: the LoRA trainer (may use `eval` for its results file)
//! - [`speculative`]: the speculative decoder (may use `eval` for its results file)
//! - [`workbook`]: what each Short's notebook and the book show
//!
//! See `docs/architecture.md` for the module map.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod chat;
pub mod eval;
pub mod finetune;
pub mod hub;
pub mod kernels;
pub mod model;
pub mod quantize;
pub mod report;
pub mod speculative;
pub mod workbook;

// Re-exported so that a notebook depends on this crate alone: a notebook's own `:dep polars` would
// build a second copy, whose DataFrames are a different type.
pub use candle_core;
pub use candle_nn;
pub use plotters;
pub use polars;
