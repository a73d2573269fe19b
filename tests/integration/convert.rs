//! `quantize` from a Hugging Face checkpoint: the GGUF file it writes gives transformers' logits
//! in our engine and in llama.cpp (so the names, the q/k row order and Llama 3's `rope_freqs`
//! are llama.cpp's), and its tokenizer metadata makes llama.cpp tokenize as the checkpoint's
//! tokenizer.json does; at full size (SmolLM2), a checkpoint quantizes to the bytes its
//! llama.cpp-converted GGUF quantizes to; checkpoints it cannot convert are refused with nothing
//! written.

use crate::common::{
    checkpoint_folder, hf_folder_from_gguf, llama_cpp_available, llama_cpp_logits,
    llama_cpp_tokenize, reference_dir,
};
use billion_llm::hub::assets::{asset, GEMMA3_GGUF, SMOLLM2_GGUF};
use billion_llm::hub::convert::{hyperparameters, tokenizer_metadata, HfFiles, HfGguf};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::hub::tokenizer::Tokenizer;
use billion_llm::model::config::TransformerConfig;
use billion_llm::quantize::job::{read_gguf, write_atomically};
use billion_llm::quantize::{quantize_gguf, quantize_model, FileType};
use candle_core::{Device, Tensor};
use std::path::Path;

#[derive(serde::Deserialize)]
struct Reference {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f64>>,
}

/// max|a - ref| over every position, and max|ref|.
fn max_diff(ours: &[f32], reference: &[Vec<f64>]) -> (f64, f64) {
    let flat: Vec<f64> = reference.iter().flatten().copied().collect();
    assert_eq!(ours.len(), flat.len(), "positions x vocabulary");
    let max_ref = flat.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(&flat)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    (diff, max_ref)
}

