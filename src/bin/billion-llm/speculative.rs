//! `billion-llm speculative` and `billion-llm speculative-costs`: the command lines of
//! [`billion_llm::speculative::job`], which decodes with a drafter beside plain decoding, and
//! times the steps a round is made of.

use crate::args::{QuantizeArg, ResultsDirArgs, SamplingArgs, WeightsArg};
use anyhow::Result;
use billion_llm::speculative::job::{self, CostsJob, SpeculativeJob};
use clap::Args;

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
    /// Tokens drafted per round (the start value with --adaptive).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Grow K after fully accepted rounds, shrink it after rejections.
    #[arg(long)]
    adaptive: bool,
    /// The largest K --adaptive may reach.
    #[arg(long, default_value_t = 16)]
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
        k: args.k,
        adaptive: args.adaptive,
        max_k: args.max_k,
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
