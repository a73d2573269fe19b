//! The training loop: shuffled micro-batches, gradient accumulation, an AdamW step per group,
//! held-out loss and a peft checkpoint after each epoch, and a checkpoint on request (Ctrl-C)
//! from which `--resume` continues.

use super::adapter::TrainableAdapter;
use super::config::LoraConfig;
use super::data::{Dataset, Example};
use super::loss::{summed_loss, Batch};
use super::optim::{Decay, Optimizer, Schedule};
use crate::model::Transformer;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How to train (the optimizer side; the adapter's shape is [`LoraConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub epochs: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Micro-batches per optimizer step: the effective batch is `batch_size * grad_accum`
    /// without the memory of a large batch.
    pub grad_accum: usize,
    pub lr: f64,
    /// Fraction of all steps spent warming up.
    pub warmup_ratio: f64,
    pub decay: Decay,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Seeds the adapter's initialisation and the order of examples in each epoch.
    pub seed: u64,
}

impl Default for TrainSettings {
    /// transformers' `TrainingArguments` defaults where they exist, with the usual LoRA rate.
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 4,
            grad_accum: 4,
            lr: 2e-4,
            warmup_ratio: 0.03,
            decay: Decay::Linear,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 42,
        }
    }
}

/// One optimizer step, as the results file records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: usize,
    /// Mean cross-entropy per answer token of the step.
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub target_tokens: usize,
    pub input_tokens: usize,
    pub seconds: f64,
}

/// The end of an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// Mean training loss per answer token over the epoch's steps.
    pub train_loss: f64,
    /// Mean loss per answer token of the held-out examples.
    pub eval_loss: Option<f64>,
}

/// `trainer_state.json` of a checkpoint: where to continue and what happened so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub base_model: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed in the epoch under way.
    pub step_in_epoch: usize,
    pub global_step: usize,
    pub steps: Vec<StepLog>,
    pub epochs: Vec<EpochLog>,
    /// The run's settings and number of training examples: a resumed run must match both to
    /// continue the same schedule over the same batches.
    #[serde(default)]
    pub settings: Option<TrainSettings>,
    #[serde(default)]
    pub train_examples: Option<usize>,
}

/// The optimizer's moment estimates inside a checkpoint folder (transformers calls its copy
/// `optimizer.pt`).
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// How a call to [`Trainer::train`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// Stopped on request after saving this checkpoint.
    Interrupted {
        checkpoint: PathBuf,
    },
}

/// Trains a LoRA adapter on a frozen model.
pub struct Trainer<'m> {
    model: &'m mut Transformer,
    pub adapter: TrainableAdapter,
    optimizer: Optimizer,
    settings: TrainSettings,
    steps_per_epoch: usize,
    pub state: TrainerState,
    /// Seconds spent in optimizer steps and real input tokens seen, for tokens/s.
    pub train_seconds: f64,
    pub train_tokens: usize,
}

impl<'m> Trainer<'m> {
    /// Attaches a fresh adapter to `model` for `train_examples` examples per epoch.
    pub fn new(
        model: &'m mut Transformer,
        lora: &LoraConfig,
        settings: &TrainSettings,
        train_examples: usize,
        base_model: &str,
    ) -> Result<Self> {
        if settings.epochs == 0 || settings.batch_size == 0 || settings.grad_accum == 0 {
            bail!("--epochs, --batch-size and --grad-accum must be at least 1");
        }
        if train_examples == 0 {
            bail!("there are no training examples");
        }
        let adapter = TrainableAdapter::attach(model, lora, settings.seed)?;
        let steps_per_epoch = train_examples
            .div_ceil(settings.batch_size)
            .div_ceil(settings.grad_accum);
        let total_steps = steps_per_epoch * settings.epochs;
        let schedule = Schedule {
            peak_lr: settings.lr,
            warmup_steps: (settings.warmup_ratio * total_steps as f64).ceil() as usize,
            total_steps,
            decay: settings.decay,
        };
        let optimizer = Optimizer::new(
            adapter.vars(),
            settings.weight_decay,
            schedule,
            settings.max_grad_norm,
        )?;
        model.set_training(true);
        Ok(Self {
            model,
            adapter,
            optimizer,
            settings: settings.clone(),
            steps_per_epoch,
            state: TrainerState {
                base_model: base_model.to_string(),
                epoch: 0,
                step_in_epoch: 0,
                global_step: 0,
                steps: Vec::new(),
                epochs: Vec::new(),
                settings: Some(settings.clone()),
                train_examples: Some(train_examples),
            },
            train_seconds: 0.0,
            train_tokens: 0,
        })
    }

