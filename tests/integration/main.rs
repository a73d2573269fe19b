//! Every integration test, in one binary: each file under `tests/` would be a binary of its
//! own, linking candle, polars and parquet again, and linking is most of what `cargo test`
//! spends after the first build. One module per former file; `cargo test --release reference::`
//! runs one of them.
//!
//! The tests of a binary share its process and run on parallel threads, so none may change
//! process-wide state that another reads: the environment (pass settings explicitly, as
//! `HubClient::from_vars` takes them), the current folder, or rayon's global pool (build a pool
//! of your own). A test that needs another environment runs a program, or this binary, as a
//! child process with it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod common;

mod bad_input;
mod chat;
mod convert;
mod finetune;
mod gemma;
mod gguf;
mod hub;
mod humaneval;
mod lora_gguf;
mod mmlu;
mod quantize;
mod reference;
mod sandbox;
mod speculative;
mod tokenizer;
mod workbook;

/// No test changes the process's environment: the tests run on parallel threads of this one
/// process, and `std::env::set_var` while another thread reads a variable is a data race (the
/// reason it is `unsafe` in Rust 2024). Settings are passed explicitly instead.
#[test]
fn no_test_changes_the_process_environment() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    // Spelled in pieces, so that this file does not find itself.
    let calls = [concat!("set", "_var("), concat!("remove", "_var(")];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        for (n, line) in source.lines().enumerate() {
            if calls.iter().any(|c| line.contains(c)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tests that change the environment:\n{}",
        found.join("\n")
    );
}
