//! One configuration for four model families.
//!
//! TinyLlama, Llama 3.2, StableLM 2, Pythia and Gemma 3 are all decoder-only transformers; they
//! differ in a handful of knobs. Each family's hub `config.json` is parsed with its own small serde struct (the
//! key names differ), then turned into one [`TransformerConfig`] whose fields *are* those knobs.
//! The second notebook prints this struct side by side for the four models.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The model families this crate implements (the hub's `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Llama 1/2/3 and everything built like it (TinyLlama, SmolLM2).
    Llama,
    /// StableLM 2 (and the older `stablelm_epoch` configs).
    StableLm,
    /// GPT-NeoX, the architecture of the Pythia suite.
    GptNeox,
    /// Gemma 3's text model (`gemma3_text`): Llama's block with four norms, q/k norms, GeGLU and
    /// sliding-window attention on most layers.
    Gemma3,
}

/// The `model_type` values [`TransformerConfig::from_hub_json`] understands.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama",
    "stablelm",
    "stablelm_epoch",
    "gpt_neox",
    "gemma3_text",
    "gemma3",
];

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::StableLm => "stablelm",
            Architecture::GptNeox => "gpt_neox",
            Architecture::Gemma3 => "gemma3_text",
        }
    }
}

/// How hidden states are normalised before attention and MLP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Norm {
    /// Root-mean-square norm, a weight and no bias (Llama).
    RmsNorm { eps: f64 },
    /// Classic layer norm with weight and bias (StableLM, GPT-NeoX).
    LayerNorm { eps: f64 },
}

/// The MLP's shape and non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mlp {
    /// `down(silu(gate(x)) * up(x))`: three matrices (Llama, StableLM).
    SwiGlu,
    /// `down(gelu(up(x)))` with the exact, erf-based GELU: two matrices (GPT-NeoX).
    Gelu,
    /// `down(gelu_tanh(gate(x)) * up(x))`: SwiGLU's shape with the tanh-approximated GELU
    /// (Gemma).
    GeGlu,
}

/// How rotary position embeddings pair up the dimensions they rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + d/2` ("rotate_half"): the Hugging Face layout.
    Half,
    /// Dimension `2i` pairs with `2i + 1`: llama.cpp permutes llama's q/k weights into this
    /// layout when it writes a GGUF, so GGUF llama models use it.
    Interleaved,
}

/// Llama 3's rescaling of rotary frequencies for long contexts (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Local attention on most layers (Gemma 3): a position sees only the last `size` positions,
/// its own included, and those layers rotate with their own, lower RoPE base. Every
/// `global_every`-th layer (the 6th, 12th, ...) attends to the whole context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    pub size: usize,
    pub global_every: usize,
    pub rope_theta: f64,
}

impl SlidingWindow {
    /// Whether layer `layer` (from 0) attends through the window.
    pub fn applies(&self, layer: usize) -> bool {
        self.global_every == 0 || !(layer + 1).is_multiple_of(self.global_every)
    }
}

/// Everything that makes one of the five models different from another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Fewer key/value heads than query heads is grouped-query attention (GQA).
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub norm: Norm,
    pub mlp: Mlp,
    /// How many dimensions of each head are rotated: all of them for Llama, a quarter for
    /// StableLM 2 and Pythia (`partial_rotary_factor`, `rotary_pct`).
    pub rotary_dim: usize,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub rope_style: RopeStyle,
    /// GPT-NeoX adds attention and MLP outputs to the same residual: `x + attn(ln1(x)) + mlp(ln2(x))`.
    pub parallel_residual: bool,
    /// Bias on the q, k, v projections (StableLM 2, GPT-NeoX).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (GPT-NeoX).
    pub attn_out_bias: bool,
    /// Bias on the MLP projections (GPT-NeoX).
    pub mlp_bias: bool,
    /// The output projection reuses the token embedding matrix (Llama 3.2, SmolLM2, Gemma).
    pub tie_word_embeddings: bool,
    /// The token embeddings are multiplied by √hidden_size before block 0 (Gemma).
    #[serde(default)]
    pub scale_embeddings: bool,
    /// The stored RMSNorm weights are `w` of Gemma's `x·(1 + w)`: the builder adds the 1.
    /// llama.cpp's converter has already added it in a GGUF file, so there this is false.
    #[serde(default)]
    pub norm_adds_one: bool,
    /// An RMSNorm over each head of q and of k before RoPE (Gemma 3).
    #[serde(default)]
    pub qk_norm: bool,
    /// A second norm after attention and after the MLP, before each residual add (Gemma 2/3).
    #[serde(default)]
    pub post_norms: bool,
    /// Scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2` (Gemma).
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    pub sliding_window: Option<SlidingWindow>,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these (Llama 3 has three).
    pub eos_token_ids: Vec<u32>,
}

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

