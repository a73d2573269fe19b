//! A Hugging Face llama checkpoint (config.json, safetensors, tokenizer.json) seen as the GGUF
//! file llama.cpp's `convert_hf_to_gguf.py` writes for it, so that `quantize` turns a hub
//! checkpoint into a file that llama.cpp and this workbook both load:
//!
//! - tensors under llama.cpp's names, with the q and k rows of each head reordered from Hugging
//!   Face's rotate-half layout (dimension `i` pairs with `i + d/2`) to the interleaved pairs
//!   (`2i`, `2i + 1`) that llama.cpp rotates;
//! - Llama 3's rescaled frequencies as llama.cpp's `rope_freqs.weight`: one divisor per pair;
//! - the hyperparameters as `llama.*` keys, and the tokenizer as `tokenizer.ggml.*`: a
//!   byte-level BPE (SmolLM2, Llama 3) as `gpt2` with its merges and llama.cpp's name for its
//!   pre-tokenizer; a SentencePiece-style BPE (TinyLlama) as `llama` scored pieces, each scored by
//!   the rank of the merge that makes it, so that merging the best-scored pair first replays
//!   tokenizer.json's merges in order.
//!
//! Tensors are read from the memory-mapped safetensors one at a time and handed over in f32.

use crate::hub::client::HubRepo;
use crate::hub::loader::folder_weights;
use crate::model::config::{Architecture, Norm, TransformerConfig};
use crate::model::rope_layout::to_gguf_rows;
use crate::model::weights::GgufWeights;
use crate::quantize::ModelSource;
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file::Value, GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// GGUF metadata: keys and values, in the order they are written.
pub type Metadata = Vec<(String, Value)>;

/// The files of a Hugging Face model that a GGUF file needs.
#[derive(Debug, Clone)]
pub struct HfFiles {
    /// The model's name, written as `general.name`.
    pub name: String,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    /// transformers 5 keeps the chat template in a file of its own.
    pub chat_template: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
}

impl HfFiles {
    /// A model folder as the hub has it.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let optional = |f: &str| Some(dir.join(f)).filter(|p| p.exists());
        if !dir.join("config.json").exists() {
            bail!(
                "{} has no config.json: give a GGUF file or a Hugging Face model folder \
                 (config.json, safetensors weights and tokenizer.json)",
                dir.display()
            );
        }
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.exists() {
            bail!(
                "{} has no tokenizer.json: a GGUF file carries its tokenizer, so quantize needs \
                 the model's tokenizer.json next to config.json (download it from the model's hub \
                 page)",
                dir.display()
            );
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            name,
            config: dir.join("config.json"),
            tokenizer,
            tokenizer_config: optional("tokenizer_config.json"),
            chat_template: optional("chat_template.jinja"),
            weights: folder_weights(dir)?,
        })
    }

    /// A hub repository, downloaded into the hub cache (or found there).
    pub fn from_hub(repo: &HubRepo, repo_id: &str) -> Result<Self> {
        Ok(Self {
            name: repo_id.rsplit('/').next().unwrap_or(repo_id).to_string(),
            config: repo.get("config.json")?,
            tokenizer: repo.get("tokenizer.json")?,
            tokenizer_config: repo.get_optional("tokenizer_config.json")?,
            chat_template: repo.get_optional("chat_template.jinja")?,
            weights: repo.weight_files()?,
        })
    }
}

/// A Hugging Face llama checkpoint as a [`ModelSource`]: GGUF metadata and tensors.
pub struct HfGguf {
    name: String,
    config: TransformerConfig,
    metadata: Metadata,
    files: MmapedSafetensors,
    /// GGUF name → safetensors name.
    tensors: BTreeMap<String, String>,
    rope_freqs: Option<Vec<f32>>,
    /// What the GGUF file cannot say as the checkpoint does (for the command line to print).
    pub warnings: Vec<String>,
}

