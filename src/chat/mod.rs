//! Talking to a model: a multi-turn `ChatSession` through the model's chat template, with its KV
//! cache reused from turn to turn. The terminal around it (line editing, Ctrl-C, `/commands`) is
//! the binary's `src/chat_cli.rs`, so notebooks get the session without a terminal.
//!
//! Uses `model`, `hub` and `report`; never `eval` or `workbook`.

pub mod session;
