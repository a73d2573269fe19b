//! A peft adapter on `q_proj` / `k_proj` moves the SmolLM2 GGUF's logits the way it moves the
//! same weights in Hugging Face layout. llama.cpp permuted the q/k rows of the GGUF for its
//! interleaved RoPE, so the adapter's `B` rows have to be permuted the same way when it is applied.

use billion_llm::finetune::adapter::TrainableAdapter;
use billion_llm::finetune::base::load_trainable;
use billion_llm::finetune::config::{LoraConfig, Targets};
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::model::config::{Norm, TransformerConfig};
use billion_llm::model::lora::LoraAdapter;
use billion_llm::model::rope_layout::{permuted_heads, to_gguf_rows, to_hf_rows};
use billion_llm::model::weights::{GgufWeights, WeightNames, WeightSource};
use billion_llm::model::{max_abs_diff, Lora, Transformer};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// Writes the GGUF as a Hugging Face folder: every tensor dequantized to f32 under its Hugging
/// Face name, q/k rows put back into Hugging Face order, and a `config.json` from the metadata.
fn hf_folder_from_gguf(gguf: &Path, dir: &Path) -> TransformerConfig {
    let (mut weights, c) = GgufWeights::open(gguf, &Device::Cpu).unwrap();
    let names = WeightNames::new(c.architecture);
    let mut modules = vec![names.embed.clone(), names.final_norm.clone()];
    if !c.tie_word_embeddings {
        modules.push(names.lm_head.clone());
    }
    for layer in 0..c.num_layers {
        let b = names.block(layer);
        modules.extend([
            b.q,
            b.k,
            b.v,
            b.o,
            b.gate,
            b.up,
            b.down,
            b.norm_attn,
            b.norm_mlp,
        ]);
    }
    let mut tensors = HashMap::new();
    for module in modules {
        let name = format!("{module}.weight");
        let gguf_name = GgufWeights::gguf_name(&name).unwrap();
        let dims = weights.content().tensor_infos[&gguf_name]
            .shape
            .dims()
            .to_vec();
        let mut t = weights
            .get(&name, &dims)
            .unwrap()
            .into_dense(DType::F32)
            .unwrap();
        if let Some(heads) = permuted_heads(&c, &module) {
            t = to_hf_rows(&t, heads).unwrap();
        }
        tensors.insert(name, t);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let Norm::RmsNorm { eps } = c.norm else {
        panic!("llama uses RMSNorm")
    };
    let config = serde_json::json!({
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    c
}

/// A peft adapter on every q_proj and k_proj with random, non-zero A and B (r = 8, alpha = 16).
fn random_qk_adapter(c: &TransformerConfig, dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let r = 8;
    let mut uniform = |rows: usize, cols: usize, bound: f32| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    };
    let mut tensors = HashMap::new();
    let names = WeightNames::new(c.architecture);
    for layer in 0..c.num_layers {
        let block = names.block(layer);
        for (module, out) in [
            (block.q, c.num_heads * c.head_dim),
            (block.k, c.num_kv_heads * c.head_dim),
        ] {
            let key = |m: &str| format!("base_model.model.{module}.{m}.weight");
            let bound = 1.0 / (c.hidden_size as f32).sqrt();
            tensors.insert(key("lora_A"), uniform(r, c.hidden_size, bound));
            tensors.insert(key("lora_B"), uniform(out, r, 1.0));
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = serde_json::json!({
        "peft_type": "LORA", "r": r, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj"], "bias": "none", "fan_in_fan_out": false,
        "task_type": "CAUSAL_LM",
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
}

fn logits(model: &mut Transformer, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward_uncached(&input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn qk_adapter_moves_gguf_logits_like_the_hugging_face_layout() {
    let gguf = asset(SMOLLM2_GGUF).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let config = hf_folder_from_gguf(&gguf, folder.path());
    let adapter_dir = tempfile::tempdir().unwrap();
    random_qk_adapter(&config, adapter_dir.path());
    let adapter = LoraAdapter::load(adapter_dir.path(), &Device::Cpu).unwrap();

    let mut quantized = load(gguf.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ids = quantized
        .tokenizer()
        .unwrap()
        .encode(
            "The quick brown fox jumps over the lazy dog near the river bank.",
            false,
        )
        .unwrap();
    let mut hf = load(folder.path().to_str().unwrap(), &LoadOptions::default()).unwrap();

    let base_q = logits(&mut quantized.model, &ids);
    let base_hf = logits(&mut hf.model, &ids);
    let mut wrong_order = quantized.model.clone();
    adapter.apply(&mut quantized.model).unwrap();
    adapter.apply(&mut hf.model).unwrap();
    let effect_q = diff(&logits(&mut quantized.model, &ids), &base_q);
    let effect_hf = diff(&logits(&mut hf.model, &ids), &base_hf);

    // The two bases differ only by the Q4_1 kernels' 8-bit activations: that error, measured
    // on the plain models, is the yardstick. The difference of the two effects is the difference
    // of two such errors (adapted and plain), so it stays within twice it, plus a margin of 1.5.
    let quantization_error = max_abs(&diff(&base_q, &base_hf));
    let effect_error = max_abs(&diff(&effect_q, &effect_hf));
    let corr = correlation(&effect_q, &effect_hf);
    eprintln!(
        "max|effect| {} quantization error {quantization_error} effect error {effect_error} \
         correlation {corr}",
        max_abs(&effect_hf)
    );
    assert!(
        max_abs(&effect_hf) > 10.0 * quantization_error,
        "the adapter must move the logits well beyond quantization error"
    );
    assert!(corr > 0.98, "correlation of the two effects {corr}");
    assert!(
        effect_error <= 3.0 * quantization_error,
        "effects differ by {effect_error}, quantization error {quantization_error}"
    );

    // The same adapter with B in Hugging Face row order, as the loader applied it before the
    // fix: the effect lands on the wrong rotary pairs and the test above would fail.
    for linear in wrong_order.linears_mut() {
        if let Some((a, b)) = adapter.modules.get(&linear.name) {
            linear.lora = Some(Lora {
                a: a.clone(),
                b: b.clone(),
                scale: adapter.config.scale(),
                dropout: 0.0,
            });
        }
    }
    let effect_wrong = diff(&logits(&mut wrong_order, &ids), &base_q);
    let corr_wrong = correlation(&effect_wrong, &effect_hf);
    eprintln!("without the permutation: correlation {corr_wrong}");
    assert!(corr_wrong < 0.9, "unpermuted correlation {corr_wrong}");

    // Saving: an adapter trained on the dequantized GGUF holds B in GGUF row order; its peft
    // file must be in Hugging Face order again, i.e. equal to the adapter it came from.
    let mut trainable = load_trainable(gguf.to_str().unwrap(), &Device::Cpu).unwrap();
    let lora = LoraConfig {
        targets: Targets::Modules(vec!["q_proj".into(), "k_proj".into()]),
        ..LoraConfig::default()
    };
    let trained = TrainableAdapter::attach(&mut trainable.model, &lora, 1).unwrap();
    let original = adapter_dir.path().join("adapter_model.safetensors");
    let original = candle_core::safetensors::load(original, &Device::Cpu).unwrap();
    for p in &trained.params {
        let key = |m: &str| format!("base_model.model.{}.{m}.weight", p.module);
        let heads = permuted_heads(&config, &p.module).unwrap();
        p.a.set(&original[&key("lora_A")]).unwrap();
        p.b.set(&to_gguf_rows(&original[&key("lora_B")], heads).unwrap())
            .unwrap();
    }
    let saved = tempfile::tempdir().unwrap();
    trained
        .save_peft(saved.path(), "smollm2", trainable.model.config())
        .unwrap();
    let saved = saved.path().join("adapter_model.safetensors");
    let saved = candle_core::safetensors::load(saved, &Device::Cpu).unwrap();
    assert_eq!(saved.len(), original.len());
    for (key, t) in &original {
        assert_eq!(max_abs_diff(t, &saved[key]).unwrap(), 0.0, "{key}");
    }
}
