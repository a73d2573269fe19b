//! Short 7's study: what each bit costs. One real model, every file type of
//! [`FileType::ALL`]: its size, its distance from the full-precision reference
//! ([`quant_eval`]), its speed beside llama.cpp's on the same file, and its answer to one
//! prompt; and, for the four 1B architectures, what each type weighs and whether it fits a
//! 2, 4 or 8 GB machine with a 2,048-token KV cache.

use crate::eval::quant_eval::{self, Divergence, EvalText};
use crate::eval::results::RunHeader;
use crate::eval::speed::{
    measure_side_by_side, prompt_ids, EngineSpeed, LlamaCppPeer, SpeedSettings,
};
use crate::hub::loader::{load, LoadOptions};
use crate::model::config::{Architecture, TransformerConfig};
use crate::model::generation::{generate, GenerateOptions, SamplingParams};
use crate::quantize::mix::{is_quantizable, visiting_order, TensorMix};
use crate::quantize::{quantize_gguf, FileType, GgufSize};
use anyhow::{Context, Result};
use candle_core::quantized::GgmlDType;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How the study runs.
#[derive(Clone, Debug, Serialize)]
pub struct StudySettings {
    pub types: Vec<FileType>,
    /// Tokens per window, and windows per text, of the KL divergence measure.
    pub context: usize,
    pub windows: usize,
    pub speed: SpeedSettings,
    pub with_llama_cpp: bool,
    /// The question every type answers (greedy), shown side by side.
    pub prompt: String,
    pub answer_tokens: usize,
}

impl Default for StudySettings {
    fn default() -> Self {
        Self {
            types: FileType::ALL.to_vec(),
            context: 512,
            windows: 4,
            speed: SpeedSettings {
                runs: 3,
                new_tokens: 64,
                ..SpeedSettings::default()
            },
            with_llama_cpp: true,
            prompt: "The three primary colors are".into(),
            answer_tokens: 32,
        }
    }
}

/// One file type of one model.
#[derive(Clone, Debug, Serialize)]
pub struct TypeRow {
    pub file_type: String,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    /// Against the reference, over all texts.
    pub divergence: Divergence,
    /// Per text (English, code).
    pub texts: Vec<quant_eval::TextScore>,
    pub billion_llm: EngineSpeed,
    pub llama_cpp: Option<EngineSpeed>,
    pub decode_ratio: Option<f64>,
    pub prefill_ratio: Option<f64>,
    /// Quantized matrices that ran on candle's matmul rather than our kernels, by format.
    pub fallback_matrices: std::collections::BTreeMap<String, usize>,
    /// The greedy continuation of the prompt.
    pub answer: String,
}

/// `results/quant-study-<timestamp>.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QuantStudy {
    #[serde(flatten)]
    pub header: RunHeader,
    /// The model, by name (`SmolLM2-135M-Instruct`).
    pub model: String,
    /// The file every type was made from, and what the reference is.
    pub source: String,
    /// The source file's own type (`general.file_type`): re-quantizing to it gives back nearly
    /// the source's values, so that row's distance is not comparable with the others'.
    pub source_file_type: Option<String>,
    pub reference: String,
    pub texts: Vec<String>,
    pub settings: StudySettings,
    pub rows: Vec<TypeRow>,
    /// The four compared 1B models at every type: computed sizes, not measurements.
    pub planned_1b: Vec<PlannedSize>,
}

fn median_ratio(ours: &EngineSpeed, theirs: &EngineSpeed) -> (f64, f64) {
    (
        ours.decode_tokens_per_s.median / theirs.decode_tokens_per_s.median,
        ours.prefill_tokens_per_s.median / theirs.prefill_tokens_per_s.median,
    )
}

