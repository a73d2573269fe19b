//! What each file type does to the four 1B models on this machine, measured: the memory a run
//! takes and how fast it decodes and prefills, at every type of [`FileType::ALL`].
//!
//! No download is needed. Cost per token depends on the architecture and on each tensor's
//! format, not on the values, so each model is built from its hub config with random weights,
//! every matrix in the format llama.cpp's mix gives it for the type ([`MixedRandomWeights`]):
//! the same layout a GGUF file of that type loads into.
//!
//! Memory is the process's peak resident set while the model decodes a short prompt. What a
//! 2,048-token context adds (its KV cache and the prefill's activations) is measured once per
//! model, on one type, by prefilling 2,047 tokens, and added to every type's peak: it depends
//! on the architecture, not on the weights' format.

use crate::eval::memory::{peak_rss_bytes, reset_peak_rss};
use crate::eval::quant_study::{mix_plan, planned_size};
use crate::eval::results::RunHeader;
use crate::eval::speed::{measure_ours, prompt_ids, EngineSpeed, SpeedSettings};
use crate::kernels::packed::PackedMatrix;
use crate::model::config::TransformerConfig;
use crate::model::weights::{GgufWeights, RandomWeights, Weight, WeightSource};
use crate::model::{Transformer, WeightFormat};
use crate::quantize::FileType;
use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Random weights (as [`RandomWeights`] draws them) with each matrix stored in the format a file
/// type's mix gives it: the model a GGUF file of that type would load into, without the file.
pub struct MixedRandomWeights {
    random: RandomWeights,
    architecture: crate::model::config::Architecture,
    /// GGUF tensor name → format, for every tensor of the mix (norms f32).
    formats: HashMap<String, GgmlDType>,
}

impl MixedRandomWeights {
    pub fn new(config: &TransformerConfig, file_type: FileType, seed: u64) -> Self {
        let formats = mix_plan(config, file_type)
            .into_iter()
            .map(|(name, _, t)| (name, t))
            .collect();
        Self {
            random: RandomWeights::new(seed, DType::F32, &Device::Cpu),
            architecture: config.architecture,
            formats,
        }
    }

    /// The format the mix gives the Hugging Face tensor `name` (shape `dims`); `None` for what
    /// stays f32. A matrix the mix does not know is an error, not a silent f32.
    fn format(&self, name: &str, dims: &[usize]) -> Result<Option<GgmlDType>> {
        let planned = GgufWeights::gguf_name(name, self.architecture)
            .and_then(|g| self.formats.get(&g).copied());
        match planned {
            None if dims.len() == 2 => bail!(
                "{name}: no tensor of llama.cpp's mix corresponds to this matrix \
                 (eval::quant_study::gguf_tensors does not list it for this architecture)"
            ),
            Some(GgmlDType::F32) | None => Ok(None),
            Some(t) => Ok(Some(t)),
        }
    }
}

impl WeightSource for MixedRandomWeights {
    /// Norms, biases and f32 matrices as plain tensors; other matrices in their format, as a
    /// GGUF file stores them (the builder runs those our kernel lacks on candle's matmul).
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight> {
        let format = self.format(name, dims)?;
        let weight = self.random.get(name, dims)?;
        let (Some(dtype), Weight::Dense(t)) = (format, &weight) else {
            return Ok(weight);
        };
        Ok(Weight::Quantized(Arc::new(QTensor::quantize(t, dtype)?)))
    }

    fn contains(&self, name: &str) -> bool {
        self.random.contains(name)
    }

    fn describe(&self) -> String {
        "random weights in a file type's mix".to_string()
    }

    /// A matrix our kernel runs, made a slice of rows at a time (never whole in f32), as a GGUF
    /// file's stored blocks are read.
    fn stored_matrix(&mut self, name: &str, dims: &[usize]) -> Result<Option<PackedMatrix>> {
        match self.format(name, dims)? {
            Some(dtype) if PackedMatrix::handles(dtype) && crate::kernels::isa::simd() => {
                self.random.quantized_matrix(name, dims, dtype)
            }
            _ => Ok(None),
        }
    }
}

/// Builds `config` with random weights in file type `t`'s mix, as a GGUF file of that type
/// loads: matrices in their stored formats, activations in f32.
pub fn build_in_mix(config: &TransformerConfig, t: FileType, seed: u64) -> Result<Transformer> {
    let mut src = MixedRandomWeights::new(config, t, seed);
    let format = WeightFormat {
        dtype: DType::F32,
        quantize: None,
    };
    Transformer::load(config, &mut src, format, &Device::Cpu)
}

