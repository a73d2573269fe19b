//! The frozen base model a LoRA adapter is trained on, with f32 weights that pass gradients.
//!
//! Quantized matmuls (GGUF blocks, our q4/q8 kernels) record no gradient, so a quantized base
//! such as the SmolLM2 GGUF is trained against its weights dequantized to f32. The adapter then
//! applies to the quantized file at inference: the dequantized values are exactly what its
//! blocks hold, so only the kernels' rounding of activations differs.

use crate::hub::chat_template::ChatTemplate;
use crate::hub::loader::{self, LoadOptions, LoadedModel, ModelSource};
use crate::hub::tokenizer::Tokenizer;
use crate::model::weights::{GgufWeights, Weight, WeightSource};
use crate::model::{Transformer, WeightFormat};
use anyhow::Result;
use candle_core::{DType, Device};
use std::time::Instant;

/// A weight source whose quantized tensors come out dequantized to f32.
pub struct Dequantized<S>(pub S);

impl<S: WeightSource> WeightSource for Dequantized<S> {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight> {
        Ok(Weight::Dense(
            self.0.get(name, dims)?.into_dense(DType::F32)?,
        ))
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    fn describe(&self) -> String {
        format!("{} (dequantized to f32)", self.0.describe())
    }
}

/// Loads `name` (alias, hub id, folder or `.gguf`) for training: f32 weights, none quantized,
/// and the gradient-recording ops switched on.
pub fn load_trainable(name: &str, device: &Device) -> Result<LoadedModel> {
    let start = Instant::now();
    let mut loaded = match ModelSource::resolve(name)? {
        ModelSource::Gguf(path) => {
            let (weights, config) = GgufWeights::open(&path, device)?;
            let tokenizer = Tokenizer::from_gguf(weights.content())
                .map_err(|e| format!("building the tokenizer from {}: {e:#}", path.display()));
            let chat_template = ChatTemplate::from_gguf(weights.content())?;
            let format = WeightFormat {
                dtype: DType::F32,
                quantize: None,
            };
            let model = Transformer::load(&config, &mut Dequantized(weights), format, device)?;
            LoadedModel {
                name: name.to_string(),
                model,
                tokenizer,
                chat_template,
                load_s: 0.0,
            }
        }
        _ => loader::load(
            name,
            &LoadOptions {
                device: device.clone(),
                dtype: DType::F32,
                quantize: None,
                ..LoadOptions::default()
            },
        )?,
    };
    loaded.model.set_training(true);
    loaded.load_s = start.elapsed().as_secs_f64();
    Ok(loaded)
}
