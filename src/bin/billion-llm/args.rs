//! The argument groups several commands share, each flattened into the commands that take it:
//! which model to load and how ([`ModelArgs`], [`LoadArgs`]), how to sample ([`SamplingArgs`])
//! and where results files go ([`ResultsDirArgs`]). Closed sets of values are enums, so `--help`
//! lists them and a mistyped value is refused with the list of valid ones.

use anyhow::Result;
use billion_llm::hub::loader::{self, LoadOptions, LoadedModel};
use billion_llm::model::generation::SamplingParams;
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Which model to load, and how.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// A zoo alias (`billion-llm models`), a hub id (org/name), a local folder or a .gguf file.
    #[arg(long, short)]
    pub model: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

impl ModelArgs {
    pub fn load(&self) -> Result<LoadedModel> {
        self.load.load(&self.model)
    }
}

/// How to load models (shared by every command that runs one).
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// cpu, cuda (the first GPU), cuda:N (the Nth) or metal.
    #[arg(long, default_value = "cpu", value_parser = device_name)]
    pub device: String,
    /// The type weights and activations are computed in.
    #[arg(long, value_enum, ignore_case = true, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Quantize weights at load time.
    #[arg(long, value_enum, ignore_case = true)]
    pub quantize: Option<QuantizeArg>,
    /// Trained weights, or the model's real config with random ones.
    #[arg(long, value_enum, default_value_t = WeightsArg::Pretrained)]
    pub weights: WeightsArg,
    /// Use only the local hub cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// A peft LoRA adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl LoadArgs {
    pub fn load(&self, model: &str) -> Result<LoadedModel> {
        loader::load(model, &self.options()?)
    }

    pub fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: loader::parse_device(&self.device)?,
            dtype: self.dtype.into(),
            quantize: self.quantize.map(Into::into),
            random_weights: self.weights.is_random(),
            seed: 42,
            offline: self.offline || env_offline(),
            adapter: self.adapter.clone(),
        })
    }
}

/// Whether `HF_HUB_OFFLINE` asks for the local cache only.
pub fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Checks a `--device` value's spelling; whether the device exists is found when it is opened.
pub fn device_name(name: &str) -> Result<String, String> {
    let cuda_n = name
        .strip_prefix("cuda:")
        .is_some_and(|n| n.parse::<usize>().is_ok());
    if matches!(name, "cpu" | "cuda" | "metal") || cuda_n {
        Ok(name.to_string())
    } else {
        Err("use cpu, cuda, cuda:N (N a GPU's number, from 0) or metal".to_string())
    }
}

/// `--dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit floats, the reference.
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16 (needs a GPU).
    Bf16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

/// `--quantize`: llama.cpp's block formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QuantizeArg {
    /// 8-bit, blocks of 32.
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit, blocks of 32 with a scale.
    #[value(name = "q4_0")]
    Q4_0,
    /// 4-bit, blocks of 32 with a scale and a minimum.
    #[value(name = "q4_1")]
    Q4_1,
    /// 5-bit, blocks of 32 with a scale.
    #[value(name = "q5_0")]
    Q5_0,
    /// 5-bit, blocks of 32 with a scale and a minimum.
    #[value(name = "q5_1")]
    Q5_1,
    /// 4-bit k-quant (super-blocks of 256; q5_0 where a row is not a multiple of 256).
    #[value(name = "q4_k", alias = "q4k")]
    Q4K,
    /// 5-bit k-quant (super-blocks of 256; q5_1 where a row is not a multiple of 256).
    #[value(name = "q5_k", alias = "q5k")]
    Q5K,
    /// 6-bit k-quant (super-blocks of 256; q8_0 where a row is not a multiple of 256).
    #[value(name = "q6_k", alias = "q6k")]
    Q6K,
}

impl From<QuantizeArg> for GgmlDType {
    fn from(q: QuantizeArg) -> Self {
        match q {
            QuantizeArg::Q8_0 => GgmlDType::Q8_0,
            QuantizeArg::Q4_0 => GgmlDType::Q4_0,
            QuantizeArg::Q4_1 => GgmlDType::Q4_1,
            QuantizeArg::Q5_0 => GgmlDType::Q5_0,
            QuantizeArg::Q5_1 => GgmlDType::Q5_1,
            QuantizeArg::Q4K => GgmlDType::Q4K,
            QuantizeArg::Q5K => GgmlDType::Q5K,
            QuantizeArg::Q6K => GgmlDType::Q6K,
        }
    }
}

/// `--weights`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    /// The trained weights (downloaded, or from the local file).
    Pretrained,
    /// Random weights in the model's real shapes: speed and memory without a download.
    Random,
}

impl WeightsArg {
    pub fn is_random(self) -> bool {
        self == WeightsArg::Random
    }
}

/// How new tokens are drawn. Commands whose defaults differ set them with `mut_arg`.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// The most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy (always the most likely token).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: draw only from the most likely tokens whose probabilities add up to P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

/// Where results files go.
#[derive(Args, Clone, Debug)]
pub struct ResultsDirArgs {
    /// The folder results files are written into.
    #[arg(
        long = "results-dir",
        visible_aliases = ["out-dir", "results"],
        default_value = "results"
    )]
    pub results_dir: PathBuf,
}
