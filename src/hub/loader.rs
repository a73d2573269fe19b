//! From a name to a ready model: a zoo alias, a hub id, a local folder or a `.gguf` file.

use crate::hub::chat_template::{ChatTemplate, Message};
use crate::hub::client::{HubClient, HubRepo};
use crate::hub::tokenizer::Tokenizer;
use crate::hub::zoo::{self, ChatFormat, ZooModel};
use crate::model::config::TransformerConfig;
use crate::model::lora::LoraAdapter;
use crate::model::weights::{GgufWeights, RandomWeights, SafetensorsWeights};
use crate::model::{Transformer, WeightFormat};
use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Quantize plain weights at load time (`--quantize q8_0|q4_0|q4k`).
    pub quantize: Option<GgmlDType>,
    /// Build the architecture from its config with random weights (`--weights random`).
    pub random_weights: bool,
    pub seed: u64,
    /// Use only the local hub cache (`--offline`, or `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// A peft LoRA adapter folder to apply (`--adapter DIR`).
    pub adapter: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            quantize: None,
            random_weights: false,
            seed: 42,
            offline: false,
            adapter: None,
        }
    }
}

/// Parses `--quantize` values.
pub fn parse_quantization(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q4k" | "q4_k" => GgmlDType::Q4K,
        "q5k" | "q5_k" => GgmlDType::Q5K,
        "q6k" | "q6_k" => GgmlDType::Q6K,
        other => bail!(
            "unknown quantization {other:?}: use q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k"
        ),
    })
}

/// Parses `--dtype` values.
pub fn parse_dtype(name: &str) -> Result<DType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("unknown dtype {other:?}: use f32, f16 or bf16"),
    })
}

/// The device named by `--device`: `cpu`, `cuda[:N]` or `metal` (the last two need the
/// crate's `cuda` or `metal` feature).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).context(
            "metal is not available: build with `--features metal` on a Mac with Apple silicon",
        ),
        cuda if cuda.starts_with("cuda") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map(|n| n.parse::<usize>())
                .transpose()
                .context("use cuda or cuda:N")?
                .unwrap_or(0);
            Device::new_cuda(ordinal).context(
                "CUDA is not available: build with `--features cuda` on a machine with an NVIDIA GPU",
            )
        }
        other => bail!("unknown device {other:?}: use cpu, cuda, cuda:N or metal"),
    }
}

/// Where a model name points.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Gguf(PathBuf),
    Folder(PathBuf),
    Hub {
        repo: String,
        zoo: Option<&'static ZooModel>,
    },
}

impl ModelSource {
    /// Resolves a name: an existing `.gguf` file or folder wins, then the zoo, then `org/name`.
    pub fn resolve(name: &str) -> Result<Self> {
        let path = Path::new(name);
        if path.is_file() {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                return Ok(Self::Gguf(path.to_path_buf()));
            }
            bail!(
                "{name} is a file but not a .gguf: give a .gguf file, a model folder, or an alias"
            );
        }
        if path.is_dir() {
            return Ok(Self::Folder(path.to_path_buf()));
        }
        if name.ends_with(".gguf") {
            bail!("GGUF file {name} does not exist");
        }
        if let Some(m) = zoo::lookup(name) {
            return Ok(Self::Hub {
                repo: m.hub_id.to_string(),
                zoo: Some(m),
            });
        }
        if name.split('/').count() == 2 && !name.starts_with('.') && !name.starts_with('/') {
            return Ok(Self::Hub {
                repo: name.to_string(),
                zoo: None,
            });
        }
        Err(zoo::unknown_model(name))
    }
}

/// A loaded model with what it needs to talk: tokenizer and chat template (when available).
pub struct LoadedModel {
    /// The name it was loaded by.
    pub name: String,
    pub model: Transformer,
    /// The tokenizer, or why there is none (the model still runs on token ids).
    pub tokenizer: Result<Tokenizer, String>,
    pub chat_template: Option<ChatTemplate>,
    /// Seconds from start to a ready model.
    pub load_s: f64,
}

impl LoadedModel {
    /// The tokenizer, or an error that says how to get one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .map_err(|why| anyhow::anyhow!("{why}"))
    }

    /// The model's chat template, or for a model without one (a base model) the plain
    /// `User:` / `Assistant:` transcript, which is how `chat` prompts it and how `finetune`
    /// renders its examples.
    pub fn template_or_plain(&self) -> Result<ChatTemplate> {
        match &self.chat_template {
            Some(t) => Ok(t.clone()),
            None => Ok(builtin_template(ChatFormat::Plain, self.tokenizer()?)),
        }
    }

    /// One user message through the model's chat template, ready to generate the answer, as
    /// token ids. The template places the special tokens, as transformers'
    /// `apply_chat_template` does, so the tokenizer adds none.
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        let template = self.chat_template.as_ref().with_context(|| {
            format!(
                "{} has no chat template: send the text as it is, without the template",
                self.name
            )
        })?;
        let rendered = template.render(&[Message::new("user", user)], true)?;
        self.tokenizer()?.encode(&rendered, false)
    }
}

