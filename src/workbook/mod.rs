//! What the notebooks show and the book includes, one module per Short: `scale` (Short 1),
//! `anatomy` and `next_token` (Short 2), `comparison` (Short 3, from `results/`), `finetuning`
//! (Short 5, from `results/`), `speculative` (Short 6, from `results/`), the published
//! figures they are set beside, and `book`, which writes every generated file of the book.
//!
//! The top of the crate: it may use every other part, and no part uses it.

pub mod anatomy;
pub mod book;
pub mod comparison;
pub mod finetuning;
pub mod next_token;
pub mod published;
pub mod scale;
pub mod speculative;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

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