#[test]
fn a_llama_checkpoint_becomes_a_gguf_that_gives_transformers_logits_here_and_in_llama_cpp() {
    let with_llama_cpp = llama_cpp_available();
    let dir = tempfile::tempdir().unwrap();
    // `llama`: grouped-query attention; `llama3`: rope scaling, explicit head_dim, tied output.
    for case in ["llama", "llama3"] {
        let r: Reference = serde_json::from_str(
            &std::fs::read_to_string(reference_dir(case).join("reference.json")).unwrap(),
        )
        .unwrap();
        let folder = checkpoint_folder(case, dir.path());
        let mut source = HfGguf::open(&HfFiles::from_folder(&folder).unwrap()).unwrap();
        assert!(source.warnings.is_empty(), "{case}: {:?}", source.warnings);
        let out = dir.path().join(format!("{case}-f32.gguf"));
        quantize_model(&mut source, FileType::F32, &out, |_, _, _| {}).unwrap();
        let (_, content) = read_gguf(&out).unwrap();
        assert_eq!(
            content.tensor_infos.contains_key("rope_freqs.weight"),
            case == "llama3",
            "{case}: Llama 3's frequencies are stored as llama.cpp stores them"
        );

        let mut loaded = load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
        assert_eq!(
            loaded.model.config().rope_freq_factors.is_some(),
            case == "llama3",
            "{case}: the engine reads rope_freqs back"
        );
        let ids = Tensor::new(r.input_ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours: Vec<f32> = loaded
            .model
            .forward_uncached(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (diff, max_ref) = max_diff(&ours, &r.logits);
        assert!(
            diff <= 1e-4 * max_ref,
            "{case}: our engine on the GGUF: max|diff| {diff:e}, max|ref| {max_ref:e}"
        );

        if with_llama_cpp {
            // llama.cpp keeps its KV cache in f16, hence the looser bound.
            let theirs = llama_cpp_logits(&out, None, &r.input_ids);
            let (diff, max_ref) = max_diff(&theirs, &r.logits);
            assert!(
                diff <= 1e-2 * max_ref,
                "{case}: llama.cpp on the GGUF: max|diff| {diff:e}, max|ref| {max_ref:e}"
            );
        }
    }
}

/// A GGUF file with only hyperparameters and tokenizer metadata, which llama.cpp loads with
/// `vocab_only` to tokenize.
fn vocab_only_gguf(
    tokenizer: &serde_json::Value,
    tokenizer_config: Option<&serde_json::Value>,
    vocab: usize,
    path: &Path,
) -> serde_json::Value {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": {vocab}, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "bos_token_id": 1, "eos_token_id": 2}}"#
    );
    let config = TransformerConfig::from_hub_json(&json).unwrap();
    let mut md = hyperparameters(&config, "tokenizer test");
    let (vocab_md, warnings) = tokenizer_metadata(tokenizer, tokenizer_config, &config).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    md.extend(vocab_md);
    write_atomically(path, &md, &[]).unwrap();
    let pre = md
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.pre")
        .map(|(_, v)| v.to_string().unwrap().clone());
    serde_json::json!({ "pre": pre })
}

const TEXTS: [&str; 5] = [
    "Hello world! It's 2026; 12345 apples cost $3.50.",
    "  leading spaces,\ttabs\nand new lines\n\n",
    "def f(x):\n    return x ** 2  # squares\n",
    "Ünïcödé: naïve café, 東京, emoji 🙂",
    "I'm sure they'll say we've done it, didn't they?",
];

#[test]
fn the_llama_3_2_tokenizer_json_becomes_metadata_llama_cpp_tokenizes_with_as_hugging_face_does() {
    if !llama_cpp_available() {
        return;
    }
    let dir = asset("llama3.2-tokenizer").unwrap();
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap()
    };
    let (tok, tok_config) = (read("tokenizer.json"), read("tokenizer_config.json"));
    let out = tempfile::tempdir().unwrap();
    let gguf = out.path().join("llama3-vocab.gguf");
    // This tokenizer.json (the vision model's) adds `<|image|>` at 128,256.
    let facts = vocab_only_gguf(&tok, Some(&tok_config), 128_257, &gguf);
    assert_eq!(facts["pre"], "llama-bpe");
    let hf = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap();
    let mut texts = TEXTS.to_vec();
    texts.push("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    let theirs = llama_cpp_tokenize(&gguf, &texts);
    for (text, ids) in texts.iter().zip(theirs) {
        assert_eq!(ids, hf.encode(text, true).unwrap(), "{text:?}");
    }
}

/// A GGUF file's tokenizer written out as tokenizer.json and converted back: llama.cpp
/// tokenizes alike from the original file and from the conversion.
fn round_trip_through_tokenizer_json(gguf: &Path, vocab: usize) -> serde_json::Value {
    let (_, content) = read_gguf(gguf).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&Tokenizer::from_gguf(&content).unwrap().to_json().unwrap()).unwrap();
    let bos = content.metadata["tokenizer.ggml.bos_token_id"]
        .to_u32()
        .unwrap() as usize;
    let bos_text = json["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, id)| id.as_u64() == Some(bos as u64))
        .map(|(t, _)| t.clone())
        .or_else(|| {
            json["added_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"].as_u64() == Some(bos as u64))
                .map(|a| a["content"].as_str().unwrap().to_string())
        })
        .unwrap();
    let add_bos = content
        .metadata
        .get("tokenizer.ggml.add_bos_token")
        .is_some_and(|v| v.to_bool().unwrap());
    let tok_config = serde_json::json!({"bos_token": bos_text, "add_bos_token": add_bos});
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("vocab.gguf");
    let facts = vocab_only_gguf(&json, Some(&tok_config), vocab, &converted);
    let texts = TEXTS.to_vec();
    assert_eq!(
        llama_cpp_tokenize(&converted, &texts),
        llama_cpp_tokenize(gguf, &texts),
        "{}",
        gguf.display()
    );
    facts
}

#[test]
fn smollm2_s_byte_level_tokenizer_survives_tokenizer_json_for_llama_cpp() {
    if !llama_cpp_available() {
        return;
    }
    let facts = round_trip_through_tokenizer_json(&asset(SMOLLM2_GGUF).unwrap(), 49_152);
    assert_eq!(facts["pre"], "smollm");
}

