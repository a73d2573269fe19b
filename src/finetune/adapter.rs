//! A trainable LoRA adapter: fresh `A` and `B` matrices attached to a frozen model, and their
//! peft-format files.
//!
//! The matrices are [`Var`]s, the only tensors the optimizer sees, so the base weights cannot
//! change. A `Var`'s tensor shares its storage, so the model's [`LoraLinear`] holds plain tensor
//! clones of the `Var`s and sees every optimizer update without being told.

use super::config::LoraConfig;
use crate::model::config::TransformerConfig;
use crate::model::rope_layout;
use crate::model::{Linear, Lora, LoraLinear, Transformer};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Writes a safetensors file readable like the folder it is in. The safetensors crate writes
/// through a temporary file, created owner-only (0600), and renames it: a learner's adapter
/// would then be unreadable to the notebook server or a colleague. The folder's mode already
/// carries the user's umask, so the file takes it, without execute bits.
pub(super) fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    candle_core::safetensors::save(tensors, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mode = std::fs::metadata(folder)?.permissions().mode() & 0o666;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The trainable matrices of one adapted layer.
#[derive(Debug, Clone)]
pub struct LoraParams {
    /// The layer's Hugging Face module name (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// `(r, in)`.
    pub a: Var,
    /// `(out, r)`.
    pub b: Var,
}

/// The adapter being trained.
#[derive(Debug, Clone)]
pub struct TrainableAdapter {
    pub config: LoraConfig,
    pub params: Vec<LoraParams>,
    /// The dropout masks' generator, seeded with the run's seed (see [`Lora::dropout_rng`]).
    dropout_rng: Arc<Mutex<StdRng>>,
}

/// The input width and device of a layer's dense base weight.
fn dense_base(linear: &LoraLinear) -> Result<(usize, candle_core::Device)> {
    match &linear.base {
        Linear::Dense { weight, .. } => Ok((weight.dim(1)?, weight.device().clone())),
        _ => bail!(
            "{} has quantized weights: training needs the base dequantized to f32 \
             (quantized matmuls record no gradient)",
            linear.name
        ),
    }
}

impl TrainableAdapter {
    /// Attaches a fresh adapter as peft initialises one: `A` Kaiming-uniform with `a = sqrt(5)`
    /// (uniform on ±1/sqrt(in)), `B` zeros, so the adapted model starts equal to the base.
    pub fn attach(model: &mut Transformer, config: &LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let layers = config.target_layers(model)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut params = Vec::new();
        for linear in model.linears_mut() {
            if !layers.contains(&linear.name) {
                continue;
            }
            let (inp, device) = dense_base(linear)?;
            let out = linear.base.out_features();
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..config.r * inp)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.r, inp), &device)?)?;
            let b = Var::zeros((out, config.r), DType::F32, &device)?;
            params.push(LoraParams {
                module: linear.name.clone(),
                a,
                b,
            });
        }
        let adapter = Self {
            config: config.clone(),
            params,
            dropout_rng: Arc::new(Mutex::new(Self::dropout_stream(seed, 0))),
        };
        adapter.install(model, config.dropout)?;
        Ok(adapter)
    }

    /// The dropout masks of optimizer step `step`: a stream of their own, so that changing the
    /// dropout leaves the initial `A` unchanged, and one per step, so that a resumed run draws
    /// the masks the uninterrupted run would have drawn.
    fn dropout_stream(seed: u64, step: usize) -> StdRng {
        let step = (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        StdRng::seed_from_u64(seed ^ 0x5EED_D509 ^ step)
    }

    /// Restarts the dropout masks at those of optimizer step `step`.
    pub fn reseed_dropout(&self, seed: u64, step: usize) {
        let mut rng = self
            .dropout_rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *rng = Self::dropout_stream(seed, step);
    }

    /// Puts the adapter's matrices into the model's layers with the given dropout (the trainer
    /// passes 0 for evaluation).
    pub fn install(&self, model: &mut Transformer, dropout: f32) -> Result<()> {
        let scale = self.config.scale();
        for linear in model.linears_mut() {
            if let Some(p) = self.params.iter().find(|p| p.module == linear.name) {
                linear.lora = Some(Lora {
                    a: p.a.as_tensor().clone(),
                    b: p.b.as_tensor().clone(),
                    scale,
                    dropout,
                    dropout_rng: Some(self.dropout_rng.clone()),
                });
            }
        }
        Ok(())
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params
            .iter()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect()
    }

    /// How many numbers training changes.
    pub fn trainable_parameters(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// peft's `print_trainable_parameters` line.
    pub fn parameter_summary(&self, base: &TransformerConfig) -> String {
        let trainable = self.trainable_parameters();
        let all = base.parameter_counts().total() + trainable;
        format!(
            "trainable params: {trainable} || all params: {all} || trainable%: {:.4}",
            100.0 * trainable as f64 / all as f64
        )
    }

    /// The short module names adapted (`q_proj`, `v_proj`), for `adapter_config.json`.
    pub fn target_modules(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in &self.params {
            let short = p.module.rsplit('.').next().unwrap_or(&p.module).to_string();
            if !names.contains(&short) {
                names.push(short);
            }
        }
        names.sort();
        names
    }

    /// Loads `A` and `B` from a peft adapter folder into this adapter's `Var`s (for `--resume`).
    /// The folder must adapt exactly these layers with this rank.
    pub fn load_weights(&self, dir: &Path, model_config: &TransformerConfig) -> Result<()> {
        let path = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&path, self.params[0].a.device())
            .with_context(|| format!("cannot read {}", path.display()))?;
        for p in &self.params {
            let get = |m: &str| -> Result<Tensor> {
                let key = format!("base_model.model.{}.{m}.weight", p.module);
                let t = tensors.get(&key).with_context(|| {
                    format!(
                        "{} has no {key}: it was trained with other settings \
                         (targets, model) than this run",
                        path.display()
                    )
                })?;
                Ok(t.to_dtype(DType::F32)?)
            };
            let a = get("lora_A")?;
            let mut b = get("lora_B")?;
            if let Some(heads) = rope_layout::permuted_heads(model_config, &p.module) {
                b = rope_layout::to_gguf_rows(&b, heads)?;
            }
            if a.dims() != p.a.dims() || b.dims() != p.b.dims() {
                bail!(
                    "{}: {} has A {:?} and B {:?}, this run needs {:?} and {:?} (other r or model?)",
                    path.display(),
                    p.module,
                    a.dims(),
                    b.dims(),
                    p.a.dims(),
                    p.b.dims()
                );
            }
            p.a.set(&a)?;
            p.b.set(&b)?;
        }
        Ok(())
    }

    /// Writes the adapter as peft's `save_pretrained` does: `adapter_config.json` and
    /// `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` `(r, in)` and
    /// `lora_B.weight` `(out, r)`, q/k rows in Hugging Face order even on a GGUF base.
    pub fn save_peft(
        &self,
        dir: &Path,
        base_model: &str,
        model_config: &TransformerConfig,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for p in &self.params {
            let key = |m: &str| format!("base_model.model.{}.{m}.weight", p.module);
            let mut b = p.b.as_tensor().copy()?;
            if let Some(heads) = rope_layout::permuted_heads(model_config, &p.module) {
                b = rope_layout::to_hf_rows(&b, heads)?;
            }
            tensors.insert(key("lora_A"), p.a.as_tensor().copy()?);
            tensors.insert(key("lora_B"), b);
        }
        save_safetensors(&tensors, &dir.join("adapter_model.safetensors"))?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.config.r,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": self.target_modules(),
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "revision": null,
        });
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&config)? + "\n",
        )?;
        Ok(())
    }
}
