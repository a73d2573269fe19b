//! One configuration for four model families.
//!
//! TinyLlama, Llama 3.2, StableLM 2, Pythia and Gemma 3 are all decoder-only transformers; they
//! differ in a handful of knobs: the fields of one [`TransformerConfig`]. Each family's hub
//! `config.json` becomes one in `config_json.rs`, a GGUF's metadata in `weights.rs`. The second
//! notebook prints this struct side by side for the four models.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

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
    /// The same rescaling as a GGUF file stores it (`rope_freqs.weight`): each pair's frequency
    /// is divided by its factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_freq_factors: Option<Vec<f32>>,
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

impl TransformerConfig {
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
    /// Totals of the four compared models, Llama 2 7B and Gemma 3 270M as the hub reports them
    /// for their safetensors checkpoints: our per-kind counts must add up to exactly these.
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
}
