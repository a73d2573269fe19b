//! Measuring models: MMLU 5-shot, HumanEval with its sandbox (completion and chat formats,
//! pass@k by sampling), decode and prefill speed beside llama.cpp, and `bench`, which runs them
//! all under one harness into `results/bench-*.json`; `memory` reads a run's peak memory and
//! `results` writes the files.
//!
//! `quant_eval` scores a quantized model against its full-precision reference (KL divergence);
//! `quant_study` runs it, with speed beside llama.cpp, over every file type (Short 7);
//! `quant_1b` measures what each file type weighs in memory and decodes at on the four 1B
//! architectures.
//!
//! Uses `model`, `hub`, `quantize` and `report`; never `chat` or `workbook` (the workbook reads the results
//! back in `workbook::comparison`).

pub mod bench;
pub mod humaneval;
pub mod humaneval_chat;
pub mod memory;
pub mod mmlu;
pub mod parquet_rows;
pub mod quant_1b;
pub mod quant_eval;
pub mod quant_study;
pub mod results;
pub mod sandbox;
pub mod speed;
