//! Adapters for other tools: llama.cpp's GGUF LoRA file, and the base with the adapter merged in.
//!
//! A peft folder is what Python loads; llama.cpp (and so ollama, LM Studio, llama-cpp-python)
//! loads a LoRA adapter as a small GGUF file of its own, the format of llama.cpp's
//! `convert_lora_to_gguf.py`: `general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha`, and per adapted weight two f32 tensors named after it,
//! `blk.N.attn_q.weight.lora_a` (ggml shape `[in, r]`, i.e. peft's `A` as stored) and
//! `.lora_b` (`[r, out]`, peft's `B`). llama.cpp scales by `alpha / r`, so an rsLoRA adapter is
//! written with the alpha that gives its own scale. The rows of `B` for `q`/`k` are written in the
//! GGUF base's row order (see [`crate::model::rope_layout`]), as llama.cpp's converter does.
//!
//! Merging folds `scale · B A` into each adapted weight, so the result runs at the base model's
//! speed with no adapter at all. A safetensors base gives a model folder in the base's dtype. A
//! GGUF base gives a GGUF whose untouched tensors are copied block for block, and whose adapted
//! tensors are dequantized, updated, and quantized again as q8_0 (float tensors keep their type):
//! an adapter's update is often smaller than one step of a 4-bit grid, so quantizing the merged
//! weight back to 4 bits would round much of what training learned away (the reason QLoRA keeps
//! the adapter beside the quantized weight). The adapted tensors grow to 8.5 bits per weight.

use super::adapter::save_safetensors;
use crate::eval::results::write_atomic;
use crate::hub::loader::{folder_weights, ModelSource};
use crate::model::config::Architecture;
use crate::model::lora::LoraAdapter;
use crate::model::rope_layout;
use crate::model::weights::GgufWeights;
use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The adapter's `B` for `module` in the row order of the GGUF base (q/k permuted).
fn gguf_b(
    module: &str,
    b: &Tensor,
    config: &crate::model::config::TransformerConfig,
) -> Result<Tensor> {
    Ok(match rope_layout::permuted_heads(config, module) {
        Some(heads) => rope_layout::to_gguf_rows(b, heads)?,
        None => b.clone(),
    })
}

/// llama.cpp's name of the weight a module adapts (`blk.0.attn_q.weight`).
fn gguf_weight_name(module: &str, architecture: Architecture) -> Result<String> {
    GgufWeights::gguf_name(&format!("{module}.weight"), architecture).with_context(|| {
        format!("{module} has no llama.cpp counterpart: llama.cpp cannot apply this adapter")
    })
}

/// The error for an adapter module the base model lacks.
fn not_in_base(module: &str, base: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the adapter targets {module}, which {} does not have: it was trained for another base \
         model",
        base.display()
    )
}

/// Writes `tensors` and `metadata` as a GGUF file, atomically.
fn write_gguf(
    out: &Path,
    metadata: &[(&str, &gguf_file::Value)],
    tensors: &[(String, QTensor)],
) -> Result<()> {
    write_atomic(out, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        gguf_file::write(&mut f, metadata, &ts)?;
        Ok(())
    })
}

/// Writes `adapter` (a peft adapter for the GGUF `base`) as a llama.cpp GGUF LoRA adapter.
pub fn write_gguf_lora(adapter: &LoraAdapter, base: &Path, out: &Path) -> Result<()> {
    let (weights, config) = GgufWeights::open(base, &Device::Cpu)?;
    let content = weights.content();
    let architecture = content
        .metadata
        .get("general.architecture")
        .cloned()
        .with_context(|| format!("{} has no general.architecture", base.display()))?;
    let mut modules: Vec<&String> = adapter.modules.keys().collect();
    modules.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for module in modules {
        let (a, b) = &adapter.modules[module];
        let name = gguf_weight_name(module, config.architecture)?;
        if !content.tensor_infos.contains_key(&name) {
            return Err(not_in_base(module, base));
        }
        let b = gguf_b(module, b, &config)?;
        let f32 = |t: &Tensor| -> Result<QTensor> {
            Ok(QTensor::quantize(
                &t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
                GgmlDType::F32,
            )?)
        };
        tensors.push((format!("{name}.lora_a"), f32(a)?));
        tensors.push((format!("{name}.lora_b"), f32(&b)?));
    }
    // llama.cpp scales by alpha / r: give it the alpha that reproduces our scale (rsLoRA too).
    let alpha = (adapter.config.scale() * adapter.config.r as f64) as f32;
    let metadata = [
        (
            "general.type",
            gguf_file::Value::String("adapter".to_string()),
        ),
        ("general.architecture", architecture),
        ("adapter.type", gguf_file::Value::String("lora".to_string())),
        ("adapter.lora.alpha", gguf_file::Value::F32(alpha)),
    ];
    let meta: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    write_gguf(out, &meta, &tensors)
}

