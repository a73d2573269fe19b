//! `billion-llm bench`: MMLU, HumanEval, speed and memory of each model, under one harness, into
//! one results file.
//!
//! Honest numbers first: MMLU is scored by log-probability (no text parsing), HumanEval runs the
//! real unit tests in a sandbox, speed separates prefill from decode and forces the full length,
//! and memory is the process's peak resident set while loading and running, not a reading
//! taken before generation.
//!
//! One file per job: `settings` ([`BenchSettings`]) says what to run, `mmlu_run` and
//! `humaneval_run` score one model on each benchmark, `schema` is the results file's shape,
//! and this file runs every model through them (memory is [`crate::eval::memory`]'s).

mod humaneval_run;
mod mmlu_run;
mod schema;
mod settings;

pub use humaneval_run::{
    hub_humaneval, humaneval_format, run_humaneval, run_problem, samples_table, HumanEvalSetup,
    ProblemRun, HUMANEVAL_DATASET, HUMANEVAL_FILE,
};
pub use mmlu_run::{hub_mmlu, run_mmlu, MMLU_DATASET, MMLU_DEV_FILE, MMLU_TEST_FILE};
pub use schema::{
    BenchHardware, BenchReport, HumanEvalResult, MemoryResult, MmluResult, ModelResult,
    ProblemResult, ProblemScore, SpeedResult,
};
pub use settings::BenchSettings;

use crate::eval::memory::{peak_rss_bytes, reset_peak_rss, DeviceMemorySampler};
use crate::eval::mmlu::Dataset;
use crate::eval::results::{write_json_atomic, Hardware, RunHeader};
use crate::eval::speed::{prompt_ids, SpeedSettings};
use crate::hub::loader::{load, LoadOptions, LoadedModel};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefill and decode speed over timed runs, generation forced to the full length.
pub fn run_speed(model: &mut LoadedModel, s: &SpeedSettings) -> Result<SpeedResult> {
    let prompt = prompt_ids(s.prompt_tokens, model.model.config().vocab_size);
    let speed = crate::eval::speed::measure_ours(&mut model.model, &prompt, s)?;
    Ok(SpeedResult {
        prompt_tokens: s.prompt_tokens,
        new_tokens: s.new_tokens,
        warmup: s.warmup,
        prefill_tokens_per_s: speed.prefill_tokens_per_s,
        decode_tokens_per_s: speed.decode_tokens_per_s,
    })
}

/// Benchmarks one model: load, MMLU, HumanEval, speed, with the peak memory of all of it.
pub fn bench_model(
    name: &str,
    options: &LoadOptions,
    s: &BenchSettings,
    mmlu_data: Option<&Dataset>,
    humaneval: Option<&HumanEvalSetup>,
) -> Result<ModelResult> {
    reset_peak_rss();
    let device_memory = DeviceMemorySampler::start(&options.device);
    let mut model = load(name, options).with_context(|| format!("loading {name}"))?;
    if humaneval.is_some() && !options.random_weights {
        // Refuse a format the model cannot take now, not after its MMLU run.
        humaneval_format(&model, s.humaneval_format)?;
    }
    let mmlu = match mmlu_data {
        Some(data) if !options.random_weights => Some(run_mmlu(&mut model, data, s)?),
        _ => None,
    };
    let humaneval = match humaneval {
        Some(setup) if !options.random_weights => Some(run_humaneval(&mut model, setup, s)?),
        _ => None,
    };
    let speed = run_speed(&mut model, &s.speed)?;
    let peak = peak_rss_bytes();
    let peak_device = device_memory.and_then(DeviceMemorySampler::finish);
    Ok(ModelResult {
        mmlu_accuracy: mmlu.as_ref().map(|m| m.summary.micro.accuracy),
        humaneval_pass_rate: humaneval.as_ref().map(|h| h.pass_at_1),
        tokens_per_second: speed.decode_tokens_per_s.mean,
        // On a GPU the memory that limits which model fits is the device's.
        peak_memory_gb: peak_device.unwrap_or(peak) as f64 / 1e9,
        source: name.to_string(),
        weights: if options.random_weights {
            "random".into()
        } else {
            "pretrained".into()
        },
        dtype: format!("{:?}", model.model.dtype()).to_lowercase(),
        quantization: options.quantize.map(|q| format!("{q:?}").to_lowercase()),
        load_seconds: model.load_s,
        memory: MemoryResult {
            weights_bytes: model.model.weight_bytes(),
            peak_rss_bytes: peak,
            peak_device_bytes: peak_device,
        },
        speed,
        mmlu,
        humaneval,
    })
}

