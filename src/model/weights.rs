//! Where a [`Transformer`](crate::model::Transformer)'s numbers come from.
//!
//! The model asks for tensors by their Hugging Face names (`model.layers.0.self_attn.q_proj.weight`)
//! and a [`WeightSource`] answers: from memory-mapped safetensors files, from a GGUF file (whose
//! llama.cpp names are translated), or from a random generator that only needs the config. The
//! same model code therefore runs the trained TinyLlama, the SmolLM2 GGUF, or a random 1B model
//! whose speed and memory equal the real one's.

use crate::kernels::packed::PackedMatrix;
use crate::model::config::{Architecture, Mlp, Norm, RopeStyle, SlidingWindow, TransformerConfig};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A tensor as stored: plain (f32/f16/bf16) or in a GGML quantized block format.
#[derive(Debug, Clone)]
pub enum Weight {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Weight {
    pub fn dims(&self) -> &[usize] {
        match self {
            Weight::Dense(t) => t.dims(),
            Weight::Quantized(q) => q.shape().dims(),
        }
    }

    /// The plain tensor in `dtype`, dequantizing if needed (norms, embeddings, biases).
    pub fn into_dense(self, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(t) => t.to_dtype(dtype)?,
            Weight::Quantized(q) => q.dequantize(&q.device())?.to_dtype(dtype)?,
        })
    }

    /// Bytes this weight occupies in memory.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Weight::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Quantized(q) => q.storage_size_in_bytes(),
        }
    }
}

/// Anything that can hand out a model's tensors by Hugging Face name.
pub trait WeightSource {
    /// The tensor called `name`, which must have shape `dims`.
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight>;
    /// Whether the source has `name` (used for optional tensors such as an untied `lm_head`).
    fn contains(&self, name: &str) -> bool;
    /// A short description for messages ("model.safetensors", "random weights", ...).
    fn describe(&self) -> String;
    /// `name` quantized to `dtype` for the CPU kernel without ever holding its float values
    /// whole, for a source that can make a tensor a slice of rows at a time; `None` (the
    /// default) where it cannot, and the builder quantizes the tensor [`WeightSource::get`]
    /// returns.
    fn quantized_matrix(
        &mut self,
        _name: &str,
        _dims: &[usize],
        _dtype: GgmlDType,
    ) -> Result<Option<PackedMatrix>> {
        Ok(None)
    }
    /// `name` for the CPU kernel straight from its stored quantized blocks, read a slice of
    /// rows at a time, where the source stores it in a format the kernel takes; `None` (the
    /// default) otherwise.
    fn stored_matrix(&mut self, _name: &str, _dims: &[usize]) -> Result<Option<PackedMatrix>> {
        Ok(None)
    }
}

fn check_dims(name: &str, found: &[usize], expected: &[usize], origin: &str) -> Result<()> {
    if found != expected {
        bail!(
            "{name} in {origin} has shape {found:?} but config.json implies {expected:?}: \
             the weights do not belong to this config (mixed-up folder or wrong model?)"
        );
    }
    Ok(())
}

/// Safetensors files (one, or the shards of a sharded checkpoint), memory-mapped: tensors are
/// read straight from the page cache into their final buffers, with no intermediate copy.
pub struct SafetensorsWeights {
    files: MmapedSafetensors,
    names: HashSet<String>,
    paths: Vec<PathBuf>,
    device: Device,
}

impl SafetensorsWeights {
    pub fn open(paths: &[PathBuf], device: &Device) -> Result<Self> {
        if paths.is_empty() {
            bail!("no .safetensors files found: a model folder needs model.safetensors (or its shards)");
        }
        for p in paths {
            if !p.exists() {
                bail!("weights file {} does not exist", p.display());
            }
        }
        // SAFETY: the files are opened read-only; like every mmap-based loader we rely on no one
        // truncating them while the model is alive.
        let files = unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the safetensors weights {}: {e}. The file is damaged or truncated \
                 (an interrupted download?): delete it and download it again",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let names = files.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Self {
            files,
            names,
            paths: paths.to_vec(),
            device: device.clone(),
        })
    }
}

