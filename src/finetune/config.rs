//! What a LoRA adapter is before it is trained: rank, scaling, dropout and the linear layers it
//! adapts. The training-side counterpart of peft's `LoraConfig` (the loaded side is
//! [`crate::model::lora::LoraConfig`], read back from `adapter_config.json`).

use crate::model::config::{Architecture, Mlp, TransformerConfig};
use crate::model::Transformer;
use anyhow::{bail, Result};

/// Which linear layers get an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// peft's default for the family (its `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`):
    /// the query and value projections, which the LoRA paper found enough for most of the gain.
    FamilyDefault,
    /// peft's `all-linear`: every linear layer of the blocks, not the output projection.
    AllLinear,
    /// Module names as peft takes them: a short name (`q_proj`) matches that layer in every block.
    Modules(Vec<String>),
}

impl Targets {
    /// From the command line: nothing is the family default, `all-linear` alone is every layer.
    pub fn from_args(args: &[String]) -> Self {
        match args {
            [] => Targets::FamilyDefault,
            [one] if one == "all-linear" => Targets::AllLinear,
            list => Targets::Modules(list.to_vec()),
        }
    }
}

/// peft's default target modules per family.
pub fn default_targets(architecture: Architecture) -> &'static [&'static str] {
    match architecture {
        Architecture::Llama | Architecture::StableLm | Architecture::Gemma3 => {
            &["q_proj", "v_proj"]
        }
        Architecture::GptNeox => &["query_key_value"],
    }
}

/// The linear layers of one block as `(short name, inputs, outputs)`, in the family's names.
pub fn block_linears(c: &TransformerConfig) -> Vec<(&'static str, usize, usize)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    match c.architecture {
        Architecture::GptNeox => vec![
            ("query_key_value", h, q + 2 * kv),
            ("dense", q, h),
            ("dense_h_to_4h", h, i),
            ("dense_4h_to_h", i, h),
        ],
        Architecture::Llama | Architecture::StableLm | Architecture::Gemma3 => {
            let mut l = vec![
                ("q_proj", h, q),
                ("k_proj", h, kv),
                ("v_proj", h, kv),
                ("o_proj", q, h),
            ];
            if matches!(c.mlp, Mlp::SwiGlu | Mlp::GeGlu) {
                l.push(("gate_proj", h, i));
            }
            l.extend([("up_proj", h, i), ("down_proj", i, h)]);
            l
        }
    }
}

/// The hyper-parameters of a LoRA adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank of `ΔW = B A`.
    pub r: usize,
    /// `ΔW` is scaled by `alpha / r`, so changing `r` does not change the step size much.
    pub alpha: f64,
    /// Dropout on the LoRA branch's input while training (peft's `lora_dropout`).
    pub dropout: f32,
    pub targets: Targets,
}

impl Default for LoraConfig {
    /// peft's defaults (r 8, alpha 8 and no dropout) with alpha 16, the usual 2·r.
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: Targets::FamilyDefault,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("the LoRA rank r must be at least 1 (r = 0 would train nothing)");
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            bail!("lora alpha must be positive, got {}", self.alpha);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora dropout must be in [0, 1), got {}", self.dropout);
        }
        Ok(())
    }

    /// The numbers an adapter with this config trains on a model of `config`, without building
    /// the model: `r · (in + out)` per adapted layer, as [`super::adapter::TrainableAdapter`]
    /// counts them once attached.
    pub fn parameter_count(&self, config: &TransformerConfig) -> Result<usize> {
        let linears = block_linears(config);
        let wanted = |name: &str| match &self.targets {
            Targets::FamilyDefault => default_targets(config.architecture).contains(&name),
            Targets::AllLinear => true,
            Targets::Modules(list) => list.iter().any(|t| t == name),
        };
        if let Targets::Modules(list) = &self.targets {
            if let Some(missing) = list.iter().find(|t| !linears.iter().any(|l| l.0 == *t)) {
                let names: Vec<&str> = linears.iter().map(|l| l.0).collect();
                bail!(
                    "the model has no module {missing:?} to adapt; its linear layers are: {}",
                    names.join(", ")
                );
            }
        }
        let per_block: usize = linears
            .iter()
            .filter(|l| wanted(l.0))
            .map(|&(_, inp, out)| self.r * (inp + out))
            .sum();
        Ok(per_block * config.num_layers)
    }

    /// The full names of the layers of `model` this config adapts. A named target the model
    /// does not have is an error that lists the layer names it does have.
    pub fn target_layers(&self, model: &mut Transformer) -> Result<Vec<String>> {
        let output = model.linears_mut().last().map(|l| l.name.clone());
        let all: Vec<String> = model.linears_mut().iter().map(|l| l.name.clone()).collect();
        let wanted: Vec<String> = match &self.targets {
            Targets::FamilyDefault => default_targets(model.config().architecture)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Targets::AllLinear => {
                return Ok(all
                    .into_iter()
                    .filter(|n| Some(n) != output.as_ref())
                    .collect())
            }
            Targets::Modules(list) => list.clone(),
        };
        let is_match =
            |name: &str, target: &str| name == target || name.ends_with(&format!(".{target}"));
        if let Some(missing) = wanted.iter().find(|t| !all.iter().any(|n| is_match(n, t))) {
            let mut short: Vec<&str> = Vec::new();
            for n in &all {
                let s = n.rsplit('.').next().unwrap_or(n);
                if !short.contains(&s) {
                    short.push(s);
                }
            }
            bail!(
                "the model has no module {missing:?} to adapt; its linear layers are: {} \
                 (or use all-linear)",
                short.join(", ")
            );
        }
        Ok(all
            .into_iter()
            .filter(|n| wanted.iter().any(|t| is_match(n, t)))
            .collect())
    }
}