/// Runs the study on the GGUF file `source` (named `model`): its F32 reference and every type
/// are written into `work_dir`, made afresh each run so every row measures this version's
/// quantizer, then measured one by one.
pub fn run_study(
    source: &Path,
    model: &str,
    texts: &[EvalText],
    work_dir: &Path,
    settings: &StudySettings,
    mut log: impl FnMut(&str),
) -> Result<QuantStudy> {
    let header = RunHeader::now(settings.speed.threads);
    std::fs::create_dir_all(work_dir)?;
    let stem = model.to_ascii_lowercase();
    let file = |t: FileType| work_dir.join(format!("{stem}-{}.gguf", t.name()));
    let make = |from: &Path, t: FileType, to: &Path| -> Result<()> {
        if to.exists() {
            std::fs::remove_file(to)?;
        }
        quantize_gguf(from, t, to, |_, _, _| {})?;
        Ok(())
    };
    let reference = file(FileType::F32);
    log(&format!(
        "dequantizing {} to {}",
        source.display(),
        reference.display()
    ));
    make(source, FileType::F32, &reference)?;
    let mut r = load(&reference.to_string_lossy(), &LoadOptions::default())?;
    let mut rows = Vec::new();
    for &t in &settings.types {
        let path = file(t);
        if t != FileType::F32 {
            log(&format!("{model}: quantizing to {t}"));
            make(&reference, t, &path)?;
        }
        rows.push(measure_type(&mut r, &path, t, texts, settings, &mut log)?);
    }
    Ok(QuantStudy {
        header,
        model: model.into(),
        source: source.display().to_string(),
        source_file_type: GgufSize::of(source)?.file_type,
        reference: format!(
            "{} dequantized to F32 (the best this workbook has of it: every type's error \
             is measured from it, not from the original BF16 weights)",
            source.file_name().unwrap_or_default().to_string_lossy()
        ),
        texts: texts.iter().map(|t| t.name.clone()).collect(),
        settings: settings.clone(),
        rows,
        planned_1b: planned_sizes_of_the_compared_models()?,
    })
}

fn measure_type(
    reference: &mut crate::hub::loader::LoadedModel,
    path: &Path,
    t: FileType,
    texts: &[EvalText],
    settings: &StudySettings,
    log: &mut impl FnMut(&str),
) -> Result<TypeRow> {
    let mut m = load(&path.to_string_lossy(), &LoadOptions::default())?;
    log(&format!("{t}: KL divergence"));
    let (scores, divergence) =
        quant_eval::evaluate(reference, &mut m, texts, settings.context, settings.windows)?;
    log(&format!("{t}: speed"));
    let s = &settings.speed;
    let prompt = prompt_ids(s.prompt_tokens, m.model.config().vocab_size);
    let mut peer = if settings.with_llama_cpp {
        Some(LlamaCppPeer::start(path, &prompt, s.threads, s.new_tokens)?)
    } else {
        None
    };
    let (ours, theirs) = measure_side_by_side(&mut m.model, peer.as_mut(), &prompt, s)?;
    drop(peer);
    let ratios = theirs.as_ref().map(|th| median_ratio(&ours, th));
    let ids = m.tokenizer()?.encode(&settings.prompt, true)?;
    let opts = GenerateOptions {
        max_new_tokens: settings.answer_tokens,
        sampling: SamplingParams::default(),
        ignore_eos: false,
        stop: None,
    };
    m.model.reset_cache();
    let g = generate(&mut m.model, &ids, &opts, |_| Ok(()))?;
    let size = GgufSize::of(path)?;
    Ok(TypeRow {
        file_type: t.name().into(),
        file_bytes: std::fs::metadata(path)?.len(),
        bits_per_weight: size.bits_per_weight(),
        divergence,
        texts: scores,
        billion_llm: ours,
        llama_cpp: theirs,
        decode_ratio: ratios.map(|r| r.0),
        prefill_ratio: ratios.map(|r| r.1),
        fallback_matrices: m
            .model
            .fallback_matrices()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        answer: m.tokenizer()?.decode(&g.tokens, true)?,
    })
}

/// The GGUF tensors of an architecture, by name and shape (`[rows, row length]`), as llama.cpp's
/// converter names them: enough to apply a mix without writing the file.
pub fn gguf_tensors(c: &TransformerConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (q, kv) = (c.num_heads * hd, c.num_kv_heads * hd);
    let mut t = vec![("token_embd.weight".to_string(), vec![c.vocab_size, h])];
    if !c.tie_word_embeddings {
        t.push(("output.weight".into(), vec![c.vocab_size, h]));
    }
    t.push(("output_norm.weight".into(), vec![h]));
    for l in 0..c.num_layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        if c.architecture == Architecture::GptNeox {
            t.push((b("attn_qkv"), vec![q + 2 * kv, h]));
        } else {
            t.extend([
                (b("attn_q"), vec![q, h]),
                (b("attn_k"), vec![kv, h]),
                (b("attn_v"), vec![kv, h]),
            ]);
            t.push((b("ffn_gate"), vec![i, h]));
        }
        t.extend([
            (b("attn_output"), vec![h, q]),
            (b("ffn_up"), vec![i, h]),
            (b("ffn_down"), vec![h, i]),
            (b("attn_norm"), vec![h]),
            (b("ffn_norm"), vec![h]),
        ]);
    }
    t.sort_by(|a, b| visiting_order(&a.0, &b.0));
    t
}