/// Runs every model and writes `results/bench-<timestamp>.json`. While it runs, each finished
/// model is saved in `bench-<timestamp>.partial.json` (`"complete": false`); only a finished run
/// gets the final name, written atomically.
pub fn run_bench(
    models: &[String],
    options: &LoadOptions,
    s: &BenchSettings,
    out_dir: &Path,
) -> Result<PathBuf> {
    let needs_data = !options.random_weights;
    let mmlu_data = if s.skip_mmlu || !needs_data {
        None
    } else {
        let data = Dataset::load(&s.mmlu_file, s.mmlu_dev_file.as_deref())?;
        data.select(&s.subjects)?;
        Some(data)
    };
    let humaneval = if s.skip_humaneval || !needs_data {
        None
    } else {
        Some(HumanEvalSetup::new(s)?)
    };
    let mut report = BenchReport {
        header: RunHeader::now_on(BenchHardware {
            device: format!("{:?}", options.device),
            gpu_name: gpu_name(&options.device),
            ..hardware(s.speed.threads)
        }),
        complete: false,
        models: BTreeMap::new(),
        versions: versions(),
    };
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let stem = report.header.file_stem("bench");
    let partial = out_dir.join(format!("{stem}.partial.json"));
    for name in models {
        eprintln!("== {name}");
        let result = bench_model(name, options, s, mmlu_data.as_ref(), humaneval.as_ref())?;
        eprintln!(
            "   MMLU {} · HumanEval {} · decode {:.1} tok/s · peak {:.2} GB",
            result
                .mmlu_accuracy
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            result
                .humaneval_pass_rate
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            result.tokens_per_second,
            result.peak_memory_gb
        );
        if let Some(h) = &result.humaneval {
            let pass_at_k: Vec<String> = h
                .pass_at_k
                .iter()
                .map(|(k, v)| format!("pass@{k} {:.1}%", 100.0 * v))
                .collect();
            eprintln!(
                "   HumanEval ({}): {}; {}/{} problems solved by a sample, in {:.0} s",
                h.setting(),
                pass_at_k.join(", "),
                h.passed,
                h.problems,
                h.seconds
            );
        }
        if let Some(m) = &result.mmlu {
            eprintln!(
                "   MMLU: {} questions in {:.0} s ({:.2} s each); {} prompt tokens read, {} not \
                 re-read thanks to the cached few-shot prefix",
                m.questions.len(),
                m.seconds,
                m.seconds_per_question,
                m.prefill_tokens,
                m.prefill_tokens_saved
            );
        }
        report.models.insert(name.clone(), result);
        write_json_atomic(&partial, &report)?;
    }
    report.complete = true;
    let path = out_dir.join(format!("{stem}.json"));
    write_json_atomic(&path, &report)?;
    std::fs::remove_file(&partial).ok();
    Ok(path)
}

fn hardware(threads: usize) -> BenchHardware {
    let h = Hardware::detect(threads);
    BenchHardware {
        device: "Cpu".into(),
        gpu_name: None,
        cpu: h.cpu,
        cores: h.cores,
        threads: h.threads,
    }
}

fn gpu_name(device: &candle_core::Device) -> Option<String> {
    if !device.is_cuda() {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

fn versions() -> BTreeMap<String, String> {
    [
        ("billion-llm", env!("CARGO_PKG_VERSION")),
        ("candle", "0.11 (see Cargo.lock)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
