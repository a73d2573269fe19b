//! billion-llm: a workbook about the 1B "sweet spot" of language models.

pub mod anatomy;
pub mod assets;
pub mod bench;
pub mod book;

pub use candle_core;
pub use candle_nn;
pub use plotters;
pub use polars;
pub mod chat;
pub mod chat_template;
pub mod comparison;
pub mod config;
pub mod finetune;
pub mod generation;
pub mod hub;
pub mod humaneval;
pub mod loader;
pub mod lora;
pub mod mmlu;
pub mod model;
pub mod next_token;
pub mod parquet_rows;
pub mod published;
pub mod report;
pub mod results;
pub mod sandbox;
pub mod scale;
pub mod speculative;
pub mod speed;
pub mod tokenizer;
pub mod weights;
pub mod zoo;
