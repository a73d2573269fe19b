//! LoRA fine-tuning: training an adapter on a frozen base model and saving it as peft does.
//!
//! One module per idea: [`config`] the adapter's shape and targets, [`adapter`] its trainable
//! matrices and peft files, [`data`] examples rendered with the chat template and the answer
//! mask, [`loss`] batches and the masked cross-entropy, [`optim`] AdamW with schedule,
//! accumulation and clipping, [`trainer`] the loop with checkpoints, [`base`] the f32 base
//! model (GGUF dequantized), [`frozen_matmul`] products that skip the frozen weights'
//! gradients, [`rope_layout`] llama.cpp's q/k row order on GGUF bases, and [`cli`] the
//! `finetune` command.

pub mod adapter;
pub mod base;
pub mod cli;
pub mod config;
pub mod data;
pub mod loss;
pub mod optim;
pub mod trainer;
