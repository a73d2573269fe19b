//! The four architectures against the Hugging Face transformers / peft reference checkpoints in
//! `tests/fixtures/reference` (see its README): logits of every position, greedy continuations
//! and LoRA logits.

use billion_llm::model::config::TransformerConfig;
use billion_llm::model::generation::{generate, GenerateOptions, SamplingParams};
use billion_llm::model::lora::LoraAdapter;
use billion_llm::model::weights::SafetensorsWeights;
use billion_llm::model::{max_abs_diff, Transformer, WeightFormat};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f64>>,
    greedy_prompt: Vec<u32>,
    greedy_new_tokens: Vec<u32>,
    lora_logits: Vec<Vec<f64>>,
    lora_loss: f64,
    lora_grad_norms: std::collections::HashMap<String, f64>,
}

const CASES: [&str; 5] = ["llama", "llama3", "stablelm", "gpt_neox", "gemma3"];

fn case_dir(case: &str) -> PathBuf {
    crate::common::reference_dir(case)
}

fn load(case: &str) -> (Transformer, Reference) {
    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(case_dir(case).join("reference.json")).unwrap(),
    )
    .unwrap();
    let format = WeightFormat {
        dtype: DType::F32,
        quantize: None,
    };
    (load_with(case, format), reference)
}