#[test]
fn gemma_s_sentencepiece_tokenizer_survives_tokenizer_json_for_llama_cpp() {
    if !llama_cpp_available() {
        return;
    }
    round_trip_through_tokenizer_json(&asset(GEMMA3_GGUF).unwrap(), 262_144);
}

#[test]
fn checkpoints_quantize_cannot_convert_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let stablelm = checkpoint_folder("stablelm", dir.path());
    let err = HfGguf::open(&HfFiles::from_folder(&stablelm).unwrap())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("llama-architecture")
            && err.to_string().contains("convert_hf_to_gguf"),
        "{err}"
    );
    let llama = checkpoint_folder("llama", dir.path());
    // A shard that lost a tensor.
    let weights = llama.join("model.safetensors");
    let mut kept = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    kept.remove("model.layers.1.mlp.down_proj.weight").unwrap();
    candle_core::safetensors::save(&kept, &weights).unwrap();
    let err = HfGguf::open(&HfFiles::from_folder(&llama).unwrap())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("lack blk.1.ffn_down.weight"),
        "{err}"
    );
    std::fs::remove_file(llama.join("tokenizer.json")).unwrap();
    let err = HfFiles::from_folder(&llama).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "only the two folders"
    );
}

/// SmolLM2 at full size: its GGUF written back out as a hub folder (f32 safetensors in Hugging
/// Face's row order, config.json, its tokenizer as tokenizer.json), then quantized from that
/// folder, gives the same tensors, bit for bit, and the same tokenizer metadata as quantizing
/// the GGUF itself, and llama.cpp the same logits.
#[test]
fn smollm2_from_a_hub_folder_quantizes_to_the_file_its_gguf_quantizes_to() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = asset(SMOLLM2_GGUF).unwrap();
    let folder = dir.path().join("SmolLM2");
    std::fs::create_dir_all(&folder).unwrap();
    hf_folder_from_gguf(&gguf, &folder);
    let (_, original) = read_gguf(&gguf).unwrap();
    let text = |k: &str| original.metadata[k].to_string().unwrap().clone();
    std::fs::write(
        folder.join("tokenizer.json"),
        Tokenizer::from_gguf(&original).unwrap().to_json().unwrap(),
    )
    .unwrap();
    let tokenizer_config = serde_json::json!({"bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>", "add_bos_token": false,
        "chat_template": text("tokenizer.chat_template")});
    std::fs::write(
        folder.join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )
    .unwrap();

    let (converted, direct) = (
        dir.path().join("from-folder.gguf"),
        dir.path().join("direct.gguf"),
    );
    let mut source = HfGguf::open(&HfFiles::from_folder(&folder).unwrap()).unwrap();
    quantize_model(&mut source, FileType::Q4KM, &converted, |_, _, _| {}).unwrap();
    quantize_gguf(&gguf, FileType::Q4KM, &direct, |_, _, _| {}).unwrap();
    let (mut fa, a) = read_gguf(&converted).unwrap();
    let (mut fb, b) = read_gguf(&direct).unwrap();
    let mut names: Vec<_> = a.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut direct_names: Vec<_> = b.tensor_infos.keys().cloned().collect();
    direct_names.sort();
    assert_eq!(names, direct_names);
    for n in &names {
        let x = a.tensor(&mut fa, n, &Device::Cpu).unwrap();
        let y = b.tensor(&mut fb, n, &Device::Cpu).unwrap();
        assert_eq!(x.dtype(), y.dtype(), "{n}");
        assert!(x.data().unwrap() == y.data().unwrap(), "{n}: other bytes");
    }
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
        "llama.context_length",
        "llama.rope.freq_base",
        "llama.attention.head_count_kv",
    ] {
        assert_eq!(
            format!("{:?}", a.metadata.get(key)),
            format!("{:?}", b.metadata.get(key)),
            "{key}"
        );
    }
    if llama_cpp_available() {
        let ids = [1, 504, 3458, 314, 4123, 30, 216, 9, 13, 1717];
        assert_eq!(
            llama_cpp_logits(&converted, None, &ids),
            llama_cpp_logits(&direct, None, &ids)
        );
    }
}