impl HfGguf {
    pub fn open(files: &HfFiles) -> Result<Self> {
        let config = TransformerConfig::from_file(&files.config)?;
        if config.architecture != Architecture::Llama {
            bail!(
                "{} is a {:?} model; quantize converts llama-architecture checkpoints (TinyLlama, \
                 Llama 3.2, SmolLM2). Convert this one with llama.cpp's convert_hf_to_gguf.py \
                 and quantize the GGUF file",
                files.config.display(),
                config.architecture
            );
        }
        // SAFETY: the files are opened read-only; like every mmap-based loader we rely on no one
        // truncating them while they are being read.
        let st = unsafe { MmapedSafetensors::multi(&files.weights) }.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the safetensors weights of {}: {e}. A file is damaged or truncated \
                 (an interrupted download?): delete it and download it again",
                files.name
            )
        })?;
        // Every tensor llama.cpp's llama needs, and nothing it would not read.
        let mut wanted = vec!["token_embd.weight".to_string(), "output_norm.weight".into()];
        if !config.tie_word_embeddings {
            wanted.push("output.weight".into());
        }
        for layer in 0..config.num_layers {
            for m in [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                wanted.push(format!("blk.{layer}.{m}.weight"));
            }
        }
        let mut tensors = BTreeMap::new();
        for (hf, _) in st.tensors() {
            // Rotary tables some checkpoints store are recomputed from the config.
            if hf.ends_with("rotary_emb.inv_freq")
                || (config.tie_word_embeddings && hf == "lm_head.weight")
            {
                continue;
            }
            match GgufWeights::gguf_name(&hf, Architecture::Llama) {
                Some(gguf) if wanted.contains(&gguf) => tensors.insert(gguf, hf),
                _ => bail!(
                    "tensor {hf} of {} is not one of a llama model's (no biases, no extra \
                     modules): convert this checkpoint with llama.cpp's convert_hf_to_gguf.py",
                    files.name
                ),
            };
        }
        if let Some(missing) = wanted.iter().find(|w| !tensors.contains_key(*w)) {
            bail!(
                "the weights of {} lack {missing} (llama.cpp's name), which config.json's shape \
                 needs: is the download complete? Download the safetensors files again",
                files.name
            );
        }
        let rope_freqs = rope_freq_factors(&config);
        if rope_freqs.is_some() {
            tensors.insert("rope_freqs.weight".into(), String::new());
        }
        let mut metadata = hyperparameters(&config, &files.name);
        let tokenizer: Json = read_json(&files.tokenizer)?;
        let tokenizer_config = files
            .tokenizer_config
            .as_deref()
            .map(read_json)
            .transpose()?;
        let chat_template = match &files.chat_template {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
            ),
            None => tokenizer_config.as_ref().and_then(template_of_config),
        };
        let (vocab, warnings) = tokenizer_metadata(&tokenizer, tokenizer_config.as_ref(), &config)
            .with_context(|| format!("in {}", files.tokenizer.display()))?;
        metadata.extend(vocab);
        if let Some(t) = chat_template {
            metadata.push(("tokenizer.chat_template".into(), Value::String(t)));
        }
        Ok(Self {
            name: files.name.clone(),
            config,
            metadata,
            files: st,
            tensors,
            rope_freqs,
            warnings,
        })
    }
}

impl ModelSource for HfGguf {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        if name == "rope_freqs.weight" {
            let f = self.rope_freqs.clone().context("no rope_freqs")?;
            let n = f.len();
            return Ok(QTensor::quantize(
                &Tensor::from_vec(f, n, &Device::Cpu)?,
                GgmlDType::F32,
            )?);
        }
        let hf = self
            .tensors
            .get(name)
            .with_context(|| format!("{} has no tensor {name}", self.name))?;
        let mut t = self
            .files
            .load(hf, &Device::Cpu)
            .with_context(|| format!("reading {hf} of {}", self.name))?
            .to_dtype(DType::F32)?;
        let c = &self.config;
        if name.ends_with("attn_q.weight") {
            t = to_gguf_rows(&t, c.num_heads)?;
        } else if name.ends_with("attn_k.weight") {
            t = to_gguf_rows(&t, c.num_kv_heads)?;
        }
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Llama 3's rescaling as llama.cpp stores it: for each rotated pair, the number its frequency
/// is divided by (1 for fast frequencies, `factor` for slow ones, a blend between).
pub fn rope_freq_factors(config: &TransformerConfig) -> Option<Vec<f32>> {
    let s = config.rope_scaling?;
    let d = config.rotary_dim;
    let old_len = s.original_max_position_embeddings as f64;
    let (low_wavelen, high_wavelen) = (old_len / s.low_freq_factor, old_len / s.high_freq_factor);
    Some(
        (0..d)
            .step_by(2)
            .map(|i| {
                let freq = 1.0 / (config.rope_theta as f32).powf(i as f32 / d as f32);
                let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
                let factor = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    s.factor
                } else {
                    let smooth = (old_len / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    1.0 / ((1.0 - smooth) / s.factor + smooth)
                };
                factor as f32
            })
            .collect(),
    )
}

/// The `general.*` and `llama.*` keys of a llama config, as llama.cpp reads them.
pub fn hyperparameters(c: &TransformerConfig, name: &str) -> Metadata {
    let eps = match c.norm {
        Norm::RmsNorm { eps } | Norm::LayerNorm { eps } => eps as f32,
    };
    let u = |k: &str, v: usize| (format!("llama.{k}"), Value::U32(v as u32));
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        u("vocab_size", c.vocab_size),
        u("context_length", c.max_position_embeddings),
        u("embedding_length", c.hidden_size),
        u("block_count", c.num_layers),
        u("feed_forward_length", c.intermediate_size),
        u("attention.head_count", c.num_heads),
        u("attention.head_count_kv", c.num_kv_heads),
        u("attention.key_length", c.head_dim),
        u("attention.value_length", c.head_dim),
        u("rope.dimension_count", c.rotary_dim),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(eps),
        ),
    ]
}

