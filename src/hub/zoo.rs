//! The model zoo: short aliases for the compared models and their same-tokenizer companions.

use crate::model::config::Architecture;
use anyhow::Result;

/// Which chat format a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|user|>\n…</s>\n<|assistant|>\n` (TinyLlama chat, from HuggingFaceH4's Zephyr).
    Zephyr,
    /// `<|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>` (Llama 3).
    Llama3,
    /// `<|im_start|>user\n…<|im_end|>` (StableLM 2 chat, SmolLM2).
    ChatMl,
    /// `[INST] … [/INST]` (Llama 2 chat).
    Llama2,
    /// No chat training: plain text continuation (Pythia, Gemma 3 270M base).
    Plain,
}

/// Facts about one zoo model. Parameter counts and licenses are from the model cards.
#[derive(Debug, Clone, Copy)]
pub struct ZooModel {
    pub alias: &'static str,
    /// A short name for tables and charts.
    pub name: &'static str,
    pub hub_id: &'static str,
    pub architecture: Architecture,
    /// As stated on the model card.
    pub parameters: &'static str,
    pub license: &'static str,
    /// Gated repositories need an accepted license and `HF_TOKEN`.
    pub gated: bool,
    pub chat_format: ChatFormat,
    /// Models with the same tokenizer family can draft for each other (speculative decoding).
    pub tokenizer_family: &'static str,
    /// One of the four models this workbook compares (the others are companions).
    pub compared: bool,
    /// The hub `config.json`, shipped with the crate so `--weights random` needs no download.
    pub config_json: Option<&'static str>,
}

pub const ZOO: &[ZooModel] = &[
    ZooModel {
        alias: "tinyllama",
        name: "TinyLlama 1.1B",
        hub_id: "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        architecture: Architecture::Llama,
        parameters: "1.1B",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::Zephyr,
        tokenizer_family: "llama2",
        compared: true,
        config_json: Some(include_str!(
            "../../configs/TinyLlama--TinyLlama-1.1B-Chat-v1.0.json"
        )),
    },
    ZooModel {
        alias: "llama3.2-1b",
        name: "Llama 3.2 1B",
        hub_id: "meta-llama/Llama-3.2-1B-Instruct",
        architecture: Architecture::Llama,
        parameters: "1.24B",
        license: "llama3.2",
        gated: true,
        chat_format: ChatFormat::Llama3,
        tokenizer_family: "llama3",
        compared: true,
        config_json: Some(include_str!(
            "../../configs/meta-llama--Llama-3.2-1B-Instruct.json"
        )),
    },
    ZooModel {
        alias: "stablelm-2-1.6b",
        name: "StableLM 2 1.6B",
        hub_id: "stabilityai/stablelm-2-1_6b-chat",
        architecture: Architecture::StableLm,
        parameters: "1.64B",
        license: "stabilityai-community",
        gated: false,
        chat_format: ChatFormat::ChatMl,
        tokenizer_family: "stablelm2",
        compared: true,
        config_json: Some(include_str!(
            "../../configs/stabilityai--stablelm-2-1_6b-chat.json"
        )),
    },
    ZooModel {
        alias: "pythia-1b",
        name: "Pythia 1B",
        hub_id: "EleutherAI/pythia-1b",
        architecture: Architecture::GptNeox,
        parameters: "1.01B",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::Plain,
        tokenizer_family: "gpt-neox",
        compared: true,
        config_json: Some(include_str!("../../configs/EleutherAI--pythia-1b.json")),
    },
    ZooModel {
        alias: "llama3.2-3b",
        name: "Llama 3.2 3B",
        hub_id: "meta-llama/Llama-3.2-3B-Instruct",
        architecture: Architecture::Llama,
        parameters: "3.21B",
        license: "llama3.2",
        gated: true,
        chat_format: ChatFormat::Llama3,
        tokenizer_family: "llama3",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "llama-2-7b-chat",
        name: "Llama 2 7B",
        hub_id: "meta-llama/Llama-2-7b-chat-hf",
        architecture: Architecture::Llama,
        parameters: "6.74B",
        license: "llama2",
        gated: true,
        chat_format: ChatFormat::Llama2,
        tokenizer_family: "llama2",
        compared: false,
        // The hub's config.json of meta-llama/Llama-2-7b-chat-hf (transformers 4.32 wrote it,
        // leaving rope_theta at its llama default of 10000): the target of the 1B → 7B
        // speculative-decoding costs, measured with random weights since the repo is gated.
        config_json: Some(include_str!(
            "../../configs/meta-llama--Llama-2-7b-chat-hf.json"
        )),
    },
    ZooModel {
        alias: "pythia-160m",
        name: "Pythia 160M",
        hub_id: "EleutherAI/pythia-160m",
        architecture: Architecture::GptNeox,
        parameters: "162M",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::Plain,
        tokenizer_family: "gpt-neox",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "pythia-410m",
        name: "Pythia 410M",
        hub_id: "EleutherAI/pythia-410m",
        architecture: Architecture::GptNeox,
        parameters: "405M",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::Plain,
        tokenizer_family: "gpt-neox",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "smollm2-135m",
        name: "SmolLM2 135M",
        hub_id: "HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture: Architecture::Llama,
        parameters: "135M",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::ChatMl,
        tokenizer_family: "smollm2",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "smollm2-360m",
        name: "SmolLM2 360M",
        hub_id: "HuggingFaceTB/SmolLM2-360M-Instruct",
        architecture: Architecture::Llama,
        parameters: "362M",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::ChatMl,
        tokenizer_family: "smollm2",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "smollm2-1.7b",
        name: "SmolLM2 1.7B",
        hub_id: "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        architecture: Architecture::Llama,
        parameters: "1.71B",
        license: "apache-2.0",
        gated: false,
        chat_format: ChatFormat::ChatMl,
        tokenizer_family: "smollm2",
        compared: false,
        config_json: None,
    },
    ZooModel {
        alias: "gemma-3-270m",
        name: "Gemma 3 270M",
        hub_id: "google/gemma-3-270m",
        architecture: Architecture::Gemma3,
        parameters: "270M",
        license: "gemma",
        gated: true,
        chat_format: ChatFormat::Plain,
        tokenizer_family: "gemma3",
        compared: false,
        config_json: Some(include_str!("../../configs/google--gemma-3-270m.json")),
    },
];