#[derive(Debug, Deserialize)]
struct RopeScalingJson {
    #[serde(alias = "type")]
    rope_type: Option<String>,
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
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    rope_scaling: Option<RopeScalingJson>,
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
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(alias = "rope_pct")]
    partial_rotary_factor: f64,
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
    #[serde(alias = "rope_theta", default = "default_rope_theta")]
    rotary_emb_base: f64,
    #[serde(alias = "partial_rotary_factor")]
    rotary_pct: f64,
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

fn default_rope_theta() -> f64 {
    10_000.0
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
        let rope_scaling = match c.rope_scaling {
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
            rope_theta: c.rope_theta,
            rope_scaling,
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
            rotary_dim: rotary_dim(head_dim, c.partial_rotary_factor)?,
            rope_theta: c.rope_theta,
            rope_scaling: None,
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
            rotary_dim: rotary_dim(head_dim, c.rotary_pct)?,
            rope_theta: c.rotary_emb_base,
            rope_scaling: None,
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

    /// Catches configs that would only fail later, deep inside a matmul.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, value) in fields {
            if value == 0 {
                bail!("config.json: {name} must be positive");
            }
        }
        if let Some(w) = self.sliding_window {
            if w.size == 0 {
                bail!("config.json: sliding_window must be positive");
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!(
                "config.json: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads,
                self.num_kv_heads
            );
        }
        Ok(())
    }

    /// Bytes the KV cache holds per token of context: a key and a value vector per layer and
    /// KV head, `bytes` per element. Grouped-query attention divides it by heads / KV heads.
    pub fn kv_cache_bytes_per_token(&self, bytes: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes
    }

    // ANCHOR: parameter_counts
    /// Parameter counts split the way the first notebook charts them.
    pub fn parameter_counts(&self) -> ParameterCounts {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let q = h * self.num_heads * self.head_dim;
        let kv = 2 * h * self.num_kv_heads * self.head_dim;
        let o = self.num_heads * self.head_dim * h;
        let mut attention = q + kv + o;
        if self.qkv_bias {
            attention += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim;
        }
        if self.attn_out_bias {
            attention += h;
        }
        if self.qk_norm {
            attention += 2 * self.head_dim;
        }
        let mut mlp = match self.mlp {
            Mlp::SwiGlu | Mlp::GeGlu => 3 * h * i,
            Mlp::Gelu => 2 * h * i,
        };
        if self.mlp_bias {
            mlp += i + h;
        }
        let norm_params = match self.norm {
            Norm::RmsNorm { .. } => h,
            Norm::LayerNorm { .. } => 2 * h,
        };
        let embeddings = self.vocab_size * h;
        let lm_head = if self.tie_word_embeddings {
            0
        } else {
            embeddings
        };
        ParameterCounts {
            embeddings: embeddings + lm_head,
            attention: attention * self.num_layers,
            mlp: mlp * self.num_layers,
            norms: norm_params * (self.norms_per_block() * self.num_layers + 1),
        }
    }
    // ANCHOR_END: parameter_counts

    /// Norms around each block's attention and MLP: two, or four with [`Self::post_norms`].
    pub fn norms_per_block(&self) -> usize {
        if self.post_norms {
            4
        } else {
            2
        }
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

/// Parameters by kind; `embeddings` includes an untied output projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParameterCounts {
    pub embeddings: usize,
    pub attention: usize,
    pub mlp: usize,
    pub norms: usize,
}

impl ParameterCounts {
    pub fn total(&self) -> usize {
        self.embeddings + self.attention + self.mlp + self.norms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Totals of the four compared models, Llama 2 7B and Gemma 3 270M as the hub reports them for their
    /// safetensors checkpoints: our per-kind counts must add up to exactly these.
    #[test]
    fn parameter_counts_match_the_published_totals() {
        let expected = [
            ("tinyllama", 1_100_048_384),
            ("llama3.2-1b", 1_235_814_400),
            ("stablelm-2-1.6b", 1_644_515_328),
            ("pythia-1b", 1_011_781_632),
            ("llama-2-7b-chat", 6_738_415_616),
            ("gemma-3-270m", 268_098_176),
        ];
        for (alias, total) in expected {
            let m = crate::hub::zoo::find(alias).unwrap();
            let c = m.config().unwrap();
            assert_eq!(c.parameter_counts().total(), total, "{alias}");
        }
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