/// `chat_template` of a tokenizer_config.json: a string, or a list of named templates of which
/// the one named `default` is the chat template.
fn template_of_config(cfg: &Json) -> Option<String> {
    match cfg.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => None,
    }
}

/// A pre-tokenizer, normalizer or decoder of tokenizer.json as a flat list (a `Sequence` opened).
fn steps(v: &Json) -> Vec<&Json> {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => ["pretokenizers", "normalizers", "decoders", "processors"]
            .iter()
            .filter_map(|k| v.get(*k).and_then(|l| l.as_array()))
            .flatten()
            .flat_map(steps)
            .collect(),
        Some(_) => vec![v],
        None => vec![],
    }
}

fn has_step(v: &Json, kind: &str) -> bool {
    steps(v).iter().any(|s| s["type"] == kind)
}

/// llama.cpp's name for a byte-level pre-tokenizer, which picks its word-splitting rules; llama.cpp
/// knows them by name only.
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let s = steps(pre);
    let regex = |st: &&Json| st["pattern"]["Regex"].as_str().map(String::from);
    if s.iter()
        .filter(|st| st["type"] == "Split")
        .filter_map(regex)
        .any(|r| r.contains(r"\p{N}{1,3}"))
    {
        return Some("llama-bpe");
    }
    match s.as_slice() {
        [d, b]
            if d["type"] == "Digits"
                && d["individual_digits"] == true
                && b["type"] == "ByteLevel" =>
        {
            Some("smollm")
        }
        [b] if b["type"] == "ByteLevel" && b["use_regex"] != false => Some("gpt-2"),
        _ => None,
    }
}

