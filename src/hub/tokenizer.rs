//! Text ↔ token ids, from a hub `tokenizer.json` or rebuilt from a GGUF file's metadata, and
//! streaming detokenization that never splits a UTF-8 character.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde_json::{json, Value};
use std::path::Path;

/// A Hugging Face tokenizer plus the special-token facts generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// `tokenizer_config.json` writes special tokens as strings or as `{"content": ...}` objects.
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, with the BOS/EOS strings from `tokenizer_config.json` if given.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
            anyhow::anyhow!(
                "cannot load {}: {e}. The file is damaged or not a Hugging Face tokenizer.json: \
                 download it again",
                tokenizer_json.display()
            )
        })?;
        let (mut bos_token, mut eos_token) = (None, None);
        if let Some(cfg) = tokenizer_config {
            let text = std::fs::read_to_string(cfg)
                .with_context(|| format!("cannot read {}", cfg.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", cfg.display()))?;
            bos_token = v.get("bos_token").and_then(token_string);
            eos_token = v.get("eos_token").and_then(token_string);
        }
        Ok(Self {
            inner,
            bos_token,
            eos_token,
        })
    }

    /// Rebuilds the tokenizer a GGUF file describes (`tokenizer.ggml.*`). Supported: the
    /// byte-level BPE of GPT-2 style models (`gpt2`, as in SmolLM2 and Llama 3 GGUFs) and
    /// SentencePiece's scored pieces (`llama`, as in TinyLlama and Gemma GGUFs).
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let get = |k: &str| {
            md.get(k)
                .with_context(|| format!("GGUF metadata {k} is missing"))
        };
        let model = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| anyhow::anyhow!("tokenizer.ggml.model: {e}"))?
            .clone();
        let strings = |k: &str| -> Result<Vec<String>> {
            get(k)?
                .to_vec()
                .map_err(|e| anyhow::anyhow!("{k}: {e}"))?
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| anyhow::anyhow!("{k}: {e}"))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| anyhow::anyhow!("tokenizer.ggml.token_type: {e}"))?
                .iter()
                .map(|t| t.to_i32().map(i64::from).unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let flag = |key: &str| md.get(key).and_then(|v| v.to_bool().ok());
        // Token types 3 (control) and 4 (user-defined) are matched whole in the raw text,
        // before the model runs, as llama.cpp does.
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == 3 || ty == 4)
            .map(|(i, (t, &ty))| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": ty == 3})
            })
            .collect();
        let (normalizer, pre_tokenizer, decoder, model) = match model.as_str() {
            "gpt2" => {
                let merges = strings("tokenizer.ggml.merges")?;
                let pre = md
                    .get("tokenizer.ggml.pre")
                    .and_then(|v| v.to_string().ok())
                    .cloned()
                    .unwrap_or_default();
                byte_level_bpe(&tokens, merges, &pre)
            }
            "llama" => {
                let scores: Vec<f32> = get("tokenizer.ggml.scores")?
                    .to_vec()
                    .map_err(|e| anyhow::anyhow!("tokenizer.ggml.scores: {e}"))?
                    .iter()
                    .map(|v| v.to_f32().unwrap_or(0.0))
                    .collect();
                let unk = md
                    .get("tokenizer.ggml.unknown_token_id")
                    .and_then(|v| v.to_u32().ok())
                    .and_then(|id| tokens.get(id as usize).cloned());
                // llama.cpp's default for SentencePiece models is a space before the text.
                let space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                sentencepiece_bpe(&tokens, &scores, unk, space_prefix)
            }
            other => bail!(
                "GGUF tokenizer model {other:?} is not supported (only \"gpt2\" byte-level BPE \
                 and \"llama\" SentencePiece): put the model's tokenizer.json next to the \
                 weights and load the folder instead"
            ),
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": decoder,
            "model": model,
        });
        let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&doc)?)
            .map_err(|e| anyhow::anyhow!("cannot build the tokenizer from GGUF metadata: {e}"))?;
        let token_at = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_u32().ok())
                .and_then(|id| tokens.get(id as usize).cloned())
        };
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(false);
        Ok(Self {
            inner,
            bos_token: if add_bos {
                token_at("tokenizer.ggml.bos_token_id")
            } else {
                None
            },
            eos_token: token_at("tokenizer.ggml.eos_token_id"),
        })
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's own post-processing
    /// (e.g. Llama's BOS) is applied.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
        let mut ids = enc.get_ids().to_vec();
        // A GGUF-built tokenizer has no post-processor: add BOS as its metadata asks.
        if add_special_tokens {
            if let Some(bos) = self.bos_token.as_deref().and_then(|b| self.token_to_id(b)) {
                if ids.first() != Some(&bos) && self.inner.get_post_processor().is_none() {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow::anyhow!("detokenizing failed: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token pieces as the tokenizer sees them (`"ĠHello"`, `"▁world"`), for showing splits.
    pub fn pieces(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` (for a GGUF-built one: what its
    /// metadata says, in the hub's form).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("cannot write the tokenizer as JSON: {e}"))
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn output_stream(&self) -> TokenOutputStream {
        TokenOutputStream::new(self.clone())
    }
}

/// The normalizer, pre-tokenizer, decoder and model (as `tokenizer.json` writes them) of a
/// GPT-2 style byte-level BPE: the file's merges, and its pre-tokenizer's name (`pre`).
fn byte_level_bpe(
    tokens: &[String],
    merges: Vec<String>,
    pre: &str,
) -> (Value, Value, Value, Value) {
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    // SmolLM's pre-tokenizer splits digits one by one before the GPT-2 regex.
    let pre_tokenizer = if pre == "smollm" {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    let model = json!({"type": "BPE", "dropout": null, "unk_token": null,
                       "continuing_subword_prefix": null, "end_of_word_suffix": null,
                       "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                       "vocab": vocab, "merges": merges});
    (Value::Null, pre_tokenizer, byte_level, model)
}

/// The same four parts for a SentencePiece model stored as scored pieces (llama.cpp's `llama`
/// tokenizer). SentencePiece merges, among neighbouring pieces, the pair whose union is the
/// best-scored piece; a BPE whose merges are ranked by that score does the same, so the merges
/// are every split of a piece into two pieces, best-scored union first (Hugging Face's
/// `SentencePieceExtractor` builds Gemma's and Llama's `tokenizer.json` this way). Spaces
/// become `▁`, and what no piece covers falls back to byte pieces (`<0x41>`).
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    unk: Option<String>,
    space_prefix: bool,
) -> (Value, Value, Value, Value) {
    let ids: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // (score of the union, left id, right id), sorted best first.
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (token, &score) in tokens.iter().zip(scores) {
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                merges.push((score, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(_, l, r)| json!([tokens[l], tokens[r]]))
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if space_prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let model = json!({"type": "BPE", "dropout": null, "unk_token": unk,
                       "continuing_subword_prefix": null, "end_of_word_suffix": null,
                       "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                       "vocab": vocab, "merges": merges});
    (
        normalizer,
        Value::Null,
        json!({"type": "Sequence", "decoders": decoders}),
        model,
    )
}

/// Turns a stream of token ids into text pieces as they arrive.
///
/// Decoding token by token breaks words ("Ġthe" has a space only in context) and characters
/// (byte-level BPE splits an emoji over several tokens). So the stream decodes a small window
/// of recent tokens and emits only the new, complete text: nothing is printed while the tail
/// ends in U+FFFD, the mark of an unfinished UTF-8 sequence.
pub struct TokenOutputStream {
    tokenizer: Tokenizer,
    tokens: Vec<u32>,
    /// Start of the window that is decoded together.
    prev_index: usize,
    /// How much of the window has been emitted.
    current_index: usize,
}

impl TokenOutputStream {
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self {
            tokenizer,
            tokens: Vec::new(),
            prev_index: 0,
            current_index: 0,
        }
    }

    fn decode(&self, tokens: &[u32]) -> Result<String> {
        self.tokenizer.decode(tokens, true)
    }

    /// Feeds one token; returns the text it completes, if any.
    pub fn next_token(&mut self, token: u32) -> Result<Option<String>> {
        let prev_text = self.decode(&self.tokens[self.prev_index..self.current_index])?;
        self.tokens.push(token);
        let text = self.decode(&self.tokens[self.prev_index..])?;
        if text.len() > prev_text.len() && !text.ends_with('\u{FFFD}') {
            let new = text
                .get(prev_text.len()..)
                .map(str::to_string)
                .unwrap_or_default();
            self.prev_index = self.current_index;
            self.current_index = self.tokens.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// The text still held back at the end of the stream.
    pub fn flush(&mut self) -> Result<Option<String>> {
        let prev_text = self.decode(&self.tokens[self.prev_index..self.current_index])?;
        let text = self.decode(&self.tokens[self.prev_index..])?;
        self.prev_index = self.tokens.len();
        self.current_index = self.tokens.len();
        if text.len() > prev_text.len() {
            Ok(text.get(prev_text.len()..).map(str::to_string))
        } else {
            Ok(None)
        }
    }

    /// Starts a new stream (a new answer).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.prev_index = 0;
        self.current_index = 0;
    }
}
