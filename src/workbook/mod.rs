//! What the notebooks show and the book includes, one module per Short: `scale` (Short 1),
//! `anatomy` and `next_token` (Short 2), `comparison` (Short 3, from `results/`), `finetuning`
//! (Short 5, from `results/`), `speculative` (Short 6, from `results/`), the published
//! figures they are set beside, and `book`, which writes every generated file of the book.
//!
//! The top of the crate: it may use every other part, and no part uses it.

pub mod anatomy;
pub mod book;
pub mod comparison;
pub mod finetuning;
pub mod next_token;
pub mod published;
pub mod scale;
pub mod speculative;