/// How the measurement runs.
#[derive(Clone, Debug, Serialize)]
pub struct OneBSettings {
    pub types: Vec<FileType>,
    /// Prompt, new tokens, runs and threads of each type's speed measurement.
    pub speed: SpeedSettings,
    /// The context whose memory is measured once per model (prompt `context - 1`, one token out).
    pub context: usize,
    /// The type that long prefill runs on.
    pub context_type: FileType,
    pub seed: u64,
}

impl Default for OneBSettings {
    fn default() -> Self {
        Self {
            types: FileType::ALL.to_vec(),
            speed: SpeedSettings {
                prompt_tokens: 64,
                new_tokens: 32,
                warmup: 1,
                runs: 3,
                threads: 2,
            },
            context: 2048,
            context_type: FileType::Q4_0,
            seed: 42,
        }
    }
}

/// One model at one file type.
#[derive(Clone, Debug, Serialize)]
pub struct OneBRow {
    pub model: String,
    pub file_type: String,
    pub params: usize,
    /// The tensors' bytes in a GGUF file of this type (the file adds a few MB of vocabulary).
    pub file_bytes: usize,
    pub bits_per_weight: f64,
    /// The weights' bytes once loaded (the engine dequantizes a table it cannot run packed).
    pub loaded_bytes: usize,
    pub load_s: f64,
    /// The process's resident set once the model is built, and its peak while decoding
    /// ([`OneBSettings::speed`]'s prompt and new tokens).
    pub rss_loaded_bytes: u64,
    pub peak_rss_bytes: u64,
    /// [`Self::peak_rss_bytes`] plus what the model's 2,048-token context adds ([`ContextCost`]).
    pub with_context_bytes: u64,
    pub speed: EngineSpeed,
    /// Quantized matrices that ran on candle's matmul rather than our kernels, by format.
    pub fallback_matrices: BTreeMap<String, usize>,
}

/// What a long context costs one model: measured on one type, the same for all.
#[derive(Clone, Debug, Serialize)]
pub struct ContextCost {
    pub model: String,
    pub file_type: String,
    /// Positions filled: `context - 1` prompt tokens in one prefill, and the next token's logits.
    pub positions: usize,
    pub prefill_s: f64,
    /// Peak resident set of the long prefill, and of the short decode runs it is set against.
    pub peak_rss_bytes: u64,
    pub short_peak_rss_bytes: u64,
    /// The difference: the KV cache and the prefill's activations.
    pub added_bytes: u64,
}

/// `results/quant-1b-<timestamp>.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QuantOneB {
    #[serde(flatten)]
    pub header: RunHeader,
    pub settings: OneBSettings,
    pub contexts: Vec<ContextCost>,
    pub rows: Vec<OneBRow>,
}

/// Measures every type of `settings` on each of `models` (name and config), one model in
/// memory at a time.
pub fn run_1b(
    models: &[(String, TransformerConfig)],
    settings: &OneBSettings,
    mut log: impl FnMut(&str),
) -> Result<QuantOneB> {
    let header = RunHeader::now(settings.speed.threads);
    let (mut rows, mut contexts) = (Vec::new(), Vec::new());
    for (name, config) in models {
        let first = rows.len();
        let mut context = None;
        for &t in &settings.types {
            log(&format!("{name} {t}: building"));
            let (row, mut model) = measure_type(name, config, t, settings)?;
            log(&format!(
                "{name} {t}: peak {:.2} GB, decode {:.1} tok/s",
                row.peak_rss_bytes as f64 / 1e9,
                row.speed.decode_tokens_per_s.median
            ));
            if t == settings.context_type {
                log(&format!("{name} {t}: {}-token context", settings.context));
                context = Some(measure_context(name, &mut model, t, &row, settings)?);
            }
            rows.push(row);
        }
        let c: ContextCost = context.with_context(|| {
            format!(
                "the context's memory is measured on {}: add it to --type",
                settings.context_type
            )
        })?;
        for row in &mut rows[first..] {
            row.with_context_bytes = row.peak_rss_bytes + c.added_bytes;
        }
        contexts.push(c);
    }
    Ok(QuantOneB {
        header,
        settings: settings.clone(),
        contexts,
        rows,
    })
}