impl WeightSource for SafetensorsWeights {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight> {
        if !self.names.contains(name) {
            bail!(
                "tensor {name} is missing from {}: the checkpoint does not match config.json",
                self.describe()
            );
        }
        let t = self
            .files
            .load(name, &self.device)
            .with_context(|| format!("reading {name} from {}", self.describe()))?;
        check_dims(name, t.dims(), dims, &self.describe())?;
        Ok(Weight::Dense(t))
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A llama-family or Gemma 3 GGUF file (llama.cpp's format), with quantized tensors kept
/// quantized.
pub struct GgufWeights {
    content: gguf_file::Content,
    file: std::fs::File,
    path: PathBuf,
    device: Device,
    architecture: Architecture,
}

impl GgufWeights {
    pub fn open(path: &Path, device: &Device) -> Result<(Self, TransformerConfig)> {
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("cannot open GGUF file {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a readable GGUF file ({e}); is the download complete?",
                path.display()
            )
        })?;
        let mut config = gguf_config(&content).with_context(|| format!("in {}", path.display()))?;
        let mut weights = Self {
            content,
            file,
            path: path.to_path_buf(),
            device: device.clone(),
            architecture: config.architecture,
        };
        // Llama 3's rescaled frequencies, which llama.cpp stores as one divisor per pair.
        if weights
            .content
            .tensor_infos
            .contains_key("rope_freqs.weight")
        {
            let factors: Vec<f32> = weights
                .read("rope_freqs.weight")?
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            if factors.len() != config.rotary_dim / 2 {
                bail!(
                    "{}: rope_freqs.weight has {} factors for {} rotated pairs; the file is \
                     damaged: convert the model again",
                    path.display(),
                    factors.len(),
                    config.rotary_dim / 2
                );
            }
            config.rope_freq_factors = Some(factors);
        }
        Ok((weights, config))
    }

    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// The tensor llama.cpp calls `gguf_name`, as stored (quantized or not).
    pub fn read(&mut self, gguf_name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.file, gguf_name, &self.device)
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading {gguf_name} from {}: {e} (truncated file? download it again)",
                    self.path.display()
                )
            })
    }

    /// llama.cpp's name for a Hugging Face tensor name of a model of `architecture` (Llama,
    /// StableLM and Gemma 3 share Hugging Face's names but Gemma's norm after attention is
    /// another; GPT-NeoX has names of its own). The quantization mix decides by these names.
    pub fn gguf_name(hf: &str, architecture: Architecture) -> Option<String> {
        let fixed = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            "gpt_neox.embed_in.weight" => Some("token_embd.weight"),
            "gpt_neox.final_layer_norm.weight" => Some("output_norm.weight"),
            "embed_out.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_string());
        }
        let rest = hf
            .strip_prefix("model.layers.")
            .or_else(|| hf.strip_prefix("gpt_neox.layers."))?;
        let (layer, rest) = rest.split_once('.')?;
        let (module, suffix) = rest.rsplit_once('.')?;
        let gguf_module = match module {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            // GPT-NeoX (Pythia): one fused q/k/v matrix, and its own MLP names.
            "attention.query_key_value" => "attn_qkv",
            "attention.dense" => "attn_output",
            "mlp.dense_h_to_4h" => "ffn_up",
            "mlp.dense_4h_to_h" => "ffn_down",
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" if architecture == Architecture::Gemma3 => {
                "post_attention_norm"
            }
            "post_attention_layernorm" => "ffn_norm",
            "pre_feedforward_layernorm" => "ffn_norm",
            "post_feedforward_layernorm" => "post_ffw_norm",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            _ => return None,
        };
        Some(format!("blk.{layer}.{gguf_module}.{suffix}"))
    }
}

impl WeightSource for GgufWeights {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight> {
        let gguf = Self::gguf_name(name, self.architecture)
            .with_context(|| format!("no GGUF tensor corresponds to {name}"))?;
        if !self.content.tensor_infos.contains_key(&gguf) {
            bail!("tensor {gguf} ({name}) is missing from {}", self.describe());
        }
        let q = self.read(&gguf)?;
        check_dims(name, q.shape().dims(), dims, &self.describe())?;
        Ok(Weight::Quantized(Arc::new(q)))
    }

    fn stored_matrix(&mut self, name: &str, dims: &[usize]) -> Result<Option<PackedMatrix>> {
        let Some(info) = Self::gguf_name(name, self.architecture)
            .and_then(|n| self.content.tensor_infos.get(&n))
        else {
            return Ok(None);
        };
        if !PackedMatrix::handles(info.ggml_dtype) || !self.device.is_cpu() {
            return Ok(None);
        }
        check_dims(name, info.shape.dims(), dims, &self.describe())?;
        let start = self.content.tensor_data_offset + info.offset;
        let (dtype, shape) = (info.ggml_dtype, info.shape.dims2()?);
        self.file.seek(std::io::SeekFrom::Start(start))?;
        let reader = &mut std::io::BufReader::new(&mut self.file);
        PackedMatrix::read(dtype, shape, reader)
            .map(Some)
            .with_context(|| {
                format!(
                    "reading {name} from {} (truncated file? download it again)",
                    self.path.display()
                )
            })
    }

