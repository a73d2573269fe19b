//! A fine-tuning job from start to end, as `billion-llm finetune` runs it: read the data, ask
//! the base model the held-out questions, train a LoRA adapter (Ctrl-C saves a checkpoint),
//! save it in peft format (and llama.cpp's, and merged, when asked), ask the adapted model, and
//! write `results/finetune-<timestamp>.json`.

use super::base::load_trainable;
use super::config::{LoraConfig, Targets};
use super::data::{read_conversations, read_labeled, tokenize, Labeled};
use super::export;
use super::heldout::{self, Evaluation, Metric};
use super::optim::Decay;
use super::trainer::{Outcome, StepLog, TrainSettings, Trainer, TrainerState};
use crate::eval::results::{write_json_atomic, RunHeader};
use crate::hub::chat_template::Message;
use crate::hub::loader::{self, LoadOptions, ModelSource};
use crate::model::lora::LoraAdapter;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What to train, on what, and where the adapter and the results go.
#[derive(Debug, Clone)]
pub struct FinetuneJob {
    /// The base model: zoo alias, hub id, local folder or .gguf (trained dequantized to f32).
    pub model: String,
    /// Training data: alpaca records (instruction, input, output) or chat records (messages),
    /// as a JSON array or JSON Lines.
    pub data: PathBuf,
    /// Held-out data in the same format; without it, `eval_fraction` of `data` is held out.
    pub eval: Option<PathBuf>,
    /// Fraction of `data` held out for the loss after each epoch when `eval` is not given.
    pub eval_fraction: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of the steps spent on linear warm-up.
    pub warmup_ratio: f64,
    /// Decay after the warm-up.
    pub schedule: Decay,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    pub max_grad_norm: f64,
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    pub alpha: f64,
    pub dropout: f32,
    /// Modules to adapt (short names such as q_proj, or all-linear); empty: peft's for the
    /// family.
    pub target: Vec<String>,
    /// Cut longer examples to this many tokens (counted in the report).
    pub max_len: usize,
    pub seed: u64,
    /// Replace an existing `out` folder (and `merge`).
    pub overwrite: bool,
    /// Continue from a checkpoint folder (checkpoint-epoch-N or checkpoint-step-N).
    pub resume: Option<PathBuf>,
    /// Where the adapter goes (a peft adapter folder with its checkpoints; on a GGUF base also
    /// `adapter.gguf`, llama.cpp's LoRA format).
    pub out: PathBuf,
    /// Also write the base with the adapter folded in: a .gguf for a GGUF base (same
    /// quantization), a model folder otherwise.
    pub merge: Option<PathBuf>,
    /// How held-out answers are scored (`None`: [`Metric::detect`]).
    pub metric: Option<Metric>,
    /// Training examples put in the prompt for the few-shot row of the before/after table.
    pub few_shot: usize,
    /// Held-out examples answered for the before/after table (`None`: all; 0 skips it).
    pub answer_limit: Option<usize>,
    /// Where results/finetune-<timestamp>.json goes.
    pub results_dir: PathBuf,
    /// Where training and the held-out answers run.
    pub device: candle_core::Device,
}

impl FinetuneJob {
    pub fn lora(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: Targets::from_args(&self.target),
        }
    }

    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            decay: self.schedule,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
        }
    }
}

/// `results/finetune-<timestamp>.json`: the header, then the run's own fields.
#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: RunHeader,
    #[serde(flatten)]
    run: serde_json::Value,
}

/// The folder training writes into before it is complete: `<out>.partial` beside `<out>`.
fn partial_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {} needs a folder name", out.display()))?;
    Ok(out.with_file_name(format!("{}.partial", name.to_string_lossy())))
}

