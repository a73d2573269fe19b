//! `billion-llm finetune`: the command line of [`billion_llm::finetune::job`], which trains a
//! LoRA adapter on a data file and saves it in peft format.

use crate::args::{device_name, ResultsDirArgs};
use anyhow::Result;
use billion_llm::finetune::heldout::Metric;
use billion_llm::finetune::job::{self, FinetuneJob};
use billion_llm::finetune::optim::Decay;
use billion_llm::finetune::study::{self, Setting, Study};
use billion_llm::hub::loader;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// What a run and a study share: the model, the data, the adapter's shape and the schedule.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// The base model: zoo alias, hub id, local folder or .gguf (trained dequantized to f32).
    #[arg(long, short)]
    model: String,
    /// Training data: alpaca records (instruction, input, output) or chat records (messages),
    /// as a JSON array or JSON Lines.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Fraction of the steps spent on linear warm-up.
    #[arg(long, default_value_t = 0.03)]
    warmup_ratio: f64,
    /// Decay of the learning rate after the warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Linear)]
    schedule: ScheduleArg,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Modules to adapt (comma-separated short names such as q_proj,v_proj, or all-linear);
    /// default: peft's for the family.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Cut longer examples to this many tokens (counted in the report).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// How held-out answers are scored [default: json-fields when every held-out answer is a
    /// JSON object or a list of objects, else exact-match].
    #[arg(long, value_enum)]
    metric: Option<MetricArg>,
    #[command(flatten)]
    results: ResultsDirArgs,
    /// cpu, cuda (the first GPU), cuda:N (the Nth) or metal.
    #[arg(long, default_value = "cpu", value_parser = device_name)]
    device: String,
}

#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Held-out data in the same format; without it, --eval-fraction of --data is held out.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Fraction of --data held out for the loss after each epoch when --eval is not given.
    #[arg(long, default_value_t = 0.1)]
    eval_fraction: f64,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 4)]
    grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Replace an existing --out folder.
    #[arg(long)]
    overwrite: bool,
    /// Continue from a checkpoint folder (checkpoint-epoch-N or checkpoint-step-N) exactly where
    /// it stopped; the run's other arguments and data must be those it was saved with.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where the adapter goes (a peft adapter folder with its checkpoints; on a GGUF base also
    /// `adapter.gguf`, llama.cpp's LoRA format).
    #[arg(long)]
    out: PathBuf,
    /// Also write the base with the adapter folded in: a .gguf for a GGUF base (same
    /// quantization), a model folder otherwise.
    #[arg(long)]
    merge: Option<PathBuf>,
    /// Training examples put in the prompt for the few-shot row of the before/after table.
    #[arg(long, default_value_t = 3)]
    few_shot: usize,
    /// Held-out examples answered for the before/after table (default: all; 0 skips it).
    #[arg(long)]
    answer_limit: Option<usize>,
}

/// `finetune-study`: settings chosen on a validation file, seeds, few-shot baselines.
#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Held-out data in the same format: every baseline and adapter answers it.
    #[arg(long)]
    eval: PathBuf,
    /// Validation data (drawn like --data): the settings are chosen on it.
    #[arg(long)]
    validation: PathBuf,
    /// A candidate setting, LR or LR:ACCUMULATION (repeat the flag for each).
    #[arg(long = "setting", required = true)]
    settings: Vec<Setting>,
    /// Seeds: the first trains every candidate, the rest the chosen setting again.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Examples in the prompt of each baseline (0: the instruction alone).
    #[arg(long, value_delimiter = ',', default_value = "0,3,10,20")]
    shots: Vec<usize>,
    /// The folder the adapters go in, one subfolder per run (replaced when it exists).
    #[arg(long)]
    out: PathBuf,
}

/// `--schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScheduleArg {
    /// Straight down to 0 at the last step.
    Linear,
    /// Half a cosine down to 0: slower at first, then faster.
    Cosine,
}

/// `--metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MetricArg {
    /// The answer equals the reference, up to whitespace.
    ExactMatch,
    /// The answer's first JSON value has the reference's shape (an object or a list of
    /// objects), keys and values (partial credit per field).
    JsonFields,
}

impl TrainArgs {
    /// A job with these settings; the caller fills in the run's own.
    fn job(&self) -> Result<FinetuneJob> {
        Ok(FinetuneJob {
            model: self.model.clone(),
            data: self.data.clone(),
            eval: None,
            eval_fraction: 0.0,
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: 1,
            lr: 0.0,
            warmup_ratio: self.warmup_ratio,
            schedule: match self.schedule {
                ScheduleArg::Linear => Decay::Linear,
                ScheduleArg::Cosine => Decay::Cosine,
            },
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            target: self.target.clone(),
            max_len: self.max_len,
            seed: 0,
            overwrite: false,
            resume: None,
            out: PathBuf::new(),
            merge: None,
            metric: self.metric.map(|m| match m {
                MetricArg::ExactMatch => Metric::ExactMatch,
                MetricArg::JsonFields => Metric::JsonFields,
            }),
            few_shot: 0,
            answer_limit: None,
            results_dir: self.results.results_dir.clone(),
            device: loader::parse_device(&self.device)?,
        })
    }
}

pub fn run(args: &FinetuneArgs) -> Result<()> {
    let job = FinetuneJob {
        eval: args.eval.clone(),
        eval_fraction: args.eval_fraction,
        grad_accum: args.grad_accum,
        lr: args.lr,
        seed: args.seed,
        overwrite: args.overwrite,
        resume: args.resume.clone(),
        out: args.out.clone(),
        merge: args.merge.clone(),
        few_shot: args.few_shot,
        answer_limit: args.answer_limit,
        ..args.train.job()?
    };
    job::run(&job)
}

pub fn run_study(args: &StudyArgs) -> Result<()> {
    let job = FinetuneJob {
        eval: Some(args.eval.clone()),
        out: args.out.clone(),
        ..args.train.job()?
    };
    study::run(&Study {
        job,
        validation: args.validation.clone(),
        settings: args.settings.clone(),
        seeds: args.seeds.clone(),
        shots: args.shots.clone(),
    })?;
    Ok(())
}