    fn contains(&self, name: &str) -> bool {
        Self::gguf_name(name, self.architecture)
            .is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The architecture knobs a llama or Gemma 3 GGUF stores as metadata (`{arch}.*` keys).
fn gguf_config(content: &gguf_file::Content) -> Result<TransformerConfig> {
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" && arch != "gemma3" {
        bail!(
            "GGUF architecture {arch:?} is not supported: llama-family (TinyLlama, Llama 3.2, \
             SmolLM2) and gemma3 GGUF files load; use the safetensors checkpoint for other models"
        );
    }
    let get_u32 = |key: &str| -> Result<usize> {
        let key = format!("{arch}.{key}");
        md.get(&key)
            .with_context(|| format!("GGUF metadata {key} is missing"))?
            .to_u32()
            .map(|v| v as usize)
            .map_err(|e| anyhow::anyhow!("GGUF metadata {key}: {e}"))
    };
    let get_f32 = |key: &str| {
        md.get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_f32().ok())
    };
    let hidden_size = get_u32("embedding_length")?;
    let num_heads = get_u32("attention.head_count")?;
    let num_kv_heads = get_u32("attention.head_count_kv").unwrap_or(num_heads);
    let head_dim = get_u32("attention.key_length").unwrap_or(hidden_size / num_heads.max(1));
    let vocab_size = match get_u32("vocab_size") {
        Ok(v) => v,
        Err(_) => md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .context("GGUF has neither a vocab_size nor tokenizer.ggml.tokens")?,
    };
    let tied = !content.tensor_infos.contains_key("output.weight");
    let eos = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    let gemma = arch == "gemma3";
    // What llama.cpp's gemma3 loader fixes in code rather than reading from the file: every
    // 6th layer global, RoPE base 10,000 on the local ones, NeoX (half) rotation, and
    // scores scaled by head_dim^-1/2 (the 270M-12B models' query_pre_attn_scalar).
    let sliding_window = match get_u32("attention.sliding_window") {
        Ok(size) if gemma => Some(SlidingWindow {
            size,
            global_every: get_u32("attention.sliding_window_pattern").unwrap_or(6),
            rope_theta: 10_000.0,
        }),
        _ => None,
    };
    let config = TransformerConfig {
        architecture: if gemma {
            Architecture::Gemma3
        } else {
            Architecture::Llama
        },
        vocab_size,
        hidden_size,
        intermediate_size: get_u32("feed_forward_length")?,
        num_layers: get_u32("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        max_position_embeddings: get_u32("context_length")?,
        norm: Norm::RmsNorm {
            eps: get_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        },
        mlp: if gemma { Mlp::GeGlu } else { Mlp::SwiGlu },
        rotary_dim: get_u32("rope.dimension_count").unwrap_or(head_dim),
        rope_theta: get_f32("rope.freq_base").unwrap_or(10_000.0) as f64,
        rope_scaling: None,
        rope_freq_factors: None,
        // llama.cpp permutes llama's q/k rows for its interleaved rotation; Gemma keeps
        // Hugging Face's layout and rotates halves (NeoX style).
        rope_style: if gemma {
            RopeStyle::Half
        } else {
            RopeStyle::Interleaved
        },
        parallel_residual: false,
        qkv_bias: false,
        attn_out_bias: false,
        mlp_bias: false,
        tie_word_embeddings: tied,
        bos_token_id: md
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok()),
        eos_token_ids: eos.into_iter().collect(),
        scale_embeddings: gemma,
        // llama.cpp's converter has added Gemma's 1 to the stored norm weights.
        norm_adds_one: false,
        qk_norm: gemma,
        post_norms: gemma,
        query_pre_attn_scalar: None,
        sliding_window,
    };
    config.validate()?;
    Ok(config)
}

/// Random weights shaped by a config: no download, same cost per token as the trained model.
///
/// Matrices are uniform with standard deviation 0.02 (the usual initializer range), norm weights
/// are 1 and biases 0. A fixed seed makes runs repeatable.
pub struct RandomWeights {
    rng: rand::rngs::StdRng,
    dtype: DType,
    device: Device,
}

impl RandomWeights {
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            dtype,
            device: device.clone(),
        }
    }
}

impl RandomWeights {
    /// The next `n` values of a weight matrix: uniform on [-a, a], whose standard deviation
    /// a / sqrt(3) is 0.02, the usual initialisation.
    fn uniform(&mut self, n: usize) -> Vec<f32> {
        let a = 0.02 * 3f32.sqrt();
        (0..n).map(|_| self.rng.random_range(-a..a)).collect()
    }
}

