//! Each family's hub `config.json`, parsed with its own small serde struct (the key names
//! differ), turned into one [`TransformerConfig`].

use super::config::{
    Architecture, Llama3RopeScaling, Mlp, Norm, RopeStyle, SlidingWindow, TransformerConfig,
    SUPPORTED_MODEL_TYPES,
};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// `eos_token_id` is a number in most configs and a list in Llama 3's.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![id],
            OneOrMany::Many(ids) => ids,
        }
    }
}

fn eos_list(eos: Option<OneOrMany>) -> Vec<u32> {
    eos.map(OneOrMany::into_vec).unwrap_or_default()
}

/// `rope_scaling`, or transformers 5's `rope_parameters`, which also holds the base (and, for
/// some families, the rotary fraction) that earlier releases wrote at the top level.
#[derive(Debug, Default, Deserialize)]
struct RopeScalingJson {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct LlamaJson {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeScalingJson>,
    rope_parameters: Option<RopeScalingJson>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
struct StableLmJson {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    max_position_embeddings: usize,
    #[serde(alias = "norm_eps")]
    layer_norm_eps: f64,
    rope_theta: Option<f64>,
    #[serde(alias = "rope_pct")]
    partial_rotary_factor: Option<f64>,
    rope_parameters: Option<RopeScalingJson>,
    #[serde(default)]
    use_qkv_bias: bool,
    #[serde(default)]
    use_parallel_residual: bool,
    #[serde(default)]
    qk_layernorm: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
struct GptNeoxJson {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    #[serde(alias = "rope_theta")]
    rotary_emb_base: Option<f64>,
    #[serde(alias = "partial_rotary_factor")]
    rotary_pct: Option<f64>,
    rope_parameters: Option<RopeScalingJson>,
    #[serde(default = "yes")]
    use_parallel_residual: bool,
    #[serde(default = "yes")]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

/// Gemma 3's text config (`gemma3_text`). transformers 5 writes the two RoPE bases as
/// `rope_parameters`; earlier releases as `rope_theta` and `rope_local_base_freq`.
#[derive(Debug, Deserialize)]
struct Gemma3Json {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_parameters: Option<Gemma3RopeParameters>,
    rope_scaling: Option<RopeScalingJson>,
    sliding_window: usize,
    layer_types: Option<Vec<String>>,
    #[serde(alias = "_sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    query_pre_attn_scalar: f64,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
struct Gemma3RopeParameters {
    full_attention: RopeThetaJson,
    sliding_attention: RopeThetaJson,
}

#[derive(Debug, Deserialize)]
struct RopeThetaJson {
    rope_type: Option<String>,
    rope_theta: f64,
}

/// The RoPE base: at the top level, else in `rope_parameters`, else the original 10 000.
fn rope_base(top: Option<f64>, parameters: Option<&RopeScalingJson>) -> f64 {
    top.or(parameters.and_then(|p| p.rope_theta))
        .unwrap_or(10_000.0)
}

/// The fraction of each head that rotates: at the top level, else in `rope_parameters`.
fn rotary_fraction(top: Option<f64>, parameters: Option<&RopeScalingJson>) -> Result<f64> {
    top.or(parameters.and_then(|p| p.partial_rotary_factor))
        .context("the config gives no partial_rotary_factor (rope_pct, rotary_pct)")
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ModelTypeOnly {
    model_type: Option<String>,
}

fn check_activation(act: Option<&str>, expected: &[&str], family: &str) -> Result<()> {
    match act {
        Some(a) if !expected.contains(&a) => bail!(
            "hidden_act {a:?} is not supported for {family} (supported: {expected:?}); \
             this crate implements the activations of the four compared models"
        ),
        _ => Ok(()),
    }
}

fn rotary_dim(head_dim: usize, fraction: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&fraction) {
        bail!("the rotary fraction must be between 0 and 1, got {fraction}");
    }
    let dim = (head_dim as f64 * fraction) as usize;
    if !dim.is_multiple_of(2) {
        bail!("rotary dimension {dim} (head_dim {head_dim} x {fraction}) must be even");
    }
    Ok(dim)
}

impl TransformerConfig {
    /// Parses a hub `config.json`.
    pub fn from_hub_json(text: &str) -> Result<Self> {
        let ty: ModelTypeOnly = serde_json::from_str(text)
            .context("config.json is not valid JSON: re-download it or fix the file")?;
        let Some(model_type) = ty.model_type else {
            bail!(
                "config.json has no \"model_type\"; supported model types: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            );
        };
        let parse_err = |family: &str| {
            format!("config.json of this {family} model is missing a field or has a wrong type")
        };
        let config = match model_type.as_str() {
            "llama" => {
                Self::from_llama(serde_json::from_str(text).with_context(|| parse_err("llama"))?)?
            }
            "stablelm" | "stablelm_epoch" => Self::from_stablelm(
                serde_json::from_str(text).with_context(|| parse_err("stablelm"))?,
            )?,
            "gpt_neox" => Self::from_gpt_neox(
                serde_json::from_str(text).with_context(|| parse_err("gpt_neox"))?,
            )?,
            "gemma3_text" => Self::from_gemma3(
                serde_json::from_str(text).with_context(|| parse_err("gemma3_text"))?,
            )?,
            "gemma3" => bail!(
                "model_type \"gemma3\" is Gemma 3's image-and-text model, whose weights sit under \
                 a vision tower: load a text-only Gemma 3 (model_type gemma3_text, such as \
                 google/gemma-3-270m or google/gemma-3-1b-it) or its GGUF file"
            ),
            other => bail!(
                "model_type {other:?} is not supported; supported model types: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: a model folder needs the hub's config.json",
                path.display()
            )
        })?;
        Self::from_hub_json(&text).with_context(|| format!("in {}", path.display()))
    }

