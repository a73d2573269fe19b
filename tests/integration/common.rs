//! Helpers shared by the test modules: the reference checkpoints, and llama.cpp (through
//! llama-cpp-python) to compare against.

use billion_llm::model::config::{Norm, TransformerConfig};
use billion_llm::model::rope_layout::{permuted_heads, to_hf_rows};
use billion_llm::model::weights::{GgufWeights, WeightNames, WeightSource};
use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The folder of one reference checkpoint (`llama`, `llama3`, `stablelm`, `gpt_neox`), made by
/// transformers and peft: see tests/fixtures/reference/README.md.
pub fn reference_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(case)
}

/// The index of a row's largest logit (the greedy token).
pub fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .expect("a row of logits is not empty")
}

/// Whether llama-cpp-python can be imported. Under CI it must be: `.ci/run` installs it.
pub fn llama_cpp_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import llama_cpp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "llama-cpp-python is missing: .ci/run installs it (pip install llama-cpp-python)"
        );
        eprintln!("skipped: llama-cpp-python is not installed (pip install llama-cpp-python)");
    }
    ok
}

/// llama.cpp's logits at every position of `ids`, with an optional GGUF LoRA adapter.
pub fn llama_cpp_logits(model: &Path, lora: Option<&Path>, ids: &[u32]) -> Vec<f32> {
    llama_cpp_last_logits(model, lora, ids, ids.len())
}

/// llama.cpp's logits at the last `last` positions of `ids`.
pub fn llama_cpp_last_logits(
    model: &Path,
    lora: Option<&Path>,
    ids: &[u32],
    last: usize,
) -> Vec<f32> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_cpp_logits.py");
    let ids_arg: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg("--model")
        .arg(model)
        .arg("--ids")
        .arg(ids_arg.join(","))
        .arg("--last")
        .arg(last.to_string())
        .arg("--out")
        .arg(out.path());
    if let Some(lora) = lora {
        cmd.arg("--lora").arg(lora);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "llama_cpp_logits.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out.path())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// llama.cpp's token ids for each of `texts` (with BOS, special tokens parsed).
pub fn llama_cpp_tokenize(model: &Path, texts: &[&str]) -> Vec<Vec<u32>> {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("texts.json"), dir.path().join("ids.json"));
    std::fs::write(&input, serde_json::to_vec(texts).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_cpp_logits.py");
    let run = std::process::Command::new("python3")
        .arg(script)
        .arg("--model")
        .arg(model)
        .arg("--tokenize")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "llama_cpp_logits.py --tokenize failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// A byte-level BPE `tokenizer.json` for the reference checkpoints, which have none: GPT-2's
/// byte characters, one merge (`Ġ` + `t`, in the place of byte 0xFF, which UTF-8 never uses),
/// and ids from 256 up to `vocab` as special tokens.
pub fn byte_level_tokenizer(vocab: usize) -> serde_json::Value {
    // GPT-2's printable stand-ins for bytes: printable Latin-1 bytes stand for themselves, the
    // rest take the characters from U+0100 on, in byte order.
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256;
    let mut model_vocab = serde_json::Map::new();
    for b in 0..255u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        model_vocab.insert(char::from_u32(c).unwrap().to_string(), b.into());
    }
    model_vocab.insert("\u{120}t".into(), 255.into());
    let added: Vec<serde_json::Value> = (256..vocab)
        .map(|id| {
            serde_json::json!({"id": id, "content": format!("<|extra_{id}|>"), "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": model_vocab,
            "merges": [["\u{120}", "t"]]}
    })
}

/// A reference checkpoint as a hub model folder in `dir`: its config and weights, and a
/// [`byte_level_tokenizer`] of its vocabulary size.
pub fn checkpoint_folder(case: &str, dir: &Path) -> PathBuf {
    let folder = dir.join(case);
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(reference_dir(case).join(file), folder.join(file)).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    std::fs::write(
        folder.join("tokenizer.json"),
        byte_level_tokenizer(vocab).to_string(),
    )
    .unwrap();
    folder
}

/// Writes the GGUF as a Hugging Face folder: every tensor dequantized to f32 under its Hugging
/// Face name, q/k rows put back into Hugging Face order, and a `config.json` from the metadata.
pub fn hf_folder_from_gguf(gguf: &Path, dir: &Path) -> TransformerConfig {
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
        let gguf_name = GgufWeights::gguf_name(&name, c.architecture).unwrap();
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