impl WeightSource for RandomWeights {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Weight> {
        let n: usize = dims.iter().product();
        let is_norm = name.contains("norm") && name.ends_with(".weight");
        let values: Vec<f32> = if is_norm {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            self.uniform(n)
        };
        let t = Tensor::from_vec(values, dims, &self.device)?.to_dtype(self.dtype)?;
        Ok(Weight::Dense(t))
    }

    /// The same values as [`WeightSource::get`] would give, drawn and quantized 256 rows at a time.
    fn quantized_matrix(
        &mut self,
        _name: &str,
        dims: &[usize],
        dtype: GgmlDType,
    ) -> Result<Option<PackedMatrix>> {
        let [rows, cols] = dims else {
            return Ok(None);
        };
        let (rows, cols) = (*rows, *cols);
        let m = PackedMatrix::quantize(dtype, (rows, cols), |n| {
            Ok(Tensor::from_vec(
                self.uniform(n * cols),
                (n, cols),
                &Device::Cpu,
            )?)
        })?;
        Ok(Some(m))
    }

    /// Random weights exist for every name: the builder asks only for what the config needs.
    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn describe(&self) -> String {
        "random weights".to_string()
    }
}

/// The Hugging Face names of one transformer block's tensors, per family; an empty name (the
/// default) is a tensor the family does not have.
#[derive(Debug, Clone, Default)]
pub struct BlockNames {
    pub q: String,
    pub k: String,
    pub v: String,
    /// GPT-NeoX stores q, k and v as one fused matrix.
    pub qkv: String,
    pub o: String,
    pub gate: String,
    pub up: String,
    pub down: String,
    pub norm_attn: String,
    pub norm_mlp: String,
    /// Gemma's norms after attention and after the MLP, and on each head of q and k; empty for
    /// the other families.
    pub post_norm_attn: String,
    pub post_norm_mlp: String,
    pub q_norm: String,
    pub k_norm: String,
}

/// Hugging Face module names (without `.weight`/`.bias`) for an architecture.
#[derive(Debug, Clone)]
pub struct WeightNames {
    pub embed: String,
    pub final_norm: String,
    pub lm_head: String,
    prefix: &'static str,
    architecture: Architecture,
}

impl WeightNames {
    pub fn new(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Llama | Architecture::StableLm | Architecture::Gemma3 => Self {
                embed: "model.embed_tokens".into(),
                final_norm: "model.norm".into(),
                lm_head: "lm_head".into(),
                prefix: "model.layers",
                architecture,
            },
            Architecture::GptNeox => Self {
                embed: "gpt_neox.embed_in".into(),
                final_norm: "gpt_neox.final_layer_norm".into(),
                lm_head: "embed_out".into(),
                prefix: "gpt_neox.layers",
                architecture,
            },
        }
    }

    pub fn block(&self, layer: usize) -> BlockNames {
        let p = format!("{}.{layer}", self.prefix);
        let llama = || BlockNames {
            q: format!("{p}.self_attn.q_proj"),
            k: format!("{p}.self_attn.k_proj"),
            v: format!("{p}.self_attn.v_proj"),
            o: format!("{p}.self_attn.o_proj"),
            gate: format!("{p}.mlp.gate_proj"),
            up: format!("{p}.mlp.up_proj"),
            down: format!("{p}.mlp.down_proj"),
            norm_attn: format!("{p}.input_layernorm"),
            norm_mlp: format!("{p}.post_attention_layernorm"),
            ..BlockNames::default()
        };
        match self.architecture {
            Architecture::Llama | Architecture::StableLm => llama(),
            // Llama's names, with Gemma's norms: its `post_attention_layernorm` follows the
            // attention, and the MLP's norm is `pre_feedforward_layernorm`.
            Architecture::Gemma3 => BlockNames {
                norm_mlp: format!("{p}.pre_feedforward_layernorm"),
                post_norm_attn: format!("{p}.post_attention_layernorm"),
                post_norm_mlp: format!("{p}.post_feedforward_layernorm"),
                q_norm: format!("{p}.self_attn.q_norm"),
                k_norm: format!("{p}.self_attn.k_norm"),
                ..llama()
            },
            Architecture::GptNeox => BlockNames {
                qkv: format!("{p}.attention.query_key_value"),
                o: format!("{p}.attention.dense"),
                up: format!("{p}.mlp.dense_h_to_4h"),
                down: format!("{p}.mlp.dense_4h_to_h"),
                norm_attn: format!("{p}.input_layernorm"),
                norm_mlp: format!("{p}.post_attention_layernorm"),
                ..BlockNames::default()
            },
        }
    }
}