/// Loads a model by name (see [`ModelSource::resolve`]).
pub fn load(name: &str, opts: &LoadOptions) -> Result<LoadedModel> {
    let start = Instant::now();
    let source = ModelSource::resolve(name)?;
    let format = WeightFormat {
        dtype: opts.dtype,
        quantize: opts.quantize,
    };
    let (mut model, tokenizer, chat_template) = match &source {
        ModelSource::Gguf(path) => {
            let (mut weights, config) = GgufWeights::open(path, &opts.device)?;
            // A GGUF whose tokenizer we cannot rebuild still runs on token ids (--ids).
            let tokenizer = Tokenizer::from_gguf(weights.content())
                .map_err(|e| format!("building the tokenizer from {}: {e:#}", path.display()));
            let template = ChatTemplate::from_gguf(weights.content())?;
            // Quantized GGUF matmuls run on f32 activations.
            let format = WeightFormat {
                dtype: DType::F32,
                quantize: None,
            };
            let model = Transformer::load(&config, &mut weights, format, &opts.device)?;
            (model, tokenizer, template)
        }
        ModelSource::Folder(dir) => {
            let config = TransformerConfig::from_file(&dir.join("config.json"))?;
            let model = build(&config, opts, format, || folder_weights(dir))?;
            let (tokenizer, template) = folder_tokenizer(dir)?;
            (model, tokenizer.ok_or_else(|| no_tokenizer(name)), template)
        }
        ModelSource::Hub { repo, zoo } => {
            let hub = HubClient::from_env().offline(opts.offline);
            let repo_files = hub.model(repo);
            let config = match (opts.random_weights, zoo.and_then(|z| z.config_json)) {
                (true, Some(json)) => TransformerConfig::from_hub_json(json)?,
                _ => TransformerConfig::from_file(&repo_files.get("config.json")?)?,
            };
            let model = build(&config, opts, format, || repo_files.weight_files())?;
            let (tokenizer, template) = if opts.random_weights {
                // Use the real tokenizer if it is cached, but never download for random weights.
                let cached = HubClient::from_env().offline(true);
                hub_tokenizer(&cached.model(repo)).unwrap_or((None, None))
            } else {
                hub_tokenizer(&repo_files)?
            };
            (model, tokenizer.ok_or_else(|| no_tokenizer(name)), template)
        }
    };
    if let Some(dir) = &opts.adapter {
        LoraAdapter::load(dir, &opts.device)?.apply(&mut model)?;
    }
    // A zoo model whose files carry no template gets the built-in one of its chat format.
    let chat_template = match (chat_template, &source, tokenizer.as_ref().ok()) {
        (Some(t), _, _) => Some(t),
        (
            None,
            ModelSource::Hub {
                zoo: Some(entry), ..
            },
            Some(tok),
        ) => Some(builtin_template(entry.chat_format, tok)),
        (None, _, _) => None,
    };
    Ok(LoadedModel {
        name: name.to_string(),
        model,
        tokenizer,
        chat_template,
        load_s: start.elapsed().as_secs_f64(),
    })
}

/// A built-in template with the tokenizer's special tokens. It writes the BOS token only for a
/// tokenizer that adds one itself (Llama's and Gemma's do, GPT-2-style ones do not): templates
/// place the special tokens, so the text is encoded without adding any.
fn builtin_template(format: ChatFormat, tok: &Tokenizer) -> ChatTemplate {
    let adds_bos = tok.encode("", true).is_ok_and(|ids| !ids.is_empty());
    let bos = if adds_bos {
        tok.bos_token.as_deref().unwrap_or("")
    } else {
        ""
    };
    ChatTemplate::builtin(format, bos, tok.eos_token.as_deref().unwrap_or(""))
}

fn no_tokenizer(name: &str) -> String {
    format!(
        "{name} has no tokenizer here (random weights without a downloaded tokenizer?): \
         run `billion-llm download {name}`, or pass token ids with --ids"
    )
}

fn build(
    config: &TransformerConfig,
    opts: &LoadOptions,
    format: WeightFormat,
    files: impl FnOnce() -> Result<Vec<PathBuf>>,
) -> Result<Transformer> {
    if opts.random_weights {
        let mut src = RandomWeights::new(opts.seed, opts.dtype, &opts.device);
        return Transformer::load(config, &mut src, format, &opts.device);
    }
    let mut src = SafetensorsWeights::open(&files()?, &opts.device)?;
    Transformer::load(config, &mut src, format, &opts.device)
}

/// The safetensors files of a folder: the shards named by the index, or every `.safetensors`.
pub fn folder_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = json["weight_map"]
            .as_object()
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{} has no .safetensors weights: a model folder needs config.json and model.safetensors",
            dir.display()
        );
    }
    Ok(files)
}

fn tokenizer_and_template(
    tokenizer_json: Option<PathBuf>,
    tokenizer_config: Option<PathBuf>,
) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    let Some(json) = tokenizer_json else {
        return Ok((None, None));
    };
    let tokenizer = Tokenizer::from_file(&json, tokenizer_config.as_deref())?;
    let template = match &tokenizer_config {
        Some(cfg) => ChatTemplate::from_tokenizer_config(cfg)?,
        None => None,
    };
    Ok((Some(tokenizer), template))
}

fn folder_tokenizer(dir: &Path) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
    tokenizer_and_template(
        existing("tokenizer.json"),
        existing("tokenizer_config.json"),
    )
}

fn hub_tokenizer(repo: &HubRepo) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    tokenizer_and_template(
        repo.get_optional("tokenizer.json")?,
        repo.get_optional("tokenizer_config.json")?,
    )
}
