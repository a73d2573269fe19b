//! Bad input gets a clear error that names the problem and the fix, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn billion_llm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_billion-llm"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn reference(case: &str) -> PathBuf {
    crate::common::reference_dir(case)
}

/// A copy of a reference model folder, to damage.
fn copy_model(case: &str, dir: &Path) {
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(reference(case).join(f), dir.join(f)).unwrap();
    }
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let (ok, _, stderr) = billion_llm(args);
    assert!(!ok, "{args:?} should fail");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {n:?} not in {stderr}");
    }
}

#[test]
fn unknown_alias_suggests_the_closest() {
    expect_error(
        &["generate", "--model", "tinylama", "--prompt", "hi"],
        &["unknown model", "tinyllama", "billion-llm models"],
    );
}

#[test]
fn missing_config_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference("llama").join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            dir.path().to_str().unwrap(),
            "--ids",
            "1,2",
        ],
        &["config.json"],
    );
}

#[test]
fn malformed_config_json() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("llama", dir.path());
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llama\", ",
    )
    .unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            dir.path().to_str().unwrap(),
            "--ids",
            "1,2",
        ],
        &["config.json", "not valid JSON"],
    );
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"mamba\"}",
    )
    .unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            dir.path().to_str().unwrap(),
            "--ids",
            "1,2",
        ],
        &["mamba", "llama, stablelm, stablelm_epoch, gpt_neox"],
    );
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llama\", \"hidden_size\": 64}",
    )
    .unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            dir.path().to_str().unwrap(),
            "--ids",
            "1,2",
        ],
        &["missing field"],
    );
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("llama", dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &[
            "logits",
            "--model",
            dir.path().to_str().unwrap(),
            "--ids",
            "1,2",
        ],
        &["damaged or truncated", "download it again"],
    );
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = std::fs::read(smollm2()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &["generate", "--model", path.to_str().unwrap(), "--ids", "1"],
        &["cut.gguf", "truncated", "download it again"],
    );
}

#[test]
fn gguf_of_an_unsupported_architecture() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi.gguf");
    let t = QTensor::quantize(
        &candle_core::Tensor::zeros((32, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = gguf_file::Value::String("phi2".into());
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("w", &t)]).unwrap();
    drop(f);
    expect_error(
        &["generate", "--model", path.to_str().unwrap(), "--ids", "1"],
        &["phi2", "not supported", "llama-family"],
    );
}

#[test]
fn prompt_longer_than_the_context() {
    // The reference llama has a context of 256 positions.
    let ids: Vec<String> = (0..300).map(|i| (i % 200).to_string()).collect();
    let model = reference("llama");
    expect_error(
        &[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            &ids.join(","),
        ],
        &["exceed the model's context of 256", "shorten the prompt"],
    );
}

#[test]
fn token_id_outside_the_vocabulary() {
    let model = reference("llama");
    expect_error(
        &[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1,999",
        ],
        &["999", "outside the vocabulary"],
    );
}

#[test]
fn logits_command_prints_every_position() {
    let model = reference("llama");
    let (ok, stdout, stderr) = billion_llm(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "5,17,42",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 256));
}