    fn from_llama(c: LlamaJson) -> Result<Self> {
        check_activation(c.hidden_act.as_deref(), &["silu"], "llama")?;
        let head_dim = c
            .head_dim
            .unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
        let rope_theta = rope_base(c.rope_theta, c.rope_parameters.as_ref());
        let rope_scaling = match c.rope_scaling.or(c.rope_parameters) {
            None => None,
            Some(s) => match s.rope_type.as_deref() {
                Some("llama3") => Some(Llama3RopeScaling {
                    factor: s.factor.context("rope_scaling.factor is missing")?,
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .unwrap_or(8192),
                }),
                Some("default") | None => None,
                Some(other) => bail!(
                    "rope_scaling type {other:?} is not supported (supported: llama3, default)"
                ),
            },
        };
        Ok(Self {
            architecture: Architecture::Llama,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            max_position_embeddings: c.max_position_embeddings,
            norm: Norm::RmsNorm {
                eps: c.rms_norm_eps,
            },
            mlp: Mlp::SwiGlu,
            rotary_dim: head_dim,
            rope_theta,
            rope_scaling,
            rope_freq_factors: None,
            rope_style: RopeStyle::Half,
            parallel_residual: false,
            qkv_bias: c.attention_bias,
            attn_out_bias: c.attention_bias,
            mlp_bias: c.mlp_bias,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids: eos_list(c.eos_token_id),
            scale_embeddings: false,
            norm_adds_one: false,
            qk_norm: false,
            post_norms: false,
            query_pre_attn_scalar: None,
            sliding_window: None,
        })
    }

