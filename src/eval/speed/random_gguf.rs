//! GGUF files of random weights, so llama.cpp can run the very architecture and format we
//! measure without a download.

use crate::model::config::TransformerConfig;
use crate::model::weights::{GgufWeights, RandomWeights, Weight, WeightNames, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use std::path::Path;

/// Writes a llama-architecture GGUF with the random weights `--weights random` builds, so
/// llama.cpp can run the very architecture (and format) we measure. Linear weights and the
/// output projection are stored as `dtype`; norms stay f32. The vocabulary is placeholder
/// tokens: enough for llama.cpp to load, as the benchmark feeds token ids.
pub fn write_random_gguf(
    config: &TransformerConfig,
    seed: u64,
    dtype: GgmlDType,
    path: &Path,
) -> Result<()> {
    if config.architecture != crate::model::config::Architecture::Llama {
        bail!("only llama-family models can be written as GGUF");
    }
    let c = config;
    let mut src = RandomWeights::new(seed, DType::F32, &Device::Cpu);
    let names = WeightNames::new(c.architecture);
    let (h, hd, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let mut wanted: Vec<(String, Vec<usize>)> = vec![
        (format!("{}.weight", names.embed), vec![c.vocab_size, h]),
        (format!("{}.weight", names.final_norm), vec![h]),
    ];
    if !c.tie_word_embeddings {
        wanted.push((format!("{}.weight", names.lm_head), vec![c.vocab_size, h]));
    }
    for layer in 0..c.num_layers {
        let n = names.block(layer);
        wanted.extend([
            (format!("{}.weight", n.q), vec![c.num_heads * hd, h]),
            (format!("{}.weight", n.k), vec![c.num_kv_heads * hd, h]),
            (format!("{}.weight", n.v), vec![c.num_kv_heads * hd, h]),
            (format!("{}.weight", n.o), vec![h, c.num_heads * hd]),
            (format!("{}.weight", n.gate), vec![i, h]),
            (format!("{}.weight", n.up), vec![i, h]),
            (format!("{}.weight", n.down), vec![h, i]),
            (format!("{}.weight", n.norm_attn), vec![h]),
            (format!("{}.weight", n.norm_mlp), vec![h]),
        ]);
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, dims) in wanted {
        let Weight::Dense(t) = src.get(&name, &dims)? else {
            unreachable!("random weights are dense")
        };
        let q = if dims.len() == 1 {
            GgmlDType::F32
        } else {
            dtype
        };
        let gguf = GgufWeights::gguf_name(&name, c.architecture).context("no GGUF name")?;
        tensors.push((gguf, QTensor::quantize(&t, q)?));
    }
    use gguf_file::Value as V;
    let tokens: Vec<V> = (0..c.vocab_size)
        .map(|t| V::String(format!("<t{t}>")))
        .collect();
    let mut metadata = crate::hub::convert::hyperparameters(c, "billion-llm random weights");
    let vocab: Vec<(&str, V)> = vec![
        ("tokenizer.ggml.model", V::String("llama".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens)),
        (
            "tokenizer.ggml.scores",
            V::Array(vec![V::F32(0.0); c.vocab_size]),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Array(vec![V::I32(1); c.vocab_size]),
        ),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
    ];
    metadata.extend(vocab.into_iter().map(|(k, v)| (k.to_string(), v)));
    let part = path.with_extension("gguf.part");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&part)?);
    let md: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md, &ts)?;
    drop(f);
    std::fs::rename(&part, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_gguf_loads_back_into_the_transformer() {
        let json = r#"{"model_type": "llama", "vocab_size": 256, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5}"#;
        let config = TransformerConfig::from_hub_json(json).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_random_gguf(&config, 1, GgmlDType::Q8_0, &path).unwrap();
        let (mut weights, read) = GgufWeights::open(&path, &Device::Cpu).unwrap();
        assert_eq!(read.hidden_size, 64);
        assert_eq!(read.num_kv_heads, 2);
        assert_eq!(read.vocab_size, 256);
        let format = crate::model::WeightFormat {
            dtype: DType::F32,
            quantize: None,
        };
        let mut model =
            crate::model::Transformer::load(&read, &mut weights, format, &Device::Cpu).unwrap();
        let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        assert_eq!(model.forward(&ids).unwrap().dims(), &[1, 3, 256]);
    }
}
