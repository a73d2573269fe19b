//! Short 5, fine-tuning: how small an adapter is, how its loss fell, and whether it learned the
//! task, read from the `results/finetune-*.json` files that `billion-llm finetune` writes.

use super::sorted_files;
use crate::eval::results::Hardware;
use crate::finetune::config::{default_targets, LoraConfig, Targets};
use crate::finetune::heldout::{self, Evaluation, Metric};
use crate::finetune::trainer::{EpochLog, StepLog};
use crate::hub::assets::{asset, SMOLLM2_GGUF};
use crate::model::config::TransformerConfig;
use crate::model::weights::GgufWeights;
use crate::report::{human_count, Chart, LineChart, Table};
use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The models of the adapter-size table: the four compared 1B models and the Short's own
/// SmolLM2-135M (its config read from the GGUF asset).
pub fn short_models() -> Result<Vec<(String, TransformerConfig)>> {
    let mut models: Vec<(String, TransformerConfig)> = crate::workbook::scale::compared_models()?
        .into_iter()
        .map(|(m, c)| (m.name.to_string(), c))
        .collect();
    let gguf = asset(SMOLLM2_GGUF)?;
    let (_, config) = GgufWeights::open(&gguf, &candle_core::Device::Cpu)?;
    models.push(("SmolLM2-135M-Instruct".to_string(), config));
    Ok(models)
}

/// The adapter's size beside its model's, for rank `r`: peft's default targets (q and v) and
/// all-linear, with `r · (in + out)` numbers per adapted layer, stored as f32.
pub fn adapter_size_table(models: &[(String, TransformerConfig)], r: usize) -> Result<Table> {
    let mut names = Vec::new();
    let mut totals = Vec::new();
    let mut targets = Vec::new();
    let mut default_counts = Vec::new();
    let mut default_pct = Vec::new();
    let mut default_mb = Vec::new();
    let mut all_counts = Vec::new();
    let mut all_pct = Vec::new();
    for (name, c) in models {
        let total = c.parameter_counts().total() as f64;
        let count = |targets: Targets| -> Result<f64> {
            let lora = LoraConfig {
                r,
                targets,
                ..LoraConfig::default()
            };
            Ok(lora.parameter_count(c)? as f64)
        };
        let default = count(Targets::FamilyDefault)?;
        let all = count(Targets::AllLinear)?;
        names.push(name.clone());
        totals.push(human_count(total));
        targets.push(default_targets(c.architecture).join(", "));
        default_counts.push(human_count(default));
        default_pct.push(100.0 * default / total);
        default_mb.push(default * 4.0 / 1e6);
        all_counts.push(human_count(all));
        all_pct.push(100.0 * all / total);
    }
    let frame = DataFrame::new_infer_height(vec![
        Column::new("model".into(), names),
        Column::new("parameters".into(), totals),
        Column::new("default targets".into(), targets),
        Column::new(format!("LoRA r={r}").into(), default_counts),
        Column::new("% of model".into(), default_pct),
        Column::new("adapter MB (f32)".into(), default_mb),
        Column::new("all-linear".into(), all_counts),
        Column::new("all-linear %".into(), all_pct),
    ])?;
    Ok(Table::new(format!("What a rank-{r} LoRA adapter trains"), frame)
        .with_decimals(2)
        .with_note(
            "Counted from each config.json: r·(inputs + outputs) per adapted matrix, every block.",
        ))
}

/// The settings a results file records (the ones the book shows).
#[derive(Debug, Clone, Deserialize)]
pub struct RunSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
}

/// The training data a results file records.
#[derive(Debug, Clone, Deserialize)]
pub struct RunData {
    pub file: PathBuf,
    pub examples: usize,
    pub tokens: usize,
    pub held_out_examples: usize,
}

/// The before/after rows of a results file.
#[derive(Debug, Clone, Deserialize)]
pub struct HeldOut {
    pub metric: Metric,
    pub few_shot: usize,
    pub rows: Vec<Evaluation>,
}

/// One `results/finetune-*.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct FinetuneRun {
    pub timestamp: String,
    pub base_model: String,
    pub completed: bool,
    pub hardware: Hardware,
    #[serde(default)]
    pub instruction_set: Option<String>,
    pub parameters: String,
    pub settings: RunSettings,
    pub data: RunData,
    pub steps: Vec<StepLog>,
    pub epochs: Vec<EpochLog>,
    pub heldout: Option<HeldOut>,
    pub wall_s: f64,
    pub train_tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// The data file of the fine-tuning Short's run.
pub const SHORT_DATA: &str = "data/finetune/person-json/train.jsonl";

/// The base model of the fine-tuning Short's run, as its GGUF file is named.
pub const SHORT_BASE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The newest completed run of the fine-tuning Short in `results` (LoRA on [`SHORT_BASE`] with
/// [`SHORT_DATA`]), if any: a run on another data file or model, however recent, is not the one
/// the Short describes.
pub fn short_run(results: &Path) -> Result<Option<FinetuneRun>> {
    for path in sorted_files(results, "finetune-", ".json")?.iter().rev() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let run: FinetuneRun = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fine-tuning results file", path.display()))?;
        if run.completed && run.data.file.ends_with(SHORT_DATA) && run.model_name() == SHORT_BASE {
            return Ok(Some(run));
        }
    }
    Ok(None)
}

