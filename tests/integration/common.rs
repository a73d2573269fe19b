//! Helpers shared by the test modules: the reference checkpoints, and llama.cpp (through
//! llama-cpp-python) to compare against.

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