/// The `tokenizer.ggml.*` keys for a tokenizer.json, and warnings about what they cannot carry.
pub fn tokenizer_metadata(
    tok: &Json,
    tok_config: Option<&Json>,
    config: &TransformerConfig,
) -> Result<(Metadata, Vec<String>)> {
    let model = &tok["model"];
    if model["type"] != "BPE" {
        bail!(
            "the tokenizer is a {} model; quantize converts BPE tokenizers (byte-level as in \
             SmolLM2 and Llama 3, or SentencePiece-style as in TinyLlama)",
            model["type"]
        );
    }
    let n = config.vocab_size;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut put = |id: u64, text: &str| -> Result<()> {
        let slot = tokens.get_mut(id as usize).with_context(|| {
            format!("token {text:?} has id {id}, beyond config.json's vocab_size {n}")
        })?;
        *slot = Some(text.to_string());
        Ok(())
    };
    let vocab = model["vocab"]
        .as_object()
        .context("model.vocab is missing")?;
    for (text, id) in vocab {
        put(id.as_u64().context("a vocab id is not a number")?, text)?;
    }
    // id → special?, for the tokens matched whole before the model splits text.
    let mut added: HashMap<usize, bool> = HashMap::new();
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        put(id, text)?;
        added.insert(id as usize, a["special"] == true);
    }
    let id_of = |text: &str| tokens.iter().position(|t| t.as_deref() == Some(text));
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .collect();

    let mut warnings = Vec::new();
    let mut md: Metadata = Vec::new();
    let byte_level =
        has_step(&tok["pre_tokenizer"], "ByteLevel") || has_step(&tok["decoder"], "ByteLevel");
    // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    let kind = |i: usize, text: Option<&str>, unk: Option<usize>| -> i32 {
        match (added.get(&i), text) {
            (_, None) => 5,
            (Some(true), _) => 3,
            (Some(false), _) => 4,
            _ if Some(i) == unk => 2,
            (None, Some(t))
                if !byte_level && t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') =>
            {
                6
            }
            _ => 1,
        }
    };
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| t.clone().unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    if byte_level {
        let pre = match pre_tokenizer_name(&tok["pre_tokenizer"]) {
            Some(p) => p,
            None => {
                warnings.push(
                    "the tokenizer's pre-tokenizer is not one llama.cpp knows by name here \
                     (gpt-2, llama-bpe, smollm): the GGUF file says `default`, and llama.cpp \
                     may split words differently from tokenizer.json"
                        .into(),
                );
                "default"
            }
        };
        if merges.is_empty() {
            // A GGUF array takes its element type from its elements: an empty one cannot say
            // it holds strings, and llama.cpp refuses the file.
            bail!(
                "the byte-level tokenizer has no merges, which a GGUF file cannot carry for \
                 llama.cpp; is tokenizer.json complete?"
            );
        }
        md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        md.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
        md.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ));
        let types = (0..n)
            .map(|i| Value::I32(kind(i, tokens[i].as_deref(), None)))
            .collect();
        md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    } else {
        // SentencePiece merges the best-scored neighbouring pair: score each piece by the rank
        // of the merge that makes it (earlier is better); pieces no merge makes (characters,
        // bytes, specials) score 0 if single or special, below every merge otherwise.
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (r, m) in merges.iter().enumerate() {
            if let Some((a, b)) = m.split_once(' ') {
                rank.entry(format!("{a}{b}")).or_insert(r);
            }
        }
        let unk = model["unk_token"].as_str().and_then(id_of);
        let scores = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Value::F32(match rank.get(t) {
                    Some(&r) => -(r as f32) - 1.0,
                    None if t.chars().count() == 1 || added.contains_key(&i) => 0.0,
                    None if kind(i, Some(t), unk) == 6 => 0.0,
                    None => -(merges.len() as f32) - 1.0,
                })
            })
            .collect();
        let types = (0..n)
            .map(|i| Value::I32(kind(i, tokens[i].as_deref(), unk)))
            .collect();
        let prepend = steps(&tok["normalizer"])
            .iter()
            .any(|s| s["type"] == "Prepend" && s["prepend"] == "\u{2581}")
            || steps(&tok["pre_tokenizer"]).iter().any(|s| {
                s["type"] == "Metaspace"
                    && s["prepend_scheme"] != "never"
                    && s["add_prefix_space"] != false
            });
        md.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
        md.push(("tokenizer.ggml.scores".into(), Value::Array(scores)));
        md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
        md.push((
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(prepend),
        ));
        if let Some(u) = unk {
            md.push((
                "tokenizer.ggml.unknown_token_id".into(),
                Value::U32(u as u32),
            ));
        }
    }
    md.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(texts.into_iter().map(Value::String).collect()),
    ));

    // Special tokens: tokenizer_config.json's strings, else config.json's ids.
    let special = |key: &str| {
        tok_config
            .and_then(|c| c.get(key))
            .and_then(|v| v.as_str().or_else(|| v["content"].as_str()))
            .and_then(id_of)
    };
    let bos = special("bos_token").or(config.bos_token_id.map(|b| b as usize));
    let eos = special("eos_token").or(config.eos_token_ids.first().map(|&e| e as usize));
    for (key, id) in [
        ("bos", bos),
        ("eos", eos),
        ("padding", special("pad_token")),
    ] {
        if let Some(id) = id {
            md.push((
                format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(id as u32),
            ));
        }
    }
    // Whether text starts with BOS: tokenizer_config.json says so, or the post-processor adds it.
    let adds_bos = tok_config
        .and_then(|c| c["add_bos_token"].as_bool())
        .unwrap_or_else(|| {
            let bos = bos.and_then(|b| tokens[b].clone());
            steps(&tok["post_processor"]).iter().any(|p| {
                p["single"].as_array().into_iter().flatten().any(|s| {
                    let id = s["SpecialToken"]["id"].as_str();
                    id.is_some() && id == bos.as_deref()
                })
            })
        });
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(adds_bos)));
    Ok((md, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rope::llama3_scale;

    /// Each stored factor divides a frequency into the one the Transformer's Llama 3 rotation
    /// (checked against transformers) uses; the fast ones are kept and the slowest divided by 32.
    #[test]
    fn rope_freqs_divide_frequencies_as_llama_3_scaling_does() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/meta-llama--Llama-3.2-1B-Instruct.json");
        let c = TransformerConfig::from_file(&path).unwrap();
        let s = c.rope_scaling.unwrap();
        let factors = rope_freq_factors(&c).unwrap();
        assert_eq!(factors.len(), c.rotary_dim / 2);
        let d = c.rotary_dim;
        let mut blended = 0;
        for (pair, f) in factors.iter().enumerate() {
            let freq = 1.0 / (c.rope_theta as f32).powf((2 * pair) as f32 / d as f32);
            let want = llama3_scale(freq as f64, &s) as f32;
            let got = freq / f;
            assert!(
                (got - want).abs() <= 1e-6 * want,
                "pair {pair}: {got} vs {want}"
            );
            blended += usize::from(*f > 1.0 && *f < s.factor as f32);
        }
        assert_eq!(factors[0], 1.0);
        assert_eq!(*factors.last().unwrap(), s.factor as f32);
        assert!(blended > 0, "some pairs lie in the blended band");
    }

    #[test]
    fn a_config_without_scaling_stores_no_factors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/TinyLlama--TinyLlama-1.1B-Chat-v1.0.json");
        let c = TransformerConfig::from_file(&path).unwrap();
        assert!(rope_freq_factors(&c).is_none());
    }
}
