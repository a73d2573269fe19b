//! A peft adapter on `q_proj` / `k_proj` moves the SmolLM2 GGUF's logits the way it moves the
//! same weights in Hugging Face layout. llama.cpp permuted the q/k rows of the GGUF for its
//! interleaved RoPE, so the adapter's `B` rows have to be permuted the same way when it is applied.
//!
//! The adapter written for llama.cpp (its GGUF LoRA format) and the merged GGUF are checked
//! against llama.cpp itself, through llama-cpp-python, which `.ci/run` installs.

use billion_llm::finetune::adapter::TrainableAdapter;
use billion_llm::finetune::base::load_trainable;
use billion_llm::finetune::config::{LoraConfig, Targets};
use billion_llm::finetune::export;
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::model::config::TransformerConfig;
use billion_llm::model::lora::LoraAdapter;
use billion_llm::model::rope_layout::{permuted_heads, to_gguf_rows, to_hf_rows};
use billion_llm::model::weights::WeightNames;
use billion_llm::model::{max_abs_diff, Lora, Transformer};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

use crate::common::{hf_folder_from_gguf, llama_cpp_available, llama_cpp_logits};

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

fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
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
                dropout_rng: None,
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

#[test]
fn gguf_adapter_and_merged_gguf_give_llama_cpp_our_logits() {
    if !llama_cpp_available() {
        return;
    }
    let gguf = asset(SMOLLM2_GGUF).unwrap();
    // An adapter as training leaves it on the GGUF base (B in GGUF row order), with non-zero B
    // on q, k and v so that both the permuted and the plain modules are exercised.
    let mut trainable = load_trainable(gguf.to_str().unwrap(), &Device::Cpu).unwrap();
    let lora = LoraConfig {
        targets: Targets::Modules(vec!["q_proj".into(), "k_proj".into(), "v_proj".into()]),
        ..LoraConfig::default()
    };
    let trained = TrainableAdapter::attach(&mut trainable.model, &lora, 3).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for p in &trained.params {
        let (out, r) = p.b.dims2().unwrap();
        let v: Vec<f32> = (0..out * r).map(|_| rng.random_range(-0.5..0.5)).collect();
        p.b.set(&Tensor::from_vec(v, (out, r), &Device::Cpu).unwrap())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    trained
        .save_peft(dir.path(), "smollm2", trainable.model.config())
        .unwrap();
    drop(trainable);
    let adapter = LoraAdapter::load(dir.path(), &Device::Cpu).unwrap();
    let adapter_gguf = dir.path().join("adapter.gguf");
    let merged_gguf = dir.path().join("merged.gguf");
    export::write_gguf_lora(&adapter, &gguf, &adapter_gguf).unwrap();
    export::merge_into_gguf(&adapter, &gguf, &merged_gguf).unwrap();

    let mut base = load(gguf.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let ids = base
        .tokenizer()
        .unwrap()
        .encode(
            "Turn this sentence into a JSON record: Ines Park, 41, cooks in Oslo.",
            false,
        )
        .unwrap();
    let with_adapter = LoadOptions {
        adapter: Some(dir.path().to_path_buf()),
        ..LoadOptions::default()
    };
    let ours_base = logits(&mut base.model, &ids);
    let ours_adapted = logits(
        &mut load(gguf.to_str().unwrap(), &with_adapter).unwrap().model,
        &ids,
    );
    let ours_merged = logits(
        &mut load(merged_gguf.to_str().unwrap(), &LoadOptions::default())
            .unwrap()
            .model,
        &ids,
    );
    let cpp_base = llama_cpp_logits(&gguf, None, &ids);
    let cpp_adapted = llama_cpp_logits(&gguf, Some(&adapter_gguf), &ids);
    let cpp_merged = llama_cpp_logits(&merged_gguf, None, &ids);
    assert_eq!(cpp_base.len(), ours_base.len());

    // The yardstick: the two engines on the same file differ by their kernels' rounding (RMS
    // over every position and token, so that one extreme logit does not decide).
    let engine_error = rms(&diff(&ours_base, &cpp_base));
    let effect_ours = diff(&ours_adapted, &ours_base);
    let effect_cpp = diff(&cpp_adapted, &cpp_base);
    let adapted_error = rms(&diff(&ours_adapted, &cpp_adapted));
    let merged_error = rms(&diff(&ours_merged, &cpp_merged));
    let corr = correlation(&effect_ours, &effect_cpp);
    let corr_merged = correlation(&diff(&ours_merged, &ours_base), &effect_ours);
    // The same adapter exported without the q/k row permutation: llama.cpp must disagree.
    let mut unpermuted = adapter.clone();
    for (module, (_, b)) in unpermuted.modules.iter_mut() {
        if let Some(heads) = permuted_heads(base.model.config(), module) {
            *b = to_hf_rows(b, heads).unwrap();
        }
    }
    let wrong_gguf = dir.path().join("unpermuted.gguf");
    export::write_gguf_lora(&unpermuted, &gguf, &wrong_gguf).unwrap();
    let corr_wrong = correlation(
        &diff(&llama_cpp_logits(&gguf, Some(&wrong_gguf), &ids), &cpp_base),
        &effect_ours,
    );
    eprintln!(
        "RMS: effect {} engine error {engine_error} adapted error {adapted_error} merged error \
         {merged_error}; correlation {corr}, merged-vs-adapter {corr_merged}, unpermuted {corr_wrong}",
        rms(&effect_ours)
    );
    assert!(
        rms(&effect_ours) > 5.0 * engine_error,
        "the adapter must move the logits well beyond the engines' difference"
    );
    assert!(corr > 0.98, "llama.cpp's adapter effect correlates {corr}");
    assert!(
        adapted_error <= 2.0 * engine_error,
        "with the adapter the engines differ by {adapted_error} (RMS), without by {engine_error}"
    );
    assert!(
        corr_wrong < 0.9,
        "an unpermuted adapter correlates {corr_wrong}"
    );
    // Both engines read the merged file alike, and merging (then quantizing again) keeps the
    // adapter's effect.
    assert!(
        merged_error <= 2.0 * engine_error,
        "on the merged GGUF the engines differ by {merged_error} (RMS), on the base by {engine_error}"
    );
    assert!(corr_merged > 0.97, "merged effect correlates {corr_merged}");
}