    fn from_stablelm(c: StableLmJson) -> Result<Self> {
        check_activation(c.hidden_act.as_deref(), &["silu"], "stablelm")?;
        if c.qk_layernorm {
            bail!("qk_layernorm (StableLM 2 12B) is not supported; the 1.6B models do not use it");
        }
        let head_dim = c.hidden_size / c.num_attention_heads.max(1);
        Ok(Self {
            architecture: Architecture::StableLm,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            max_position_embeddings: c.max_position_embeddings,
            norm: Norm::LayerNorm {
                eps: c.layer_norm_eps,
            },
            mlp: Mlp::SwiGlu,
            rotary_dim: rotary_dim(
                head_dim,
                rotary_fraction(c.partial_rotary_factor, c.rope_parameters.as_ref())?,
            )?,
            rope_theta: rope_base(c.rope_theta, c.rope_parameters.as_ref()),
            rope_scaling: None,
            rope_freq_factors: None,
            rope_style: RopeStyle::Half,
            parallel_residual: c.use_parallel_residual,
            qkv_bias: c.use_qkv_bias,
            attn_out_bias: false,
            mlp_bias: false,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids: eos_list(c.eos_token_id),
            scale_embeddings: false,
            norm_adds_one: false,
            qk_norm: false,
            post_norms: false,
            query_pre_attn_scalar: None,
            sliding_window: None,
        })
    }

    fn from_gpt_neox(c: GptNeoxJson) -> Result<Self> {
        // Pythia's "gelu" is PyTorch's exact (erf) GELU, not the tanh approximation.
        check_activation(c.hidden_act.as_deref(), &["gelu"], "gpt_neox")?;
        let head_dim = c.hidden_size / c.num_attention_heads.max(1);
        Ok(Self {
            architecture: Architecture::GptNeox,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_attention_heads,
            head_dim,
            max_position_embeddings: c.max_position_embeddings,
            norm: Norm::LayerNorm {
                eps: c.layer_norm_eps,
            },
            mlp: Mlp::Gelu,
            rotary_dim: rotary_dim(
                head_dim,
                rotary_fraction(c.rotary_pct, c.rope_parameters.as_ref())?,
            )?,
            rope_theta: rope_base(c.rotary_emb_base, c.rope_parameters.as_ref()),
            rope_scaling: None,
            rope_freq_factors: None,
            rope_style: RopeStyle::Half,
            parallel_residual: c.use_parallel_residual,
            qkv_bias: c.attention_bias,
            attn_out_bias: c.attention_bias,
            mlp_bias: true,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids: eos_list(c.eos_token_id),
            scale_embeddings: false,
            norm_adds_one: false,
            qk_norm: false,
            post_norms: false,
            query_pre_attn_scalar: None,
            sliding_window: None,
        })
    }