fn ids(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// max|ours - ref| must stay within 1e-4 · max|ref|.
fn assert_close(case: &str, what: &str, ours: &Tensor, reference: &[Vec<f64>]) {
    let ours: Vec<Vec<f32>> = ours.squeeze(0).unwrap().to_vec2().unwrap();
    assert_eq!(ours.len(), reference.len(), "{case} {what}: row count");
    let max_ref = reference.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    let mut max_diff = 0f64;
    for (row, ref_row) in ours.iter().zip(reference) {
        assert_eq!(row.len(), ref_row.len(), "{case} {what}: vocabulary size");
        for (a, b) in row.iter().zip(ref_row) {
            max_diff = max_diff.max((*a as f64 - b).abs());
        }
    }
    assert!(
        max_diff <= 1e-4 * max_ref,
        "{case} {what}: max|diff| {max_diff:e} > 1e-4 x max|ref| {max_ref:e}"
    );
}

#[test]
fn logits_of_every_position_match_transformers() {
    for case in CASES {
        let (mut model, r) = load(case);
        let logits = model.forward(&ids(&r.input_ids)).unwrap();
        assert_close(case, "logits", &logits, &r.logits);
    }
}

#[test]
fn greedy_continuation_matches_transformers() {
    for case in CASES {
        let (mut model, r) = load(case);
        // transformers' min_new_tokens masks EOS until all 16 are out, like --ignore-eos.
        let opts = GenerateOptions {
            max_new_tokens: r.greedy_new_tokens.len(),
            sampling: SamplingParams::default(),
            ignore_eos: true,
            stop: None,
        };
        let out = generate(&mut model, &r.greedy_prompt, &opts, |_| Ok(()))
            .unwrap()
            .tokens;
        assert_eq!(out, r.greedy_new_tokens, "{case} greedy continuation");
    }
}

#[test]
fn lora_logits_match_peft() {
    for case in CASES {
        let (mut model, r) = load(case);
        let adapter = LoraAdapter::load(&case_dir(case).join("lora"), &Device::Cpu).unwrap();
        adapter.apply(&mut model).unwrap();
        let logits = model.forward(&ids(&r.input_ids)).unwrap();
        assert_close(case, "lora logits", &logits, &r.lora_logits);
    }
}

#[test]
fn incremental_decoding_equals_one_full_forward() {
    for case in CASES {
        let (mut model, r) = load(case);
        let full = model.forward_uncached(&ids(&r.input_ids)).unwrap();
        // Feed the same ids in uneven chunks through the KV cache.
        let mut parts = Vec::new();
        let mut start = 0;
        for len in [5, 1, 1, 7, 1, 9] {
            let chunk = &r.input_ids[start..start + len];
            parts.push(model.forward(&ids(chunk)).unwrap());
            start += len;
        }
        let cached = Tensor::cat(&parts, 1).unwrap();
        let diff = max_abs_diff(&full, &cached).unwrap();
        assert!(
            diff < 1e-4,
            "{case}: cached vs full forward differ by {diff}"
        );
    }
}

#[test]
fn a_long_prompt_in_one_pass_equals_it_in_pieces() {
    for case in CASES {
        let (mut model, _) = load(case);
        // 200 positions: one pass reads its queries in two chunks (128 + 72); the pieces are
        // short enough for one chunk each, and the single position takes the decode path.
        let long: Vec<u32> = (0..200u32).map(|i| (i * 37 + 11) % 256).collect();
        let whole = model.forward(&ids(&long)).unwrap();
        model.reset_cache();
        let mut parts = Vec::new();
        let mut start = 0;
        for len in [100, 60, 1, 39] {
            parts.push(model.forward(&ids(&long[start..start + len])).unwrap());
            start += len;
        }
        let pieces = Tensor::cat(&parts, 1).unwrap();
        let diff = max_abs_diff(&whole, &pieces).unwrap();
        assert!(diff < 1e-4, "{case}: one pass vs pieces differ by {diff}");
    }
}

#[test]
fn truncating_the_cache_and_feeding_again_gives_the_same_logits() {
    for case in CASES {
        let (mut model, r) = load(case);
        let first = model.forward(&ids(&r.input_ids)).unwrap();
        // Roll back to 10 positions, feed different tokens, roll back again and re-feed the
        // original suffix: the logits must be those of the first pass.
        model.truncate_cache(10);
        assert_eq!(model.cache_len(), 10);
        model.forward(&ids(&[3, 4, 5, 6])).unwrap();
        model.truncate_cache(10);
        let again = model.forward(&ids(&r.input_ids[10..])).unwrap();
        let expected = first.narrow(1, 10, r.input_ids.len() - 10).unwrap();
        let diff: f32 = max_abs_diff(&expected, &again).unwrap();
        assert!(diff < 1e-5, "{case}: rollback changed the logits by {diff}");
        model.reset_cache();
        assert_eq!(model.cache_len(), 0);
    }
}

/// Largest |a - b| relative to max|b|.
fn relative_diff(a: &Tensor, b: &Tensor) -> f32 {
    let diff = max_abs_diff(a, b).unwrap();
    let scale: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    diff / scale
}

fn load_with(case: &str, format: WeightFormat) -> Transformer {
    let dir = case_dir(case);
    let config = TransformerConfig::from_file(&dir.join("config.json")).unwrap();
    let mut src = SafetensorsWeights::open(&[dir.join("model.safetensors")], &Device::Cpu).unwrap();
    Transformer::load(&config, &mut src, format, &Device::Cpu).unwrap()
}

#[test]
fn f16_and_quantized_weights_stay_close_to_f32() {
    for case in CASES {
        let (mut f32_model, r) = load(case);
        let input = ids(&r.input_ids);
        let exact = f32_model.forward(&input).unwrap();
        let f16 = load_with(
            case,
            WeightFormat {
                dtype: DType::F16,
                quantize: None,
            },
        )
        .forward(&input)
        .unwrap();
        let d = relative_diff(&f16, &exact);
        assert!(d < 1e-2, "{case} f16: relative difference {d}");
        // q8_0 packs rows in blocks of 32 values; the stablelm case's MLP (176) cannot be.
        let q8_format = WeightFormat {
            dtype: DType::F32,
            quantize: Some(candle_core::quantized::GgmlDType::Q8_0),
        };
        if case == "stablelm" {
            let dir = case_dir(case);
            let config = TransformerConfig::from_file(&dir.join("config.json")).unwrap();
            let mut src =
                SafetensorsWeights::open(&[dir.join("model.safetensors")], &Device::Cpu).unwrap();
            let err = Transformer::load(&config, &mut src, q8_format, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("176") && err.contains("block size 32"),
                "{err}"
            );
            continue;
        }
        let mut q8 = load_with(case, q8_format);
        let d = relative_diff(&q8.forward(&input).unwrap(), &exact);
        assert!(d < 5e-2, "{case} q8_0: relative difference {d}");
        assert!(q8.weight_bytes() < f32_model.weight_bytes() / 2);
    }
}

/// A quantized model keeps its KV cache in f16 where our kernels read it, and decoding one
/// token at a time through that cache gives the logits of one forward that caches nothing
/// (keys and values in f32), to within the bound q8_0 weights keep from f32 ones. With an f32
/// cache the two are equal to the bit; f16 changes the last bits of the keys and values, which
/// the int8 rounding of the next matmul's input can turn into a whole rounding step (2% here;
/// on SmolLM2-135M, 0.16 logits on average, as much as two engines differ).
#[test]
fn a_quantized_models_f16_cache_decodes_as_its_uncached_forward() {
    let format = WeightFormat {
        dtype: DType::F32,
        quantize: Some(candle_core::quantized::GgmlDType::Q8_0),
    };
    for case in ["llama", "gpt_neox"] {
        let (_, r) = load(case);
        let mut q8 = load_with(case, format);
        let full = q8.forward_uncached(&ids(&r.input_ids)).unwrap();
        let steps: Vec<Tensor> = r
            .input_ids
            .iter()
            .map(|&id| q8.forward(&ids(&[id])).unwrap())
            .collect();
        if billion_llm::kernels::isa::simd() {
            assert_eq!(q8.cache_dtype(), Some(DType::F16), "{case}");
        }
        let d = relative_diff(&Tensor::cat(&steps, 1).unwrap(), &full);
        assert!(
            d < 5e-2,
            "{case}: f16 cache vs uncached forward: relative difference {d}"
        );
    }
    // Plain f32 weights keep an f32 cache: their logits match transformers' at 1e-4.
    let (mut model, r) = load("llama");
    model.forward(&ids(&r.input_ids)).unwrap();
    assert_eq!(model.cache_dtype(), Some(DType::F32));
}

#[test]
fn bf16_on_cpu_is_a_clear_error() {
    let dir = case_dir("llama");
    let config = TransformerConfig::from_file(&dir.join("config.json")).unwrap();
    let mut src = SafetensorsWeights::open(&[dir.join("model.safetensors")], &Device::Cpu).unwrap();
    let format = WeightFormat {
        dtype: DType::BF16,
        quantize: None,
    };
    let err = Transformer::load(&config, &mut src, format, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16") && err.contains("--dtype f32"), "{err}");
}

/// With `set_training(true)` the model uses gradient-recording ops: the LoRA loss and the
/// gradient norm of every LoRA matrix match peft's (candle's fused kernels would give none).
#[test]
fn lora_gradients_match_peft() {
    use candle_core::Var;
    for case in CASES {
        let (mut model, r) = load(case);
        let adapter = LoraAdapter::load(&case_dir(case).join("lora"), &Device::Cpu).unwrap();
        adapter.apply(&mut model).unwrap();
        // Make A and B trainable variables, keyed like peft's parameter names.
        let mut vars = Vec::new();
        for linear in model.linears_mut() {
            if let Some(lora) = linear.lora.as_mut() {
                let a = Var::from_tensor(&lora.a).unwrap();
                let b = Var::from_tensor(&lora.b).unwrap();
                lora.a = a.as_tensor().clone();
                lora.b = b.as_tensor().clone();
                let key = |m: &str| format!("base_model.model.{}.{m}.default.weight", linear.name);
                vars.push((key("lora_A"), a));
                vars.push((key("lora_B"), b));
            }
        }
        model.set_training(true);
        let logits = model.forward_uncached(&ids(&r.input_ids)).unwrap();
        // Next-token cross-entropy: position t predicts id t + 1.
        let n = r.input_ids.len() - 1;
        let inputs = logits.squeeze(0).unwrap().narrow(0, 0, n).unwrap();
        let targets = Tensor::new(&r.input_ids[1..], &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&inputs, &targets).unwrap();
        let loss_value: f32 = loss.to_scalar().unwrap();
        assert!(
            (loss_value as f64 - r.lora_loss).abs() < 1e-4 * r.lora_loss,
            "{case}: loss {loss_value} vs {}",
            r.lora_loss
        );
        let grads = loss.backward().unwrap();
        assert_eq!(vars.len(), r.lora_grad_norms.len(), "{case}");
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .expect("a gradient reached the LoRA matrix");
            let norm: f32 = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar()
                .unwrap();
            let expected = r.lora_grad_norms[name];
            assert!(
                (norm as f64 - expected).abs() < 1e-3 * expected,
                "{case} {name}: gradient norm {norm} vs {expected}"
            );
        }
    }
}

/// `--quantize q4_k` where 256 does not divide the rows (this model's are 64 long) takes the
/// format llama.cpp's quantizer falls back to, q5_0, as a `Q4_K_M` file does: the model loads,
/// every matrix runs on our packed kernel, and the logits stay as close to f32 as q5_0 allows.
#[test]
fn q4_k_takes_llama_cpp_s_fallback_where_rows_are_short() {
    let (mut f32_model, r) = load("llama");
    let input = ids(&r.input_ids);
    let exact = f32_model.forward(&input).unwrap();
    let mut q4_k = load_with(
        "llama",
        WeightFormat {
            dtype: DType::F32,
            quantize: Some(candle_core::quantized::GgmlDType::Q4K),
        },
    );
    if billion_llm::kernels::isa::simd() {
        assert!(
            q4_k.fallback_matrices().is_empty(),
            "{:?}",
            q4_k.fallback_matrices()
        );
    }
    // This tiny random model is sensitive to rounding: q4_0 moves its logits by 44% of their
    // largest value, q5_0 (one more bit) by about half as much.
    let d = relative_diff(&q4_k.forward(&input).unwrap(), &exact);
    let mut q4_0 = load_with(
        "llama",
        WeightFormat {
            dtype: DType::F32,
            quantize: Some(candle_core::quantized::GgmlDType::Q4_0),
        },
    );
    let d4 = relative_diff(&q4_0.forward(&input).unwrap(), &exact);
    assert!(d < 0.3 && d < 0.7 * d4, "q4_K (as q5_0): {d}, q4_0: {d4}");
}