impl ZooModel {
    /// The model's hub config.json as shipped with the crate (the four compared models and
    /// Llama 2 7B, the target of the 1B → 7B speculative-decoding costs).
    pub fn config(&self) -> Result<crate::model::config::TransformerConfig> {
        let json = self.config_json.ok_or_else(|| {
            anyhow::anyhow!(
                "{} ships no config.json with the crate; download it: billion-llm download {}",
                self.alias,
                self.alias
            )
        })?;
        crate::model::config::TransformerConfig::from_hub_json(json)
    }
}

/// The four models compared throughout the workbook.
pub fn compared() -> impl Iterator<Item = &'static ZooModel> {
    ZOO.iter().filter(|m| m.compared)
}

/// The zoo entry for an alias or hub id (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static ZooModel> {
    ZOO.iter()
        .find(|m| m.alias.eq_ignore_ascii_case(name) || m.hub_id.eq_ignore_ascii_case(name))
}

/// Like [`lookup`], but an unknown name is an error that suggests the closest alias.
pub fn find(name: &str) -> Result<&'static ZooModel> {
    lookup(name).ok_or_else(|| unknown_model(name))
}

/// The error for a name that is no alias, hub id, file or folder: it suggests the closest alias.
pub fn unknown_model(name: &str) -> anyhow::Error {
    let closest = ZOO
        .iter()
        .min_by_key(|m| strsim::levenshtein(&name.to_lowercase(), m.alias))
        .expect("the zoo is not empty");
    anyhow::anyhow!(
        "unknown model {name:?}: did you mean {:?}? Run `billion-llm models` for the list; \
         a local folder, a .gguf file or a hub id (org/name) work too",
        closest.alias
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_alias_suggests_the_closest() {
        let err = find("tinylama").unwrap_err().to_string();
        assert!(err.contains("\"tinyllama\""), "{err}");
        let err = find("pythia-1B-deduped").unwrap_err().to_string();
        assert!(err.contains("pythia-1b"), "{err}");
    }

    #[test]
    fn embedded_configs_parse() {
        for m in ZOO.iter().filter(|m| m.config_json.is_some()) {
            let cfg = m.config().unwrap();
            assert_eq!(cfg.architecture, m.architecture, "{}", m.alias);
        }
        assert!(compared().all(|m| m.config_json.is_some()));
        // Llama 2's config.json leaves rope_theta at transformers' default.
        let llama2 = find("llama-2-7b-chat").unwrap().config().unwrap();
        assert_eq!((llama2.rope_theta, llama2.num_kv_heads), (10000.0, 32));
        assert_eq!(
            find("TinyLlama/TinyLlama-1.1B-Chat-v1.0").unwrap().alias,
            "tinyllama"
        );
    }
}
