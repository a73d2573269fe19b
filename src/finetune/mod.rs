//! LoRA fine-tuning: training an adapter on a frozen base model and saving it as peft does.
//!
//! [`rope_layout`] keeps LoRA matrices in step with llama.cpp's q/k row order on GGUF bases.

pub mod rope_layout;
