//! LoRA fine-tuning: training an adapter on a frozen base model and saving it as peft does.
//!
//! One module per idea: [`config`] the adapter's shape and targets, [`adapter`] its trainable
//! matrices and peft files, [`data`] examples rendered with the chat template and the answer
//! mask, [`loss`] batches and the masked cross-entropy, [`optim`] AdamW with schedule,
//! accumulation and clipping, [`trainer`] the loop with checkpoints, [`base`] the f32 base
//! model (GGUF dequantized), [`heldout`] the before/after test on held-out examples,
//! [`export`] llama.cpp's GGUF adapter and merged models, [`job`] the whole run that the
//! `finetune` command starts, and [`study`] the Short's experiment around it (settings chosen
//! on validation, seeds, few-shot baselines), which `finetune-study` starts.
//! (The frozen weights' gradient-free matmul and llama.cpp's q/k row order live in
//! [`crate::model`], which inference shares.)

pub mod adapter;
pub mod base;
pub mod config;
pub mod data;
pub mod export;
pub mod heldout;
pub mod job;
pub mod loss;
pub mod optim;
pub mod study;
pub mod trainer;