    pub fn total_steps(&self) -> usize {
        self.steps_per_epoch * self.settings.epochs
    }

    /// Continues from a checkpoint written by [`Trainer::save_checkpoint`], exactly where the
    /// run stopped: the adapter, AdamW's moments and step count, the schedule and the batches
    /// are those the uninterrupted run would have had, so it must have the same settings and
    /// the same number of training examples.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: --resume takes a checkpoint folder written by finetune",
                path.display()
            )
        })?;
        let state: TrainerState = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a trainer state", path.display()))?;
        if state.base_model != self.state.base_model {
            bail!(
                "{} was trained on {}, not on {}",
                dir.display(),
                state.base_model,
                self.state.base_model
            );
        }
        self.check_same_run(&state, dir)?;
        self.adapter
            .load_weights(dir, self.model.config())
            .with_context(|| format!("resuming from {}", dir.display()))?;
        self.optimizer
            .load(&dir.join(OPTIMIZER_FILE), state.global_step)
            .with_context(|| format!("resuming from {}", dir.display()))?;
        self.state = state;
        Ok(())
    }

    /// Refuses a checkpoint whose run had other settings or another number of examples, naming
    /// what differs.
    fn check_same_run(&self, saved: &TrainerState, dir: &Path) -> Result<()> {
        let (Some(settings), Some(examples)) = (&saved.settings, saved.train_examples) else {
            bail!(
                "{} does not record its run's settings or optimizer state, so it cannot be \
                 resumed exactly: start the run afresh (without --resume)",
                dir.display()
            );
        };
        let ours = serde_json::to_value(&self.settings)?;
        let theirs = serde_json::to_value(settings)?;
        let mut differences: Vec<String> = Vec::new();
        if let (Some(ours), Some(theirs)) = (ours.as_object(), theirs.as_object()) {
            for (key, value) in theirs {
                if ours.get(key) != Some(value) {
                    let now = ours.get(key).map_or("nothing".into(), |v| v.to_string());
                    differences.push(format!("{key} {value} (now {now})"));
                }
            }
        }
        // The adapter's shape is checked when its weights load; its scale and dropout here.
        let adapter_config = dir.join("adapter_config.json");
        let saved_lora: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&adapter_config)
                .with_context(|| format!("cannot read {}", adapter_config.display()))?,
        )
        .with_context(|| format!("{} is not JSON", adapter_config.display()))?;
        let lora = &self.adapter.config;
        for (key, now) in [
            ("lora_alpha", lora.alpha),
            ("lora_dropout", f64::from(lora.dropout)),
        ] {
            let saved = saved_lora[key].as_f64();
            if saved.is_none_or(|v| (v - now).abs() > 1e-6 * now.abs().max(1.0)) {
                let shown = saved.map_or("none".into(), |v| v.to_string());
                differences.push(format!("{key} {shown} (now {now})"));
            }
        }
        if Some(examples) != self.state.train_examples {
            differences.push(format!(
                "{examples} training examples (now {})",
                self.state.train_examples.unwrap_or(0)
            ));
        }
        if !differences.is_empty() {
            bail!(
                "{} was saved by a run with {}: resume with that run's arguments and data, or \
                 start afresh without --resume",
                dir.display(),
                differences.join(", ")
            );
        }
        Ok(())
    }

    /// Writes the adapter (peft format) and the trainer state into `dir`, through a temporary
    /// folder renamed at the end, so a folder with that name is always complete.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .context("a checkpoint folder needs a name")?
            .to_string_lossy();
        let tmp = dir.with_file_name(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        self.adapter
            .save_peft(&tmp, &self.state.base_model, self.model.config())?;
        self.optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
        std::fs::write(
            tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(&self.state)? + "\n",
        )?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot move the checkpoint to {}", dir.display()))?;
        Ok(())
    }

    /// Mean loss per answer token over `data`, without dropout.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<f64> {
        self.adapter.install(self.model, 0.0)?;
        let (mut sum, mut tokens) = (0f64, 0usize);
        for chunk in data.examples.chunks(self.settings.batch_size) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = Batch::new(&refs, self.model.device())?;
            sum += summed_loss(self.model, &batch)?
                .detach()
                .to_scalar::<f32>()? as f64;
            tokens += batch.target_tokens;
        }
        self.adapter
            .install(self.model, self.adapter.config.dropout)?;
        Ok(sum / tokens.max(1) as f64)
    }

    /// Trains to the last epoch, writing `checkpoint-epoch-N` into `out` after each; when
    /// `stop` becomes true, saves `checkpoint-step-N` after the current step and returns.
    /// `on_step` sees every step (for progress bars).
    pub fn train(
        &mut self,
        train: &Dataset,
        eval: Option<&Dataset>,
        out: &Path,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<Outcome> {
        let bs = self.settings.batch_size;
        let accum = self.settings.grad_accum;
        while self.state.epoch < self.settings.epochs {
            let epoch = self.state.epoch;
            let mut order: Vec<usize> = (0..train.examples.len()).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                self.settings.seed.wrapping_add(epoch as u64 + 1),
            );
            order.shuffle(&mut rng);
            let batches: Vec<&[usize]> = order.chunks(bs).collect();
            for group in batches.chunks(accum).skip(self.state.step_in_epoch) {
                if stop.load(Ordering::Relaxed) {
                    let checkpoint =
                        out.join(format!("checkpoint-step-{}", self.state.global_step));
                    self.save_checkpoint(&checkpoint)?;
                    return Ok(Outcome::Interrupted { checkpoint });
                }
                let log = self.step(train, group, epoch)?;
                on_step(&log);
                self.state.steps.push(log);
                self.state.step_in_epoch += 1;
                self.state.global_step += 1;
            }
            // Step logs number epochs from 1.
            let epoch_steps: Vec<&StepLog> = self
                .state
                .steps
                .iter()
                .filter(|s| s.epoch == epoch + 1)
                .collect();
            let tokens: usize = epoch_steps.iter().map(|s| s.target_tokens).sum();
            let train_loss = epoch_steps
                .iter()
                .map(|s| s.loss * s.target_tokens as f64)
                .sum::<f64>()
                / tokens.max(1) as f64;
            let eval_loss = eval.map(|d| self.evaluate(d)).transpose()?;
            self.state.epochs.push(EpochLog {
                epoch: epoch + 1,
                train_loss,
                eval_loss,
            });
            self.state.epoch += 1;
            self.state.step_in_epoch = 0;
            self.save_checkpoint(&out.join(format!("checkpoint-epoch-{}", epoch + 1)))?;
        }
        Ok(Outcome::Finished)
    }

    /// One optimizer step over a group of micro-batches.
    fn step(&mut self, train: &Dataset, group: &[&[usize]], epoch: usize) -> Result<StepLog> {
        let start = Instant::now();
        self.adapter
            .reseed_dropout(self.settings.seed, self.state.global_step);
        let mut acc = self.optimizer.accumulator();
        let (mut loss_sum, mut target_tokens, mut input_tokens) = (0f64, 0usize, 0usize);
        for indices in group {
            let examples: Vec<&Example> = indices.iter().map(|&i| &train.examples[i]).collect();
            let batch = Batch::new(&examples, self.model.device())?;
            let loss = summed_loss(self.model, &batch)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            self.optimizer.accumulate(&mut acc, &grads)?;
            target_tokens += batch.target_tokens;
            input_tokens += batch.input_tokens;
        }
        let report = self
            .optimizer
            .step(acc, 1.0 / target_tokens.max(1) as f64)?;
        let seconds = start.elapsed().as_secs_f64();
        self.train_seconds += seconds;
        self.train_tokens += input_tokens;
        Ok(StepLog {
            step: self.optimizer.steps_done(),
            epoch: epoch + 1,
            loss: loss_sum / target_tokens.max(1) as f64,
            lr: report.lr,
            grad_norm: report.grad_norm,
            target_tokens,
            input_tokens,
            seconds,
        })
    }
}
