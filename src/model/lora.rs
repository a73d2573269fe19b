//! LoRA adapters in the format peft saves (`adapter_config.json` + `adapter_model.safetensors`).

use crate::model::rope_layout;
use crate::model::{Lora, Transformer};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The parts of peft's `adapter_config.json` that change the arithmetic.
#[derive(Debug, Clone, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_dora: bool,
}

fn no_bias() -> String {
    "none".into()
}

/// peft accepts a list of module names or a single regex string.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
    #[default]
    Unset,
}

impl LoraConfig {
    /// The factor applied to `B A x`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// A loaded adapter: per module name, its `A` and `B` matrices.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// Keyed by the Hugging Face module name (`model.layers.0.self_attn.q_proj`).
    pub modules: HashMap<String, (Tensor, Tensor)>,
}

impl LoraAdapter {
    /// Reads an adapter folder written by peft's `save_pretrained`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "cannot read {}: --adapter expects a folder saved by peft \
                 (adapter_config.json + adapter_model.safetensors)",
                cfg_path.display()
            )
        })?;
        let config: LoraConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a peft LoRA config", cfg_path.display()))?;
        if config.fan_in_fan_out {
            bail!("adapters with fan_in_fan_out (GPT-2 style Conv1D) are not supported");
        }
        if config.bias != "none" {
            bail!(
                "adapters that train biases (bias = {:?}) are not supported",
                config.bias
            );
        }
        if config.use_dora {
            bail!("DoRA adapters are not supported, only plain LoRA");
        }
        let weights_path = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, device).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}. Is the adapter complete?",
                weights_path.display()
            )
        })?;
        let mut parts: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (key, t) in tensors {
            // peft saves `base_model.model.<module>.lora_A.weight` (the adapter name dropped).
            let key = key.strip_prefix("base_model.model.").unwrap_or(&key);
            let t = t.to_dtype(DType::F32)?;
            if let Some(module) = key.strip_suffix(".lora_A.weight") {
                parts.entry(module.to_string()).or_default().0 = Some(t);
            } else if let Some(module) = key.strip_suffix(".lora_B.weight") {
                parts.entry(module.to_string()).or_default().1 = Some(t);
            } else {
                bail!("unexpected tensor {key} in {}", weights_path.display());
            }
        }
        let mut modules = HashMap::new();
        for (module, (a, b)) in parts {
            match (a, b) {
                (Some(a), Some(b)) => {
                    modules.insert(module, (a, b));
                }
                _ => bail!("{module} has only one of lora_A / lora_B in the adapter"),
            }
        }
        Ok(Self { config, modules })
    }

    /// Attaches the adapter to `model`. Every adapter module must exist in the model with
    /// matching shapes, which catches an adapter trained for a different base model.
    pub fn apply(&self, model: &mut Transformer) -> Result<()> {
        let scale = self.config.scale();
        let config = model.config().clone();
        let mut remaining: Vec<&String> = self.modules.keys().collect();
        for linear in model.linears_mut() {
            let Some((a, b)) = self.modules.get(&linear.name) else {
                continue;
            };
            remaining.retain(|m| *m != &linear.name);
            let (r, inp) = a.dims2()?;
            let (out, rb) = b.dims2()?;
            let expected_out = linear.base.out_features();
            if r != rb || out != expected_out {
                bail!(
                    "adapter shapes for {} (A {:?}, B {:?}) do not fit the layer ({expected_out} outputs, {inp} inputs?): \
                     was the adapter trained on another base model?",
                    linear.name,
                    a.dims(),
                    b.dims()
                );
            }
            // On a GGUF llama, q/k rows are in llama.cpp's order: B's rows must follow.
            let b = match rope_layout::permuted_heads(&config, &linear.name) {
                Some(heads) => rope_layout::to_gguf_rows(b, heads)?,
                None => b.clone(),
            };
            linear.lora = Some(Lora {
                a: a.clone(),
                b,
                scale,
                dropout: 0.0,
                dropout_rng: None,
            });
        }
        if !remaining.is_empty() {
            remaining.sort();
            bail!(
                "the adapter targets modules this model does not have ({}): \
                 it was trained for a different base model",
                remaining
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}