/// The training loss per step and the held-out loss at the end of each epoch.
pub fn loss_chart(steps: &[StepLog], epochs: &[EpochLog], title: &str) -> Result<Chart> {
    let train: Vec<(f64, f64)> = steps.iter().map(|s| (s.step as f64, s.loss)).collect();
    // An epoch's held-out loss is drawn at that epoch's last step.
    let held_out: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| {
            let last = steps.iter().rfind(|s| s.epoch == e.epoch)?;
            Some((last.step as f64, e.eval_loss?))
        })
        .collect();
    let mut chart = LineChart::new(title, "optimizer step", "loss per answer token")
        .curve("training batches", train);
    if !held_out.is_empty() {
        chart = chart.curve("held-out examples (after each epoch)", held_out);
    }
    chart.render()
}

impl FinetuneRun {
    /// The run's loss curve.
    pub fn loss_chart(&self) -> Result<Chart> {
        loss_chart(
            &self.steps,
            &self.epochs,
            &format!("LoRA on {}: loss while training", self.model_name()),
        )
    }

    /// The base model's file or folder name.
    pub fn model_name(&self) -> &str {
        Path::new(&self.base_model)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.base_model)
    }

    /// The before/after table, or `None` when the run answered no held-out questions.
    pub fn before_after_table(&self) -> Result<Option<Table>> {
        match &self.heldout {
            Some(h) if !h.rows.is_empty() => Ok(Some(heldout::comparison_table(&h.rows)?)),
            _ => Ok(None),
        }
    }

    /// A few held-out questions with the answer of each row.
    pub fn examples_table(&self, n: usize) -> Result<Option<Table>> {
        let Some(h) = self.heldout.as_ref().filter(|h| !h.rows.is_empty()) else {
            return Ok(None);
        };
        let n = h
            .rows
            .iter()
            .map(|r| r.samples.len())
            .min()
            .unwrap_or(0)
            .min(n);
        let mut columns = vec![Column::new(
            "sentence".into(),
            h.rows[0].samples[..n]
                .iter()
                .map(|s| s.question.lines().last().unwrap_or("").to_string())
                .collect::<Vec<_>>(),
        )];
        for row in &h.rows {
            columns.push(Column::new(
                row.label.as_str().into(),
                row.samples[..n]
                    .iter()
                    .map(|s| {
                        let mark = if s.score.correct { "✓" } else { "✗" };
                        format!("{mark} {}", s.answer.replace('\n', " "))
                    })
                    .collect::<Vec<_>>(),
            ));
        }
        let frame = DataFrame::new_infer_height(columns)?;
        Ok(Some(Table::new(
            format!("The first {n} held-out sentences, answered three ways"),
            frame,
        )))
    }

    /// What the run cost: time, speed and memory, with the machine.
    pub fn cost_table(&self) -> Result<Table> {
        let s = &self.settings;
        let isa = self.instruction_set.as_deref().unwrap_or("unrecorded");
        let rows: Vec<(&str, String)> = vec![
            ("base model", self.model_name().to_string()),
            (
                "training data",
                format!(
                    "{} examples ({} tokens), {} held out",
                    self.data.examples, self.data.tokens, self.data.held_out_examples
                ),
            ),
            (
                "schedule",
                format!(
                    "{} epochs, batch {} × accumulation {}, {} steps, peak lr {}",
                    s.epochs,
                    s.batch_size,
                    s.grad_accum,
                    self.steps.len(),
                    s.lr
                ),
            ),
            ("adapter", self.parameters.clone()),
            (
                "training time (the optimizer steps)",
                format!("{:.0} s", self.steps.iter().map(|s| s.seconds).sum::<f64>()),
            ),
            (
                "wall time (loading, 3 × 60 held-out answers, exports)",
                format!("{:.0} s", self.wall_s),
            ),
            (
                "training speed",
                format!("{:.0} tokens/s", self.train_tokens_per_s),
            ),
            (
                "peak memory (resident)",
                self.peak_rss_bytes
                    .map_or("-".into(), |b| format!("{:.2} GB", b as f64 / 1e9)),
            ),
            (
                "machine",
                format!(
                    "{} ({isa}), {} threads",
                    self.hardware.cpu, self.hardware.threads
                ),
            ),
            ("measured", self.timestamp.clone()),
        ];
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "".into(),
                rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
            ),
            Column::new(
                "value".into(),
                rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            ),
        ])?;
        Ok(Table::new("What the run cost", frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Short's run is picked by its data file and model, not by being the newest.
    #[test]
    fn the_short_run_is_chosen_by_data_and_model() {
        let template: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("results/finetune-2026-11-30T12-39-34Z.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |stamp: &str, change: &dyn Fn(&mut serde_json::Value)| {
            let mut run = template.clone();
            run["timestamp"] = stamp.into();
            change(&mut run);
            std::fs::write(
                dir.path().join(format!("finetune-{stamp}.json")),
                run.to_string(),
            )
            .unwrap();
        };
        write("2026-12-01T00-00-00Z", &|_| {});
        write("2026-12-02T00-00-00Z", &|r| {
            r["data"]["file"] = "toy.jsonl".into();
        });
        write("2026-12-03T00-00-00Z", &|r| {
            r["base_model"] = "/m/gemma-3-270m-q4_k_m.gguf".into();
        });
        write("2026-12-04T00-00-00Z", &|r| {
            r["completed"] = false.into();
        });
        let run = short_run(dir.path()).unwrap().unwrap();
        assert_eq!(run.timestamp, "2026-12-01T00-00-00Z");
    }
}