fn measure_type(
    name: &str,
    config: &TransformerConfig,
    t: FileType,
    settings: &OneBSettings,
) -> Result<(OneBRow, Transformer)> {
    let planned = planned_size(name, config, t);
    let start = Instant::now();
    let mut model = build_in_mix(config, t, settings.seed)?;
    let load_s = start.elapsed().as_secs_f64();
    // The peak restarts here: building draws each matrix in f32 a slice at a time, which a
    // file's load does not.
    reset_peak_rss();
    let rss_loaded_bytes = peak_rss_bytes();
    let prompt = prompt_ids(settings.speed.prompt_tokens, config.vocab_size);
    let speed = measure_ours(&mut model, &prompt, &settings.speed)?;
    let row = OneBRow {
        model: name.into(),
        file_type: t.name().into(),
        params: planned.params,
        file_bytes: planned.weight_bytes,
        bits_per_weight: planned.bits_per_weight,
        loaded_bytes: model.weight_bytes(),
        load_s,
        rss_loaded_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        with_context_bytes: 0,
        speed,
        fallback_matrices: model
            .fallback_matrices()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    };
    Ok((row, model))
}

/// Prefills `context - 1` tokens on a model whose short runs gave `short`.
fn measure_context(
    name: &str,
    model: &mut Transformer,
    t: FileType,
    short: &OneBRow,
    settings: &OneBSettings,
) -> Result<ContextCost> {
    let positions = settings.context.min(model.config().max_position_embeddings);
    let ids = prompt_ids(positions - 1, model.config().vocab_size);
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    model.reset_cache();
    reset_peak_rss();
    let start = Instant::now();
    let logits = model.forward_last(&ids)?;
    logits.to_vec2::<f32>()?;
    let prefill_s = start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes();
    model.reset_cache();
    Ok(ContextCost {
        model: name.into(),
        file_type: t.name().into(),
        positions,
        prefill_s,
        peak_rss_bytes: peak,
        short_peak_rss_bytes: short.peak_rss_bytes,
        added_bytes: peak.saturating_sub(short.peak_rss_bytes),
    })
}

/// Writes the measurement to `results_dir`.
pub fn write_1b(run: &QuantOneB, results_dir: &Path) -> Result<PathBuf> {
    let path = results_dir.join(run.header.file_name("quant-1b"));
    crate::eval::results::write_json_atomic(&path, run).context("writing the measurement")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(model_type: &str) -> TransformerConfig {
        let json = format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 512, "hidden_size": 256,
            "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
            "layer_norm_eps": 1e-5, "rotary_pct": 0.25,
            "use_parallel_residual": true, "tie_word_embeddings": false}}"#
        );
        TransformerConfig::from_hub_json(&json).unwrap()
    }

    /// Built in a type's mix, a model holds what the GGUF file of that type loads into: the
    /// file made by our quantizer from the same random weights written as F32 loads to the
    /// same bytes, tensor format by tensor format.
    #[test]
    fn a_model_built_in_a_mix_loads_like_the_file_of_that_type() {
        let c = tiny("llama");
        let dir = tempfile::tempdir().unwrap();
        let f32_file = dir.path().join("f32.gguf");
        crate::eval::speed::write_random_gguf(&c, 1, GgmlDType::F32, &f32_file).unwrap();
        for t in [
            FileType::Q4KM,
            FileType::Q6K,
            FileType::Q3KM,
            FileType::Q8_0,
        ] {
            let file = dir.path().join(format!("{t}.gguf"));
            crate::quantize::quantize_gguf(&f32_file, t, &file, |_, _, _| {}).unwrap();
            let (mut w, fc) = GgufWeights::open(&file, &Device::Cpu).unwrap();
            let format = WeightFormat {
                dtype: DType::F32,
                quantize: None,
            };
            let loaded = Transformer::load(&fc, &mut w, format, &Device::Cpu).unwrap();
            let built = build_in_mix(&c, t, 1).unwrap();
            assert_eq!(built.weight_bytes(), loaded.weight_bytes(), "{t}");
            assert_eq!(built.fallback_matrices(), loaded.fallback_matrices(), "{t}");
        }
    }

    /// Every matrix of GPT-NeoX (Pythia) has its place in the mix (an unknown one is an error),
    /// and fewer bits weigh less.
    #[test]
    fn pythia_builds_in_every_mix() {
        let c = tiny("gpt_neox");
        let bytes = |t| build_in_mix(&c, t, 1).unwrap().weight_bytes();
        let (q4, q8, f32) = (
            bytes(FileType::Q4KM),
            bytes(FileType::Q8_0),
            bytes(FileType::F32),
        );
        assert!(q4 < q8 && q8 < f32, "{q4} {q8} {f32}");
        // Also at 2 and 3 bits, whose tables (q2_K, q3_K) are packed at the file's size.
        let (q2, q3) = (bytes(FileType::Q2K), bytes(FileType::Q3KM));
        assert!(q2 < q3 && q3 < q4, "{q2} {q3} {q4}");
    }
}