/// Holds out a seeded `fraction` of the training conversations (at least one, never all).
fn hold_out<T>(train: &mut Vec<T>, fraction: f64, seed: u64) -> Vec<T> {
    let n = train.len();
    if fraction <= 0.0 || n < 2 {
        return Vec::new();
    }
    let k = ((fraction * n as f64).ceil() as usize).clamp(1, n - 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    train.shuffle(&mut rng);
    train.split_off(n - k)
}

/// The model as a user runs it (a GGUF stays quantized), with `adapter` applied.
pub fn load_for_answers(
    model: &str,
    adapter: Option<&Path>,
    device: &candle_core::Device,
) -> Result<loader::LoadedModel> {
    loader::load(
        model,
        &LoadOptions {
            device: device.clone(),
            adapter: adapter.map(Path::to_path_buf),
            ..LoadOptions::default()
        },
    )
}

/// Prints the before/after table and, for each row, its first wrong answer.
fn print_comparison(rows: &[Evaluation]) -> Result<()> {
    println!("{}", heldout::comparison_table(rows)?.to_markdown());
    for row in rows {
        if let Some(s) = row.samples.iter().find(|s| !s.score.correct) {
            println!(
                "{}: asked {:?}\n  answered {:?}\n  expected {:?}",
                row.label, s.question, s.answer, s.reference
            );
        }
    }
    Ok(())
}

/// The base model as `adapter_config.json` names it for peft (`base_model_name_or_path`,
/// which `AutoPeftModelForCausalLM` loads): the hub id for a zoo alias or hub id, the path as
/// given for a local folder or GGUF (the results file records the GGUF either way).
pub fn peft_base_name(model: &str) -> Result<String> {
    Ok(match ModelSource::resolve(model)? {
        ModelSource::Hub { repo, .. } => repo,
        ModelSource::Gguf(_) | ModelSource::Folder(_) => model.to_string(),
    })
}

/// What Ctrl-C does once training has begun: while the trainer runs, it asks for a stop after
/// the current step (and a checkpoint to resume from); at any other time (answering the
/// held-out questions, merging, exporting) it ends the process as an unhandled Ctrl-C would.
#[derive(Debug, Default)]
pub struct Interrupt {
    training: AtomicBool,
    stop: AtomicBool,
}

impl Interrupt {
    /// The signal handler's decision: `true` when the process should exit now.
    pub fn on_ctrl_c(&self) -> bool {
        if self.training.load(Ordering::SeqCst) {
            self.stop.store(true, Ordering::SeqCst);
            false
        } else {
            true
        }
    }

    /// Installs the process's Ctrl-C handler: during training it prints `stopping` and asks
    /// for a stop after the step; at any other time it ends the process.
    pub fn install(stopping: &'static str) -> Result<Arc<Self>> {
        let interrupt = Arc::new(Self::default());
        let handler = interrupt.clone();
        ctrlc::set_handler(move || {
            if handler.on_ctrl_c() {
                eprintln!("\ninterrupted");
                std::process::exit(130);
            }
            eprintln!("\n{stopping}");
        })?;
        Ok(interrupt)
    }

    /// Marks the trainer as running (or not).
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::SeqCst);
    }

    /// The flag the trainer polls between steps.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }
}

/// What training a LoRA adapter produced ([`train_adapter`]).
pub struct Trained {
    pub outcome: Outcome,
    /// The loss per step and per epoch, and where training stopped.
    pub state: TrainerState,
    /// Where the adapter is: `out` when training finished, else the `.partial` folder.
    pub folder: PathBuf,
    pub train_tokens_per_s: f64,
    /// Trainable and total parameter counts, in words.
    pub parameters: String,
    pub target_modules: Vec<String>,
    /// The tokenized training data's summary, for a results file.
    pub data: serde_json::Value,
}