/// What one file type of a 1B architecture weighs, and what it needs to run a 2,048-token
/// context: computed from the mix and the config, not measured.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PlannedSize {
    pub model: String,
    pub file_type: String,
    pub params: usize,
    pub weight_bytes: usize,
    pub bits_per_weight: f64,
    /// An f16 KV cache of 2,048 positions.
    pub kv_cache_bytes: usize,
    /// Weights + KV cache, against 2, 4 and 8 GB (10⁹ bytes).
    pub fits_2gb: bool,
    pub fits_4gb: bool,
    pub fits_8gb: bool,
}

/// Each tensor of `config` (GGUF name and shape, in llama.cpp's visiting order) with the format
/// file type `t` gives it: llama.cpp's mix for the matrices, f32 for norms.
pub fn mix_plan(c: &TransformerConfig, t: FileType) -> Vec<(String, Vec<usize>, GgmlDType)> {
    let tensors = gguf_tensors(c);
    let mut mix = TensorMix::new(
        t,
        tensors.iter().map(|(n, _)| n.as_str()),
        c.num_layers,
        c.num_heads / c.num_kv_heads.max(1),
    );
    tensors
        .into_iter()
        .map(|(name, dims)| {
            let dtype = if is_quantizable(&name, dims.len()) {
                mix.choose(&name, *dims.last().unwrap_or(&1))
            } else {
                GgmlDType::F32
            };
            (name, dims, dtype)
        })
        .collect()
}

/// The bytes of an f16 KV cache of `positions` positions.
fn kv_cache_bytes(c: &TransformerConfig, positions: usize) -> usize {
    positions * c.num_layers * 2 * c.num_kv_heads * c.head_dim * 2
}

/// [`PlannedSize`] of `config` at `t`.
pub fn planned_size(model: &str, c: &TransformerConfig, t: FileType) -> PlannedSize {
    let (mut params, mut bytes) = (0, 0);
    for (_, dims, dtype) in mix_plan(c, t) {
        let n: usize = dims.iter().product();
        params += n;
        bytes += n / dtype.block_size() * dtype.type_size();
    }
    let kv = kv_cache_bytes(c, 2048);
    let need = (bytes + kv) as f64;
    PlannedSize {
        model: model.into(),
        file_type: t.name().into(),
        params,
        weight_bytes: bytes,
        bits_per_weight: bytes as f64 * 8.0 / params as f64,
        kv_cache_bytes: kv,
        fits_2gb: need <= 2e9,
        fits_4gb: need <= 4e9,
        fits_8gb: need <= 8e9,
    }
}

/// [`planned_size`] of each zoo model at each type.
pub fn planned_sizes(models: &[(&str, TransformerConfig)]) -> Vec<PlannedSize> {
    models
        .iter()
        .flat_map(|(name, c)| FileType::ALL.map(|t| planned_size(name, c, t)))
        .collect()
}

/// [`planned_sizes`] of the four compared models (their hub configs ship with the zoo).
pub fn planned_sizes_of_the_compared_models() -> Result<Vec<PlannedSize>> {
    let models: Vec<(&str, TransformerConfig)> = crate::hub::zoo::compared()
        .map(|m| Ok((m.name, m.config()?)))
        .collect::<Result<_>>()?;
    Ok(planned_sizes(&models))
}

/// Writes a study (and the planned sizes beside it) to `results_dir`.
pub fn write_study(study: &QuantStudy, results_dir: &Path) -> Result<PathBuf> {
    let path = results_dir.join(study.header.file_name("quant-study"));
    crate::eval::results::write_json_atomic(&path, study).context("writing the study")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mix applied to a config's tensor list gives llama.cpp's published sizes: TinyLlama
    /// 1.1B at Q4_K_M is 668 MB on its model page (TheBloke's GGUF), Q8_0 1.17 GB.
    #[test]
    fn planned_sizes_match_published_file_sizes() {
        let json = r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}"#;
        let c = TransformerConfig::from_hub_json(json).unwrap();
        let q4 = planned_size("tinyllama", &c, FileType::Q4KM);
        let q8 = planned_size("tinyllama", &c, FileType::Q8_0);
        assert!(
            (q4.weight_bytes as f64 / 668e6 - 1.0).abs() < 0.01,
            "{q4:?}"
        );
        assert!(
            (q8.weight_bytes as f64 / 1.17e9 - 1.0).abs() < 0.01,
            "{q8:?}"
        );
        assert!(q4.fits_2gb && !planned_size("tinyllama", &c, FileType::F32).fits_4gb);
    }
}
