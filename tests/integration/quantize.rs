//! `quantize` against llama.cpp's own quantizer (`llama_model_quantize` through
//! llama-cpp-python) on the same F32 file: the same format for every tensor, the same values to
//! the rounding, a file llama.cpp loads, and no more KL divergence than llama.cpp's file; and
//! bad input refused with nothing left behind.

use crate::common::{llama_cpp_available, llama_cpp_logits};
use billion_llm::eval::quant_eval;
use billion_llm::eval::speed::llama_cpp_quantize;
use billion_llm::eval::speed::write_random_gguf;
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::model::config::TransformerConfig;
use billion_llm::quantize::{job::read_gguf, quantize_gguf, FileType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::Path;

/// Every tensor of a GGUF file, dequantized, with its format.
fn tensors(path: &Path) -> BTreeMap<String, (GgmlDType, Vec<f32>)> {
    let (mut file, content) = read_gguf(path).unwrap();
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let q: QTensor = content.tensor(&mut file, &n, &Device::Cpu).unwrap();
            let v = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (n, (q.dtype(), v))
        })
        .collect()
}

/// A small random llama whose shapes take every branch of the mixes: 8 layers (so "more bits"
/// picks some and not others), 4 query heads per key/value head, rows of 256 and a
/// feed-forward width of 544, whose down projection fits 32-wide blocks but not 256-wide ones.
fn tiny_f32(dir: &Path) -> std::path::PathBuf {
    let json = r#"{"model_type": "llama", "vocab_size": 512, "hidden_size": 256,
        "intermediate_size": 544, "num_hidden_layers": 8, "num_attention_heads": 4,
        "num_key_value_heads": 1, "max_position_embeddings": 256, "rms_norm_eps": 1e-5}"#;
    let config = TransformerConfig::from_hub_json(json).unwrap();
    let path = dir.join("tiny-f32.gguf");
    write_random_gguf(&config, 7, GgmlDType::F32, &path).unwrap();
    path
}

#[test]
fn every_type_matches_llama_cpp_s_quantizer_tensor_by_tensor() {
    if !llama_cpp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f32_file = tiny_f32(dir.path());
    let original = tensors(&f32_file);
    let mut failures = Vec::new();
    for ft in FileType::ALL.into_iter().filter(|&t| t != FileType::F32) {
        let ours = dir.path().join(format!("ours-{ft}.gguf"));
        let theirs = dir.path().join(format!("theirs-{ft}.gguf"));
        quantize_gguf(&f32_file, ft, &ours, |_, _, _| {}).unwrap();
        llama_cpp_quantize(&f32_file, &ft.name().to_uppercase(), &theirs).unwrap();
        let (a, b) = (tensors(&ours), tensors(&theirs));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{ft}"
        );
        for (name, (ta, va)) in &a {
            let (tb, vb) = &b[name];
            assert_eq!(
                ta, tb,
                "{ft}: {name} is {ta:?} here, {tb:?} in llama.cpp's file"
            );
            // "To the rounding": the largest error llama.cpp's own file makes on this tensor
            // bounds how far ours may be from it, and nearly every value is the same.
            let x = &original[name].1;
            let step = x
                .iter()
                .zip(vb)
                .map(|(o, v)| (o - v).abs())
                .fold(0f32, f32::max);
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let differ = va
                .iter()
                .zip(vb)
                .filter(|(p, q)| (*p - *q).abs() > 1e-6 * scale)
                .count();
            let worst = va
                .iter()
                .zip(vb)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            if differ * 1000 > va.len() || worst > 2.0 * step + 1e-6 * scale {
                failures.push(format!(
                    "{ft}: {name} ({ta:?}): {differ} of {} values differ, by up to {worst} \
                     (llama.cpp's own error up to {step})",
                    va.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn our_q4_k_m_of_smollm2_loads_in_llama_cpp_and_diverges_no_more_than_its_own() {
    if !llama_cpp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("smollm2-f32.gguf");
    quantize_gguf(
        &asset(SMOLLM2_GGUF).unwrap(),
        FileType::F32,
        &reference,
        |_, _, _| {},
    )
    .unwrap();
    let ours = dir.path().join("ours-q4_k_m.gguf");
    let theirs = dir.path().join("theirs-q4_k_m.gguf");
    quantize_gguf(&reference, FileType::Q4KM, &ours, |_, _, _| {}).unwrap();
    llama_cpp_quantize(&reference, "Q4_K_M", &theirs).unwrap();

    let opts = LoadOptions::default();
    let mut r = load(reference.to_str().unwrap(), &opts).unwrap();
    let mut a = load(ours.to_str().unwrap(), &opts).unwrap();
    let mut b = load(theirs.to_str().unwrap(), &opts).unwrap();
    let texts = quant_eval::asset_texts(
        &asset("mmlu.jsonl").unwrap(),
        &asset("HumanEval.jsonl.gz").unwrap(),
    )
    .unwrap();
    let (_, kl_ours) = quant_eval::evaluate(&mut r, &mut a, &texts, 256, 1).unwrap();
    let (_, kl_theirs) = quant_eval::evaluate(&mut r, &mut b, &texts, 256, 1).unwrap();
    eprintln!(
        "q4_k_m mean KL: ours {:.5}, llama.cpp's {:.5}",
        kl_ours.mean_kl, kl_theirs.mean_kl
    );
    assert!(
        kl_ours.mean_kl <= 1.15 * kl_theirs.mean_kl,
        "{kl_ours:?} vs {kl_theirs:?}"
    );
    assert!(kl_ours.top1_agreement > 0.8, "{kl_ours:?}");

    // llama.cpp reads our file, and picks the token our engine picks on it.
    let ids = a
        .tokenizer()
        .unwrap()
        .encode("The capital of France is", true)
        .unwrap();
    let logits = llama_cpp_logits(&ours, None, &ids);
    let vocab = logits.len() / ids.len();
    let last = &logits[logits.len() - vocab..];
    a.model.reset_cache();
    let x = candle_core::Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mine: Vec<f32> = a
        .model
        .forward(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .get(ids.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(crate::common::argmax(last), crate::common::argmax(&mine));
}

#[test]
fn every_position_of_every_window_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let f32_file = tiny_f32(dir.path());
    let q = dir.path().join("q8.gguf");
    quantize_gguf(&f32_file, FileType::Q8_0, &q, |_, _, _| {}).unwrap();
    let opts = LoadOptions::default();
    let mut r = load(f32_file.to_str().unwrap(), &opts).unwrap();
    let mut m = load(q.to_str().unwrap(), &opts).unwrap();
    let ids: Vec<u32> = (5..45).collect();
    let windows = quant_eval::windows(&ids, Some(1), 16, 10);
    let all = quant_eval::divergence(&mut r, &mut m, &windows)
        .unwrap()
        .summary();
    // 40 tokens in windows of 15 after BOS: 15 + 15 + 10, each predicting all but its last.
    assert_eq!(all.positions, 16 + 16 + 11 - 3);
    assert!(all.mean_kl < 0.01 && all.top1_agreement > 0.9, "{all:?}");
}