    fn from_gemma3(c: Gemma3Json) -> Result<Self> {
        // transformers' "gelu_pytorch_tanh" is GELU's tanh approximation.
        check_activation(
            c.hidden_activation.as_deref(),
            &["gelu_pytorch_tanh", "gelu_tanh"],
            "gemma3_text",
        )?;
        if c.final_logit_softcapping.is_some() || c.attn_logit_softcapping.is_some() {
            bail!("logit soft-capping (Gemma 2) is not supported; Gemma 3 configs set it to null");
        }
        let scaled = c
            .rope_scaling
            .as_ref()
            .is_some_and(|r| r.rope_type.as_deref() != Some("default"));
        let scaled_parameters = c.rope_parameters.as_ref().is_some_and(|p| {
            [&p.full_attention, &p.sliding_attention]
                .iter()
                .any(|r| r.rope_type.as_deref().is_some_and(|t| t != "default"))
        });
        if scaled || scaled_parameters {
            bail!(
                "RoPE scaling (the long-context Gemma 3 4B-27B) is not supported; the 270M and 1B \
                 models do not use it"
            );
        }
        let (global_theta, local_theta) = match &c.rope_parameters {
            Some(p) => (p.full_attention.rope_theta, p.sliding_attention.rope_theta),
            None => (
                c.rope_theta.unwrap_or(1_000_000.0),
                c.rope_local_base_freq.unwrap_or(10_000.0),
            ),
        };
        let global_every = match &c.layer_types {
            Some(types) => global_every(types)?,
            None => c.sliding_window_pattern.unwrap_or(6),
        };
        Ok(Self {
            architecture: Architecture::Gemma3,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            max_position_embeddings: c.max_position_embeddings,
            norm: Norm::RmsNorm {
                eps: c.rms_norm_eps,
            },
            mlp: Mlp::GeGlu,
            rotary_dim: c.head_dim,
            rope_theta: global_theta,
            rope_scaling: None,
            rope_freq_factors: None,
            rope_style: RopeStyle::Half,
            parallel_residual: false,
            qkv_bias: c.attention_bias,
            attn_out_bias: c.attention_bias,
            mlp_bias: false,
            tie_word_embeddings: c.tie_word_embeddings,
            bos_token_id: c.bos_token_id,
            eos_token_ids: eos_list(c.eos_token_id),
            scale_embeddings: true,
            norm_adds_one: true,
            qk_norm: true,
            post_norms: true,
            query_pre_attn_scalar: Some(c.query_pre_attn_scalar),
            sliding_window: Some(SlidingWindow {
                size: c.sliding_window,
                global_every,
                rope_theta: local_theta,
            }),
        })
    }
}

/// The period of Gemma 3's `layer_types`: every n-th layer `full_attention`, the others
/// `sliding_attention`. Another pattern is refused rather than run wrongly.
fn global_every(types: &[String]) -> Result<usize> {
    let Some(first) = types.iter().position(|t| t == "full_attention") else {
        return Ok(0);
    };
    let every = first + 1;
    for (layer, t) in types.iter().enumerate() {
        let expected = if (layer + 1).is_multiple_of(every) {
            "full_attention"
        } else {
            "sliding_attention"
        };
        if t != expected {
            bail!(
                "config.json: layer_types[{layer}] is {t:?}, but only a repeating pattern of \
                 sliding_attention layers with every {every}th full_attention is supported"
            );
        }
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 5 saves the RoPE base and scaling inside `rope_parameters`; read there, a
    /// llama config saved by it gives the model its hub config gives.
    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let common = r#""model_type": "llama", "vocab_size": 128, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5"#;
        let hub = TransformerConfig::from_hub_json(&format!(
            r#"{{{common}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3",
            "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        let saved = TransformerConfig::from_hub_json(&format!(
            r#"{{{common}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(saved.rope_theta, 500_000.0);
        assert_eq!(format!("{saved:?}"), format!("{hub:?}"));
        let plain = TransformerConfig::from_hub_json(&format!(
            r#"{{{common}, "rope_parameters": {{"rope_type": "default", "rope_theta": 100000.0}}}}"#
        ))
        .unwrap();
        assert_eq!(
            (plain.rope_theta, plain.rope_scaling.is_none()),
            (100_000.0, true)
        );
        let neox = TransformerConfig::from_hub_json(
            r#"{"model_type": "gpt_neox", "vocab_size": 128, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 256, "layer_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 20000.0,
            "partial_rotary_factor": 0.25}}"#,
        )
        .unwrap();
        assert_eq!((neox.rope_theta, neox.rotary_dim), (20_000.0, 4));
    }

    #[test]
    fn older_stablelm_epoch_keys_and_missing_pad_token() {
        let json = r#"{"model_type": "stablelm_epoch", "vocab_size": 50304, "hidden_size": 2560,
            "intermediate_size": 6912, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "max_position_embeddings": 4096, "norm_eps": 1e-5,
            "rope_pct": 0.25, "rope_theta": 10000, "use_qkv_bias": false}"#;
        let c = TransformerConfig::from_hub_json(json).unwrap();
        assert_eq!(c.architecture, Architecture::StableLm);
        assert_eq!(c.rotary_dim, 20);
        assert_eq!(c.norm, Norm::LayerNorm { eps: 1e-5 });
        assert!(!c.qkv_bias);
    }
}
