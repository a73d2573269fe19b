//! Short 5, fine-tuning: how small an adapter is, how its loss fell, and whether it learned the
//! task beside the baselines, read from the `results/finetune-study-*.json` files that
//! `billion-llm finetune-study` writes.

use super::sorted_files;
use crate::eval::results::Hardware;
use crate::finetune::config::{default_targets, LoraConfig, Targets};
use crate::finetune::heldout::{Evaluation, TagScore};
use crate::finetune::study::{Setting, StudyResults, TrainedRun};
use crate::finetune::trainer::{EpochLog, StepLog};
use crate::hub::assets::{asset, SMOLLM2_GGUF};
use crate::model::config::TransformerConfig;
use crate::model::weights::GgufWeights;
use crate::report::{human_count, Chart, LineChart, ScatterChart, Table};
use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::path::Path;

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

/// The training data of the fine-tuning Short's study.
pub const SHORT_DATA: &str = "data/finetune/people-json/train.jsonl";

/// The base model of the fine-tuning Short's study, as its GGUF file is named.
pub const SHORT_BASE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The tags of the Short's held-out set, in the order its tables show them.
pub const SHORT_TAGS: [&str; 9] = [
    "seen template",
    "unseen template",
    "one person",
    "age in words",
    "birth year",
    "missing field",
    "two people",
    "unseen city",
    "unseen occupation",
];

/// The kinds of held-out sentence the examples table shows, one sentence each.
pub const SHORT_EXAMPLE_KINDS: [&str; 5] = [
    "unseen template",
    "age in words",
    "birth year",
    "missing field",
    "two people",
];

/// The original Python demo's setting, one of the study's candidates.
pub const DEMO_SETTING: Setting = Setting {
    lr: 2e-4,
    grad_accum: 4,
};

/// One `results/finetune-study-*.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShortStudy {
    pub timestamp: String,
    pub git_commit: Option<String>,
    pub hardware: Hardware,
    #[serde(default)]
    pub instruction_set: Option<String>,
    #[serde(flatten)]
    pub results: StudyResults,
}

/// The newest study of the fine-tuning Short in `results` (LoRA on [`SHORT_BASE`] with
/// [`SHORT_DATA`]), if any: a study on another data file or model, however recent, is not the
/// one the Short describes.
pub fn short_study(results: &Path) -> Result<Option<ShortStudy>> {
    for path in sorted_files(results, "finetune-study-", ".json")?
        .iter()
        .rev()
    {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let study: ShortStudy = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fine-tuning study's results", path.display()))?;
        let r = &study.results;
        if r.data.train.ends_with(SHORT_DATA) && file_name(&r.base_model) == SHORT_BASE {
            return Ok(Some(study));
        }
    }
    Ok(None)
}

/// The file or folder name of a model path.
fn file_name(model: &str) -> &str {
    Path::new(model)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(model)
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
        chart = chart.curve("validation examples (after each epoch)", held_out);
    }
    chart.render()
}

/// Mean, smallest and largest of some values.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

/// `text` cut to `max` characters, with an ellipsis when cut (degenerate answers repeat a key
/// for hundreds of tokens; the results file keeps them whole).
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{} …", &text[..at]),
        None => text.to_string(),
    }
}

/// A row of the results table: a way of asking, over one or more runs (seeds).
struct Row<'a> {
    label: String,
    runs: Vec<&'a Evaluation>,
}

impl Row<'_> {
    /// The mean, smallest and largest of `f` over the row's runs, in percent.
    fn spread(&self, f: impl Fn(&Evaluation) -> f64) -> (f64, f64, f64) {
        spread(&self.runs.iter().map(|e| 100.0 * f(e)).collect::<Vec<_>>())
    }

    /// The mean percentage entirely right among the examples tagged `tag`, if any are.
    fn tag_correct(&self, tag: &str) -> Option<f64> {
        let values: Option<Vec<f64>> = self
            .runs
            .iter()
            .map(|e| e.tag(tag).map(|t| 100.0 * t.correct))
            .collect();
        values.map(|v| spread(&v).0)
    }
}

