//! Measuring models: MMLU 5-shot, HumanEval with its sandbox (completion and chat formats,
//! pass@k by sampling), decode and prefill speed beside llama.cpp, and `bench`, which runs them
//! all under one harness into `results/bench-*.json`; `memory` reads a run's peak memory and
//! `results` writes the files.
//!
//! Uses `model`, `hub` and `report`; never `chat` or `workbook` (the workbook reads the results
//! back in `workbook::comparison`).

pub mod bench;
pub mod humaneval;
pub mod humaneval_chat;
pub mod memory;
pub mod mmlu;
pub mod parquet_rows;
pub mod results;
pub mod sandbox;
pub mod speed;
