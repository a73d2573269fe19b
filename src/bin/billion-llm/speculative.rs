//! `billion-llm speculative` and `billion-llm speculative-costs`: the command lines of
//! [`billion_llm::speculative::job`], which decodes with a drafter beside plain decoding, and
//! times the steps a round is made of.

use crate::args::{QuantizeArg, ResultsDirArgs, SamplingArgs, WeightsArg};
use anyhow::Result;
use billion_llm::speculative::bench::{run_bench as bench, short_tasks, BenchJob};
use billion_llm::speculative::job::{self, CostsJob, SpeculativeJob};
use billion_llm::speculative::KSchedule;
use clap::{Args, ValueEnum};

/// `--schedule`.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum ScheduleArg {
    Cost,
    Fixed,
    Adaptive,
}

impl ScheduleArg {
    pub fn with(self, k: usize, max_k: usize) -> KSchedule {
        match self {
            ScheduleArg::Cost => KSchedule::Cost { max: max_k },
            ScheduleArg::Fixed => KSchedule::Fixed(k),
            ScheduleArg::Adaptive => KSchedule::Adaptive {
                start: k,
                max: max_k.max(k),
            },
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(mut_arg("max_new_tokens", |a| a.default_value("128")))]
pub struct SpeculativeArgs {
    /// The model whose output is produced: zoo alias, hub id, local folder or .gguf.
    #[arg(long)]
    target: String,
    /// Who drafts: a smaller model with the same tokenizer (alias, hub id, folder, .gguf),
    /// `layers:N` (the target's own first N layers) or `lookup` (prompt lookup, no model).
    #[arg(long)]
    draft: String,
    /// How K, the tokens drafted per round, is chosen: `cost` picks, each round, the K (0 to
    /// --max-k; 0 is a plain step) that the acceptance rate and the step times measured so far
    /// say is fastest; `fixed` drafts --k every round; `adaptive` is Hugging Face's schedule
    /// (from --k, +2 after a fully accepted round, -1 after a rejection, up to --max-k).
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cost)]
    schedule: ScheduleArg,
    /// Tokens drafted per round with --schedule fixed (the start with adaptive).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// The largest K --schedule cost or adaptive may choose.
    #[arg(long, default_value_t = 8)]
    max_k: usize,
    #[arg(long)]
    prompt: Option<String>,
    /// Token ids instead of --prompt, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Send --prompt through the target's chat template as a user message.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print one JSON object instead of the coloured text and the statistics.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    results: ResultsDirArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CostsArgs {
    /// The model that verifies: zoo alias, hub id, local folder or .gguf.
    #[arg(long)]
    target: String,
    /// The model that drafts; it must share the target's vocabulary.
    #[arg(long)]
    draft: String,
    /// Both models' trained weights, or their real configs with random weights (no download; a
    /// token costs what it costs with trained weights).
    #[arg(long, value_enum, default_value_t = WeightsArg::Pretrained)]
    weights: WeightsArg,
    /// Quantize both models' plain weights at load time.
    #[arg(long, value_enum, ignore_case = true)]
    quantize: Option<QuantizeArg>,
    /// Drafts per round whose verification (K + 1 tokens) is timed, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    k: Vec<usize>,
    /// Tokens in the caches when a step is timed.
    #[arg(long, default_value_t = 64)]
    context: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

pub fn run(args: &SpeculativeArgs) -> Result<()> {
    job::run(&SpeculativeJob {
        target: args.target.clone(),
        draft: args.draft.clone(),
        schedule: args.schedule.with(args.k, args.max_k),
        prompt: args.prompt.clone(),
        ids: args.ids.clone(),
        chat: args.chat,
        max_new_tokens: args.sampling.max_new_tokens,
        temperature: args.sampling.temperature,
        top_p: args.sampling.top_p,
        seed: args.sampling.seed,
        threads: args.threads,
        json: args.json,
        results_dir: args.results.results_dir.clone(),
    })
}

pub fn run_costs(args: &CostsArgs) -> Result<()> {
    job::run_costs(&CostsJob {
        target: args.target.clone(),
        draft: args.draft.clone(),
        random_weights: args.weights.is_random(),
        quantize: args.quantize.map(Into::into),
        k: args.k.clone(),
        context: args.context,
        warmup: args.warmup,
        runs: args.runs,
        threads: args.threads,
        results_dir: args.results.results_dir.clone(),
    })
}

/// A `--schedules` entry: a number is a fixed K; `adaptive` and `cost` take --max-k.
fn parse_schedule(s: &str, max_k: usize) -> Result<KSchedule> {
    match s {
        "adaptive" => Ok(ScheduleArg::Adaptive.with(2, max_k)),
        "cost" => Ok(ScheduleArg::Cost.with(0, max_k)),
        k => match k.parse::<usize>() {
            Ok(k) if k > 0 => Ok(KSchedule::Fixed(k)),
            _ => anyhow::bail!(
                "--schedules takes fixed K (1, 2, ...), `adaptive` and `cost`, comma-separated; \
                 got {s:?}"
            ),
        },
    }
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The model decoded: zoo alias, hub id, local folder or .gguf.
    #[arg(long)]
    target: String,
    /// A drafter as --draft of `speculative` names it, optionally with its own K schedules
    /// after `@` (`layers:24@1,cost`); repeat for several.
    #[arg(long, default_values = ["lookup", "layers:24@1,cost"])]
    draft: Vec<String>,
    /// K schedules of drafters without their own, comma-separated: a number is a fixed K;
    /// `adaptive` is Hugging Face's schedule from K = 2, `cost` the K the measured costs
    /// favour (both up to --max-k).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,adaptive,cost")]
    schedules: Vec<String>,
    /// The largest K `adaptive` and `cost` may choose.
    #[arg(long, default_value_t = 8)]
    max_k: usize,
    /// Short 6's requests by name (edit, rewrite, code, open), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "edit,rewrite,code,open")]
    tasks: Vec<String>,
    #[arg(long, default_value_t = 192)]
    max_new_tokens: usize,
    /// Pairs of turns (plain, speculative) per configuration.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

pub fn run_bench(args: &BenchArgs) -> Result<()> {
    let all = short_tasks();
    let tasks = args
        .tasks
        .iter()
        .map(|name| {
            all.iter()
                .find(|t| &t.name == name)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                    anyhow::anyhow!("no request named {name:?}: pick from {}", names.join(", "))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let schedules = |list: &[&str]| {
        list.iter()
            .map(|s| parse_schedule(s, args.max_k))
            .collect::<Result<Vec<_>>>()
    };
    let default: Vec<&str> = args.schedules.iter().map(String::as_str).collect();
    let drafters = args
        .draft
        .iter()
        .map(|d| match d.split_once('@') {
            Some((name, own)) => Ok((
                name.to_string(),
                schedules(&own.split(',').collect::<Vec<_>>())?,
            )),
            None => Ok((d.clone(), schedules(&default)?)),
        })
        .collect::<Result<Vec<_>>>()?;
    let path = bench(&BenchJob {
        target: args.target.clone(),
        drafters,
        tasks,
        max_new_tokens: args.max_new_tokens,
        repetitions: args.repetitions,
        threads: args.threads,
        results_dir: args.results.results_dir.clone(),
    })?;
    println!("wrote {}", path.display());
    Ok(())
}