impl ShortStudy {
    fn rows(&self) -> Vec<Row<'_>> {
        let r = &self.results;
        let mut rows: Vec<Row> = r
            .baselines
            .iter()
            .map(|b| Row {
                label: b.label.clone(),
                runs: vec![b],
            })
            .collect();
        if r.chosen != DEMO_SETTING {
            if let Some(demo) = r.candidates().find(|c| c.setting == DEMO_SETTING) {
                rows.push(Row {
                    label: format!("LoRA, the demo's {DEMO_SETTING} (seed {})", demo.seed),
                    runs: vec![&demo.heldout],
                });
            }
        }
        let chosen = r.chosen_runs();
        rows.push(Row {
            label: format!(
                "LoRA, chosen on validation: {} ({} seeds)",
                r.chosen,
                chosen.len()
            ),
            runs: chosen.iter().map(|c| &c.heldout).collect(),
        });
        rows
    }

    /// The held-out results: each baseline, the demo's setting and the chosen one (mean of its
    /// seeds, with the range).
    pub fn results_table(&self) -> Result<Table> {
        let rows = self.rows();
        let mean = |f: &dyn Fn(&Evaluation) -> f64| -> Vec<f64> {
            rows.iter().map(|row| row.spread(f).0).collect()
        };
        let tokens: Vec<f64> = rows
            .iter()
            .map(|row| {
                spread(
                    &row.runs
                        .iter()
                        .map(|e| e.mean_prompt_tokens)
                        .collect::<Vec<_>>(),
                )
                .0
            })
            .collect();
        let range: Vec<String> = rows
            .iter()
            .map(|row| {
                let (_, lo, hi) = row.spread(|e| e.correct);
                if row.runs.len() > 1 {
                    format!("{lo:.1}–{hi:.1}")
                } else {
                    "-".to_string()
                }
            })
            .collect();
        let tag = |name: &str| -> Vec<Option<f64>> {
            rows.iter().map(|row| row.tag_correct(name)).collect()
        };
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "asked".into(),
                rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
            ),
            Column::new("prompt tokens".into(), tokens),
            Column::new("valid JSON %".into(), mean(&|e| e.valid)),
            Column::new("cut by the limit %".into(), mean(&|e| e.cut)),
            Column::new("fields right %".into(), mean(&|e| e.fields)),
            Column::new("all right %".into(), mean(&|e| e.correct)),
            Column::new("range over seeds".into(), range),
            Column::new("seen template %".into(), tag("seen template")),
            Column::new("unseen template %".into(), tag("unseen template")),
        ])?;
        let n = self.results.data.heldout_examples;
        Ok(
            Table::new(format!("{n} held-out sentences, greedy answers"), frame)
                .with_decimals(1)
                .with_note(
                    "All right: every person's every field right. Seen and unseen: the sentence's \
             template occurs in training, or never does.",
                ),
        )
    }

    /// Answers entirely right per kind of held-out sentence, for each row of the results.
    pub fn by_kind_table(&self) -> Result<Table> {
        let rows = self.rows();
        let first = rows
            .first()
            .and_then(|r| r.runs.first())
            .context("the study has no rows")?;
        let tags: Vec<&TagScore> = SHORT_TAGS.iter().filter_map(|t| first.tag(t)).collect();
        let mut columns = vec![Column::new(
            "asked".into(),
            rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
        )];
        for t in tags {
            columns.push(Column::new(
                format!("{} ({})", t.tag, t.examples).into(),
                rows.iter()
                    .map(|row| row.tag_correct(&t.tag))
                    .collect::<Vec<_>>(),
            ));
        }
        Ok(Table::new(
            "All right, % of each kind of held-out sentence (how many in brackets)",
            DataFrame::new_infer_height(columns)?,
        )
        .with_decimals(1))
    }

    /// The candidates: how each did on the validation split, which decided, and on the
    /// held-out set, which did not.
    pub fn validation_table(&self) -> Result<Table> {
        let r = &self.results;
        let candidates: Vec<_> = r.candidates().collect();
        let pct = |f: &dyn Fn(&TrainedRun) -> f64| -> Vec<f64> {
            candidates.iter().map(|c| 100.0 * f(c)).collect()
        };
        let valid =
            |c: &TrainedRun, f: fn(&Evaluation) -> f64| c.validation.as_ref().map_or(0.0, f);
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "setting".into(),
                candidates
                    .iter()
                    .map(|c| {
                        let mark = if c.setting == r.chosen {
                            " (chosen)"
                        } else {
                            ""
                        };
                        format!("{}{mark}", c.setting)
                    })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "steps".into(),
                candidates
                    .iter()
                    .map(|c| c.steps.len() as u64)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "final validation loss".into(),
                candidates
                    .iter()
                    .map(|c| {
                        let loss = c.epochs.last().and_then(|e| e.eval_loss);
                        loss.map_or("-".into(), |l| format!("{l:.3}"))
                    })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "validation fields right %".into(),
                pct(&|c| valid(c, |e| e.fields)),
            ),
            Column::new(
                "validation all right %".into(),
                pct(&|c| valid(c, |e| e.correct)),
            ),
            Column::new("held-out all right %".into(), pct(&|c| c.heldout.correct)),
        ])?;
        Ok(Table::new(
            format!(
                "The candidates (seed {}): chosen on {} validation sentences",
                r.seeds.first().copied().unwrap_or_default(),
                r.data.validation_examples
            ),
            frame,
        )
        .with_decimals(1)
        .with_note("The held-out column is shown, not used: the choice reads validation only."))
    }

    /// Held-out accuracy against the prompt's length: the few-shot baselines and the adapter.
    pub fn prompt_chart(&self) -> Result<Chart> {
        let mut chart = ScatterChart::new(
            "Held-out sentences all right, against the prompt's length",
            "prompt tokens per question",
            "all right %",
        );
        for b in &self.results.baselines {
            chart = chart.point(b.label.clone(), b.mean_prompt_tokens, 100.0 * b.correct);
        }
        let chosen = self.results.chosen_runs();
        let heldout: Vec<&Evaluation> = chosen.iter().map(|c| &c.heldout).collect();
        let (mean, lo, hi) = spread(
            &heldout
                .iter()
                .map(|e| 100.0 * e.correct)
                .collect::<Vec<_>>(),
        );
        let tokens = heldout.first().map_or(0.0, |e| e.mean_prompt_tokens);
        chart = chart.point(
            format!(
                "LoRA adapter, no examples (mean of {} seeds, {lo:.0}–{hi:.0}%)",
                heldout.len()
            ),
            tokens,
            mean,
        );
        chart.render()
    }

    /// The chosen setting's first run: its loss curve.
    pub fn loss_chart(&self) -> Result<Chart> {
        let run = self
            .results
            .chosen_runs()
            .into_iter()
            .next()
            .context("the study trained no run with its chosen setting")?;
        loss_chart(
            &run.steps,
            &run.epochs,
            &format!(
                "LoRA on {}, {}, seed {}: loss while training",
                file_name(&self.results.base_model),
                run.setting,
                run.seed
            ),
        )
    }

    /// The first held-out sentence of each kind in `tags`, answered by the instruction alone,
    /// the most examples in the prompt, and the chosen adapter's first seed.
    pub fn examples_table(&self, tags: &[&str]) -> Result<Table> {
        let r = &self.results;
        let mut answerers: Vec<&Evaluation> = Vec::new();
        answerers.extend(r.baselines.first());
        answerers.extend(
            r.baselines
                .iter()
                .max_by(|a, b| a.mean_prompt_tokens.total_cmp(&b.mean_prompt_tokens)),
        );
        answerers.extend(r.chosen_runs().first().map(|c| &c.heldout));
        answerers.dedup_by(|a, b| a.label == b.label);
        let first = answerers
            .first()
            .context("the study answered no questions")?;
        let picked: Vec<(&str, usize)> = tags
            .iter()
            .filter_map(|&t| {
                let i = first
                    .samples
                    .iter()
                    .position(|s| s.tags.iter().any(|x| x == t))?;
                Some((t, i))
            })
            .collect();
        let mut columns = vec![
            Column::new(
                "kind".into(),
                picked
                    .iter()
                    .map(|(t, _)| t.to_string())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "sentence".into(),
                picked
                    .iter()
                    .map(|&(_, i)| {
                        first.samples[i]
                            .question
                            .lines()
                            .last()
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect::<Vec<_>>(),
            ),
        ];
        for a in &answerers {
            columns.push(Column::new(
                a.label.as_str().into(),
                picked
                    .iter()
                    .map(|&(_, i)| {
                        let s = &a.samples[i];
                        let mark = if s.score.correct { "✓" } else { "✗" };
                        let answer = s.answer.split_whitespace().collect::<Vec<_>>().join(" ");
                        format!("{mark} {}", shortened(&answer, 160))
                    })
                    .collect::<Vec<_>>(),
            ));
        }
        Ok(Table::new(
            "One held-out sentence of each kind, answered three ways",
            DataFrame::new_infer_height(columns)?,
        ))
    }

    /// What the study cost: time, speed and memory, with the machine.
    pub fn cost_table(&self) -> Result<Table> {
        let r = &self.results;
        let s = &r.shared;
        let isa = self.instruction_set.as_deref().unwrap_or("unrecorded");
        let chosen = r.chosen_runs();
        let (train_s, train_lo, train_hi) =
            spread(&chosen.iter().map(|c| c.train_seconds).collect::<Vec<_>>());
        let (speed, _, _) = spread(
            &chosen
                .iter()
                .map(|c| c.train_tokens_per_s)
                .collect::<Vec<_>>(),
        );
        let steps = chosen.first().map_or(0, |c| c.steps.len());
        let rows: Vec<(&str, String)> = vec![
            ("base model", file_name(&r.base_model).to_string()),
            (
                "data",
                format!(
                    "{} training, {} validation, {} held-out sentences",
                    r.data.train_examples, r.data.validation_examples, r.data.heldout_examples
                ),
            ),
            (
                "chosen schedule",
                format!(
                    "{} epochs, batch {}, {}, {steps} steps",
                    s.epochs, s.batch_size, r.chosen
                ),
            ),
            ("adapter", s.parameters.clone()),
            (
                "training time per run (the optimizer steps)",
                format!("{train_s:.0} s (mean; {train_lo:.0}–{train_hi:.0} s over seeds)"),
            ),
            ("training speed", format!("{speed:.0} tokens/s")),
            (
                "the whole study (every run, every answer)",
                format!("{:.0} min", r.wall_s / 60.0),
            ),
            (
                "peak memory (resident)",
                r.peak_rss_bytes
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
        Ok(Table::new("What the study cost", frame))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The Short's study in `results/`, as committed.
    fn committed_study() -> serde_json::Value {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let path = sorted_files(&results, "finetune-study-", ".json")
            .unwrap()
            .pop()
            .expect("results/ holds the Short's study");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The Short's study is picked by its data file and model, not by being the newest.
    #[test]
    fn the_short_study_is_chosen_by_data_and_model() {
        let template = committed_study();
        let dir = tempfile::tempdir().unwrap();
        let write = |stamp: &str, change: &dyn Fn(&mut serde_json::Value)| {
            let mut study = template.clone();
            study["timestamp"] = stamp.into();
            change(&mut study);
            std::fs::write(
                dir.path().join(format!("finetune-study-{stamp}.json")),
                study.to_string(),
            )
            .unwrap();
        };
        write("2026-12-01T00-00-00Z", &|_| {});
        write("2026-12-02T00-00-00Z", &|s| {
            s["data"]["train"] = "toy.jsonl".into();
        });
        write("2026-12-03T00-00-00Z", &|s| {
            s["base_model"] = "/m/gemma-3-270m-q4_k_m.gguf".into();
        });
        // A `finetune` run's file shares the prefix "finetune-" but is not read.
        std::fs::write(dir.path().join("finetune-2026-12-05T00-00-00Z.json"), "{}").unwrap();
        let study = short_study(dir.path()).unwrap().unwrap();
        assert_eq!(study.timestamp, "2026-12-01T00-00-00Z");
    }

    /// Every table and chart of the chapter renders from the committed study, with one row per
    /// baseline, the demo's setting when it was not chosen, and the chosen setting's seeds.
    #[test]
    fn the_studys_tables_and_charts_render() {
        let study: ShortStudy = serde_json::from_value(committed_study()).unwrap();
        let r = &study.results;
        let demo_row = usize::from(r.chosen != DEMO_SETTING);
        let results = study.results_table().unwrap();
        assert_eq!(results.rows().len(), r.baselines.len() + demo_row + 1);
        assert_eq!(r.chosen_runs().len(), r.seeds.len());
        assert_eq!(
            study.validation_table().unwrap().rows().len(),
            r.candidates().count()
        );
        let by_kind = study.by_kind_table().unwrap();
        assert!(by_kind
            .header()
            .iter()
            .any(|h| h.starts_with("unseen template")));
        let examples = study.examples_table(&SHORT_EXAMPLE_KINDS).unwrap();
        assert_eq!(examples.rows().len(), SHORT_EXAMPLE_KINDS.len());
        study.prompt_chart().unwrap();
        study.loss_chart().unwrap();
        study.cost_table().unwrap();
    }
}