#[test]
fn generate_json_with_ids_runs_to_the_limit_with_ignore_eos() {
    let model = reference("llama");
    let (ok, stdout, stderr) = billion_llm(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "66,221,47,234,117,102,13,226",
        "--max-new-tokens",
        "16",
        "--ignore-eos",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let tokens: Vec<u64> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    // The same continuation transformers produced (reference.json of the llama case).
    assert_eq!(
        tokens,
        [115, 106, 182, 127, 211, 83, 97, 38, 115, 249, 94, 98, 245, 115, 11, 101]
    );
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn missing_adapter_folder() {
    let model = reference("llama");
    expect_error(
        &[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1",
            "--adapter",
            "/nonexistent",
        ],
        &["adapter_config.json", "peft"],
    );
}

#[test]
fn adapter_for_another_base_model() {
    let model = reference("llama");
    let adapter = reference("gpt_neox").join("lora");
    expect_error(
        &[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1",
            "--adapter",
            adapter.to_str().unwrap(),
        ],
        &["different base model"],
    );
}

#[test]
fn offline_without_cache_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_billion-llm"))
        .args(["generate", "--model", "pythia-1b", "--prompt", "hi"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not in the cache"), "{stderr}");
    assert!(stderr.contains("billion-llm download"), "{stderr}");
}

fn smollm2() -> String {
    billion_llm::hub::assets::asset(billion_llm::hub::assets::SMOLLM2_GGUF)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn bench_with_a_missing_dataset_or_an_unknown_subject() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    expect_error(
        &[
            "bench",
            "--model",
            &smollm2(),
            "--mmlu-file",
            "/nonexistent/mmlu.jsonl",
            "--out-dir",
            out,
        ],
        &["/nonexistent/mmlu.jsonl", "fetch-assets.sh"],
    );
    expect_error(
        &[
            "bench",
            "--model",
            &smollm2(),
            "--subjects",
            "astrology",
            "--out-dir",
            out,
        ],
        &["unknown MMLU subject \"astrology\"", "abstract_algebra"],
    );
    expect_error(
        &[
            "bench",
            "--model",
            &smollm2(),
            "--skip-mmlu",
            "--humaneval-file",
            "/nonexistent/he.jsonl.gz",
            "--out-dir",
            out,
        ],
        &["/nonexistent/he.jsonl.gz"],
    );
}

#[test]
fn bench_sampling_that_cannot_estimate_pass_at_k() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    // Refused before any model is loaded (this one does not even exist).
    let bench = [
        "bench",
        "--model",
        "/nonexistent/model.gguf",
        "--skip-mmlu",
        "--out-dir",
        out,
    ];
    expect_error(
        &[&bench[..], &["--samples", "0"]].concat(),
        &["--samples 0", "at least 1"],
    );
    expect_error(
        &[&bench[..], &["--samples", "10"]].concat(),
        &[
            "--samples 10 with --temperature 0",
            "identical",
            "--samples 1",
        ],
    );
}

/// A run that fails part-way leaves only a `.partial.json` marked incomplete, never a file that
/// looks like a finished run.
#[test]
fn an_interrupted_bench_leaves_no_complete_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    expect_error(
        &[
            "bench",
            "--model",
            &smollm2(),
            "--model",
            "tinylama",
            "--subjects",
            "abstract_algebra",
            "--limit",
            "1",
            "--skip-humaneval",
            "--runs",
            "1",
            "--out-dir",
            out,
        ],
        &["loading tinylama", "did you mean \"tinyllama\""],
    );
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".partial.json"), "{files:?}");
    let partial = std::fs::read_to_string(dir.path().join(&files[0])).unwrap();
    assert!(partial.contains("\"complete\": false"), "{partial}");
    assert!(billion_llm::workbook::comparison::load_runs(dir.path())
        .unwrap()
        .is_empty());
}

/// Files in `dir` other than `keep`: what a failed run left behind.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn quantize_refuses_bad_input_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cut = d.join("cut.gguf");
    let bytes = std::fs::read(smollm2()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = d.join("out.gguf");
    let (m, o) = (cut.to_str().unwrap(), out.to_str().unwrap());
    expect_error(
        &["quantize", "--model", m, "--type", "q4_k_m", "--out", o],
        &["cut.gguf", "truncated", "again"],
    );
    // A type llama.cpp has no mix of by that name: clap lists the ones there are.
    expect_error(
        &["quantize", "--model", m, "--type", "q4_k", "--out", o],
        &["q4_k", "q4_k_m", "q6_k", "q2_k"],
    );
    // An output that exists is never overwritten.
    std::fs::write(&out, b"precious").unwrap();
    let model = smollm2();
    expect_error(
        &["quantize", "--model", &model, "--type", "q8_0", "--out", o],
        &["out.gguf", "already exists"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    std::fs::remove_file(&out).unwrap();
    // Neither a GGUF file nor a model folder.
    expect_error(
        &[
            "quantize",
            "--model",
            d.to_str().unwrap(),
            "--type",
            "q8_0",
            "--out",
            o,
        ],
        &["has no config.json", "GGUF file", "tokenizer.json"],
    );
    assert_eq!(leftovers(d, &["cut.gguf"]), Vec::<String>::new());
}