/// Trains `job`'s adapter on `train`, with the loss on `eval` after each epoch, into
/// `<out>.partial`; a finished run is saved in peft format (and llama.cpp's for a GGUF base)
/// and moved to `out`. `interrupt` is polled between steps (a stop saves a checkpoint).
pub fn train_adapter(
    job: &FinetuneJob,
    train_conversations: &[Vec<Message>],
    eval_conversations: &[Vec<Message>],
    interrupt: &Interrupt,
    progress: bool,
) -> Result<Trained> {
    let lora = job.lora();
    lora.validate()?;
    let mut loaded = load_trainable(&job.model, &job.device)?;
    if loaded.chat_template.is_none() {
        eprintln!(
            "{} has no chat template (a base model): the examples are rendered as a plain \
             `User:` / `Assistant:` transcript, each answer ending with the end-of-text token, \
             as `billion-llm chat` prompts such a model",
            job.model
        );
    }
    let template = loaded.template_or_plain()?;
    let tokenizer = loaded.tokenizer()?.clone();
    let train = tokenize(train_conversations, &template, &tokenizer, job.max_len)?;
    let eval = if eval_conversations.is_empty() {
        None
    } else {
        Some(tokenize(
            eval_conversations,
            &template,
            &tokenizer,
            job.max_len,
        )?)
    };
    eprintln!(
        "{} training examples ({} tokens; {} truncated to {} tokens, {} dropped without an \
         answer token), {} held out",
        train.examples.len(),
        train.tokens(),
        train.truncated,
        job.max_len,
        train.dropped,
        eval.as_ref().map_or(0, |e| e.examples.len())
    );

    let settings = job.settings();
    let base_config = loaded.model.config().clone();
    let mut trainer = Trainer::new(
        &mut loaded.model,
        &lora,
        &settings,
        train.examples.len(),
        &job.model,
    )?;
    let parameters = trainer.adapter.parameter_summary(&base_config);
    let target_modules = trainer.adapter.target_modules();
    eprintln!("{parameters}");

    let work = partial_dir(&job.out)?;
    let resuming_inside = job.resume.as_ref().is_some_and(|r| r.starts_with(&work));
    if work.exists() && !resuming_inside {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    if let Some(dir) = &job.resume {
        trainer.resume(dir)?;
        eprintln!(
            "resumed from {} at step {}",
            dir.display(),
            trainer.state.global_step
        );
    }

    let bar = if progress {
        ProgressBar::new(trainer.total_steps() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] step {pos}/{len} ETA {eta}")?
            .progress_chars("=> "),
    );
    bar.set_position(trainer.state.global_step as u64);
    let epochs = settings.epochs;
    let mut on_step = |s: &StepLog| {
        bar.set_message(format!(
            "epoch {}/{epochs} loss {:.4} {:.0} tok/s",
            s.epoch,
            s.loss,
            s.input_tokens as f64 / s.seconds.max(1e-9)
        ));
        bar.set_position(s.step as u64);
    };
    interrupt.set_training(true);
    let outcome = trainer.train(
        &train,
        eval.as_ref(),
        &work,
        interrupt.stop_flag(),
        &mut on_step,
    );
    interrupt.set_training(false);
    let outcome = outcome?;
    bar.finish_and_clear();

    let train_tokens_per_s = trainer.train_tokens as f64 / trainer.train_seconds.max(1e-9);
    let state = trainer.state.clone();
    let completed = outcome == Outcome::Finished;
    if completed {
        trainer
            .adapter
            .save_peft(&work, &peft_base_name(&job.model)?, &base_config)?;
    }
    drop(trainer);
    drop(loaded);
    let folder = if completed {
        let adapter = LoraAdapter::load(&work, &candle_core::Device::Cpu)?;
        if let ModelSource::Gguf(base) = ModelSource::resolve(&job.model)? {
            export::write_gguf_lora(&adapter, &base, &work.join("adapter.gguf"))?;
        }
        if job.out.exists() {
            std::fs::remove_dir_all(&job.out)?;
        }
        std::fs::rename(&work, &job.out)
            .with_context(|| format!("cannot move {} to {}", work.display(), job.out.display()))?;
        job.out.clone()
    } else {
        work
    };
    for e in &state.epochs {
        eprintln!(
            "epoch {}: train loss {:.4}, held-out loss {}",
            e.epoch,
            e.train_loss,
            e.eval_loss.map_or("-".into(), |l| format!("{l:.4}"))
        );
    }
    let data = serde_json::json!({
        "file": job.data,
        "examples": train.examples.len(),
        "tokens": train.tokens(),
        "truncated": train.truncated,
        "dropped": train.dropped,
        "held_out_examples": eval.as_ref().map_or(0, |e| e.examples.len()),
    });
    Ok(Trained {
        outcome,
        state,
        folder,
        train_tokens_per_s,
        parameters,
        target_modules,
        data,
    })
}

/// Refuses to replace an existing `--out` (or `--merge`) unless `overwrite` is set.
fn check_outputs(args: &FinetuneJob) -> Result<()> {
    if args.out.exists() && !args.overwrite {
        bail!(
            "{} already exists: choose another --out, or pass --overwrite to replace it",
            args.out.display()
        );
    }
    if let Some(merged) = args
        .merge
        .as_ref()
        .filter(|m| m.exists() && !args.overwrite)
    {
        bail!(
            "{} already exists: choose another --merge, or pass --overwrite to replace it",
            merged.display()
        );
    }
    Ok(())
}

/// Runs the job; on Ctrl-C during training it stops after the current step and saves a
/// checkpoint to resume from ([`Interrupt`]).
pub fn run(args: &FinetuneJob) -> Result<()> {
    let started = Instant::now();
    check_outputs(args)?;
    let lora = args.lora();
    lora.validate()?;
    let device = &args.device;
    // Read the data before loading the model: a bad file fails in a second.
    let mut train_conversations = read_conversations(&args.data)?;
    let eval_examples: Vec<Labeled> = match &args.eval {
        Some(path) => read_labeled(path)?,
        None => hold_out(&mut train_conversations, args.eval_fraction, args.seed)
            .into_iter()
            .map(Labeled::from)
            .collect(),
    };
    let eval_conversations: Vec<Vec<Message>> =
        eval_examples.iter().map(|e| e.messages.clone()).collect();
    let answered: Vec<Labeled> = eval_examples
        .iter()
        .take(args.answer_limit.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let references: Vec<&str> = answered
        .iter()
        .map(|c| heldout::split_reference(&c.messages).map(|(_, r)| r))
        .collect::<Result<_>>()?;
    let metric = args.metric.unwrap_or_else(|| Metric::detect(&references));
    let shots: Vec<Vec<Message>> = train_conversations
        .iter()
        .take(args.few_shot)
        .cloned()
        .collect();
    let mut comparison: Vec<Evaluation> = Vec::new();
    if !answered.is_empty() {
        eprintln!(
            "asking the base model {} held-out questions, plainly and with {} examples...",
            answered.len(),
            shots.len()
        );
        let mut base = load_for_answers(&args.model, None, device)?;
        comparison.push(heldout::evaluate(
            "base model, plain prompt",
            &mut base,
            &answered,
            &[],
            metric,
        )?);
        if !shots.is_empty() {
            let label = format!("base model, {} examples in the prompt", shots.len());
            comparison.push(heldout::evaluate(
                &label, &mut base, &answered, &shots, metric,
            )?);
        }
    }

    let interrupt = Interrupt::install("stopping after this step to save a checkpoint...")?;
    let trained = train_adapter(
        args,
        &train_conversations,
        &eval_conversations,
        &interrupt,
        true,
    )?;
    let completed = trained.outcome == Outcome::Finished;
    if completed {
        if let Some(merged) = &args.merge {
            let adapter = LoraAdapter::load(&args.out, &candle_core::Device::Cpu)?;
            export::merge(&adapter, &args.model, merged)?;
            eprintln!("merged model written to {}", merged.display());
        }
        if !answered.is_empty() {
            eprintln!("asking the adapted model the held-out questions...");
            let mut tuned = load_for_answers(&args.model, Some(&args.out), device)?;
            comparison.push(heldout::evaluate(
                "LoRA adapter, plain prompt",
                &mut tuned,
                &answered,
                &[],
                metric,
            )?);
        }
    }
    let header = RunHeader::now(rayon::current_num_threads());
    let run = serde_json::json!({
        "base_model": args.model,
        "completed": completed,
        "out": trained.folder,
        "lora": {
            "r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
            "target_modules": trained.target_modules,
        },
        "parameters": trained.parameters,
        "settings": args.settings(),
        "max_len": args.max_len,
        "data": trained.data,
        "steps": trained.state.steps,
        "epochs": trained.state.epochs,
        "heldout": {
            "metric": metric,
            "few_shot": shots.len(),
            "rows": comparison.iter().map(|r| r.with_samples(5)).collect::<Vec<_>>(),
        },
        "wall_s": started.elapsed().as_secs_f64(),
        "train_tokens_per_s": trained.train_tokens_per_s,
        "peak_rss_bytes": crate::eval::memory::peak_rss_bytes(),
    });
    let path = args.results_dir.join(header.file_name("finetune"));
    write_json_atomic(&path, &Report { header, run })?;
    eprintln!("wrote {}", path.display());
    if !comparison.is_empty() {
        print_comparison(&comparison)?;
    }
    match trained.outcome {
        Outcome::Finished => {
            println!("adapter saved in {}", args.out.display());
        }
        Outcome::Interrupted { checkpoint } => {
            println!(
                "interrupted: checkpoint saved in {}\nresume with the same arguments plus \
                 --resume {}",
                checkpoint.display(),
                checkpoint.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ctrl-C stops training after the current step, and ends the process at any other time
    /// (a handler that only set the stop flag would leave merging and answering deaf to it).
    #[test]
    fn ctrl_c_stops_training_and_ends_everything_else() {
        let interrupt = Interrupt::default();
        assert!(interrupt.on_ctrl_c(), "before training: exit");
        interrupt.set_training(true);
        assert!(
            !interrupt.on_ctrl_c(),
            "while training: stop after the step"
        );
        assert!(interrupt.stop_flag().load(Ordering::SeqCst));
        interrupt.set_training(false);
        assert!(interrupt.on_ctrl_c(), "after training: exit");
    }

    /// peft's `AutoPeftModelForCausalLM` loads `base_model_name_or_path`: a zoo alias must
    /// become its hub id.
    #[test]
    fn the_peft_base_is_the_hub_id() {
        let tinyllama = crate::hub::zoo::lookup("tinyllama").unwrap();
        assert_eq!(peft_base_name("tinyllama").unwrap(), tinyllama.hub_id);
        assert_eq!(peft_base_name("org/some-model").unwrap(), "org/some-model");
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_str().unwrap();
        assert_eq!(peft_base_name(folder).unwrap(), folder);
    }
}