/// `w + scale · B A` for one weight `(out, in)` in f32.
fn merged(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let delta = (b.matmul(a)? * scale)?;
    Ok((w.to_dtype(DType::F32)? + delta)?)
}

/// The type a merged GGUF tensor is stored in: float types stay, quantized ones become q8_0.
fn merged_type(base: GgmlDType) -> GgmlDType {
    match base {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => base,
        _ => GgmlDType::Q8_0,
    }
}

/// Writes the GGUF `base` with `adapter` folded into its weights (adapted tensors as
/// [`merged_type`] says); all metadata (tokenizer, chat template) is kept.
pub fn merge_into_gguf(adapter: &LoraAdapter, base: &Path, out: &Path) -> Result<()> {
    let (mut weights, config) = GgufWeights::open(base, &Device::Cpu)?;
    let by_weight: HashMap<String, &String> = adapter
        .modules
        .keys()
        .map(|m| Ok((gguf_weight_name(m, config.architecture)?, m)))
        .collect::<Result<_>>()?;
    let content = weights.content();
    let mut missing: Vec<&str> = by_weight
        .iter()
        .filter(|(n, _)| !content.tensor_infos.contains_key(*n))
        .map(|(_, m)| m.as_str())
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(not_in_base(&missing.join(", "), base));
    }
    // The metadata (tokenizer, chat template) as it is, and the tensors in file order.
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|x, y| x.0.cmp(&y.0));
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort_by_key(|n| content.tensor_infos[n].offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let scale = adapter.config.scale();
    for name in names {
        let q = weights.read(&name)?;
        let q = match by_weight.get(&name) {
            None => q,
            Some(module) => {
                let (a, b) = &adapter.modules[*module];
                let b = gguf_b(module, b, &config)?;
                let w = merged(&q.dequantize(&Device::Cpu)?, a, &b, scale)?;
                QTensor::quantize(&w, merged_type(q.dtype()))
                    .with_context(|| format!("quantizing the merged {name} again"))?
            }
        };
        tensors.push((name, q));
    }
    let meta: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    write_gguf(out, &meta, &tensors)
}

/// The files of a model folder that are not weights and belong in a merged copy.
const FOLDER_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
];

/// Writes the safetensors model in `dir` with `adapter` folded in, as a new model folder `out`
/// (`model.safetensors` in the base's dtypes, plus its config and tokenizer files).
pub fn merge_into_folder(adapter: &LoraAdapter, dir: &Path, out: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &folder_weights(dir)? {
        tensors.extend(candle_core::safetensors::load(f, &Device::Cpu)?);
    }
    let scale = adapter.config.scale();
    for (module, (a, b)) in &adapter.modules {
        let key = format!("{module}.weight");
        let w = tensors.get(&key).ok_or_else(|| not_in_base(module, dir))?;
        let m = merged(w, a, b, scale)?.to_dtype(w.dtype())?;
        tensors.insert(key, m);
    }
    let partial = out.with_file_name(format!(
        "{}.partial",
        out.file_name()
            .with_context(|| format!("{} needs a folder name", out.display()))?
            .to_string_lossy()
    ));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    save_safetensors(&tensors, &partial.join("model.safetensors"))?;
    for name in FOLDER_FILES {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, partial.join(name))?;
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))
}

/// Merges `adapter` into the model `base` (a `.gguf`, a folder, or a downloaded hub model) and
/// writes the result to `out`: a `.gguf` for a GGUF base, a model folder otherwise.
pub fn merge(adapter: &LoraAdapter, base: &str, out: &Path) -> Result<()> {
    match ModelSource::resolve(base)? {
        ModelSource::Gguf(path) => merge_into_gguf(adapter, &path, out),
        ModelSource::Folder(dir) => merge_into_folder(adapter, &dir, out),
        ModelSource::Hub { repo, .. } => {
            let config = crate::hub::client::HubClient::from_env()
                .model(&repo)
                .get("config.json")?;
            let dir = config
                .parent()
                .context("the hub cache has no snapshot folder")?;
            merge_into_folder(adapter, dir, out)
        }
    }
}
