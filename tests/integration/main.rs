//! Every integration test, in one binary: each file under `tests/` would be a binary of its
//! own, linking candle, polars and parquet again, and linking is most of what `cargo test`
//! spends after the first build. One module per former file; `cargo test --release reference::`
//! runs one of them.
//!
//! The tests of a binary share its process and run on parallel threads, so none may change
//! process-wide state that another reads: the environment (pass settings explicitly), the
//! current folder, or rayon's global pool (build a pool of your own). A test that needs another
//! environment runs a program, or this binary, as a child process with it.

mod common;

mod bad_input;
mod chat;
mod finetune;
mod gguf;
mod hub;
mod humaneval;
mod lora_gguf;
mod mmlu;
mod reference;
mod sandbox;
mod speculative;
mod tokenizer;
mod workbook;
