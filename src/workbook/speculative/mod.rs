//! Short 6, speculative decoding: what the measured grid on SmolLM2-135M shows (speedup by K,
//! acceptance by draft position, read from `results/speculative-bench-*.json`), what a 1B
//! draft for a 7B target would give on this machine (modelled from the step costs in
//! `results/speculative-costs-*.json`), and one decoding with the drafted tokens marked.

use super::sorted_files;
use crate::eval::results::Hardware;
use crate::hub::loader::LoadedModel;
use crate::model::generation::SamplingParams;
use crate::report::{escape_html, evcxr_print, BarChart, Chart, LineChart, Table};
use crate::speculative::{
    CostsRecord, Drafter, KSchedule, PromptLookup, SameRun, SpeculativeDecoder,
};
use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a bench run's summary holds (the token lists are left out of the combined file).
#[derive(Debug, Clone, Deserialize)]
pub struct BenchSummary {
    pub acceptance_rate: f64,
    pub tokens_per_round: f64,
    pub speedup: f64,
}

/// One run of `scripts/bench-speculative.sh`: a `billion-llm speculative` results file with
/// the task it was given.
#[derive(Debug, Clone, Deserialize)]
pub struct BenchRun {
    pub task: String,
    pub target: String,
    pub drafter: String,
    pub schedule: KSchedule,
    pub summary: BenchSummary,
    pub drafted_at: Vec<usize>,
    pub accepted_at: Vec<usize>,
    pub hardware: Hardware,
    pub instruction_set: String,
}

impl BenchRun {
    /// The drafter without its settings: "prompt lookup", "first 24 layers".
    pub fn drafter_name(&self) -> &str {
        let name = self.drafter.split(" (").next().unwrap_or(&self.drafter);
        name.trim_start_matches("the target's ")
    }

    fn fixed_k(&self) -> Option<usize> {
        match self.schedule {
            KSchedule::Fixed(k) => Some(k),
            KSchedule::Adaptive { .. } => None,
        }
    }

    /// The bar group of the speedup chart.
    fn k_category(&self) -> String {
        match self.fixed_k() {
            Some(k) => format!("K = {k}"),
            None => "adaptive K".to_string(),
        }
    }

    fn k_label(&self) -> String {
        match self.schedule {
            KSchedule::Fixed(k) => k.to_string(),
            KSchedule::Adaptive { start, max } => format!("adaptive ({start}, at most {max})"),
        }
    }
}

/// A `results/speculative-bench-*.json` file.
#[derive(Debug, Clone, Deserialize)]
pub struct SpeculativeBench {
    pub runs: Vec<BenchRun>,
    #[serde(skip)]
    pub file: PathBuf,
}

/// The newest speculative-decoding grid in `results`, if any.
pub fn latest_bench(results: &Path) -> Result<Option<SpeculativeBench>> {
    let Some(path) = sorted_files(results, "speculative-bench-", ".json")?.pop() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut bench: SpeculativeBench = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a speculative-decoding grid: rerun scripts/bench-speculative.sh",
            path.display()
        )
    })?;
    if bench.runs.is_empty() {
        anyhow::bail!(
            "{} holds no runs: rerun scripts/bench-speculative.sh",
            path.display()
        );
    }
    bench.file = path;
    Ok(Some(bench))
}

/// The newest step-cost measurement in `results`, if any.
pub fn latest_costs(results: &Path) -> Result<Option<CostsRecord>> {
    let Some(path) = sorted_files(results, "speculative-costs-", ".json")?.pop() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let record = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a speculative-costs file: rerun billion-llm speculative-costs",
            path.display()
        )
    })?;
    Ok(Some(record))
}

/// Names in the order the file first gives them.
fn in_order_of_appearance<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

impl SpeculativeBench {
    /// The target's file name without `.gguf`.
    pub fn model_name(&self) -> String {
        let target = self.runs.first().map_or("", |r| r.target.as_str());
        Path::new(target)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or(target)
            .trim_end_matches(".gguf")
            .to_string()
    }

    fn machine(&self) -> String {
        self.runs.first().map_or_else(String::new, |r| {
            format!(
                "{}, {}, {} threads",
                r.hardware.cpu, r.instruction_set, r.hardware.threads
            )
        })
    }

    /// Speedup over plain decoding per K (fixed, then adaptive), one bar per drafter and
    /// task. Each bar is a same-run ratio.
    pub fn speedup_chart(&self) -> Result<Chart> {
        let mut by_k: Vec<&BenchRun> = self.runs.iter().collect();
        by_k.sort_by_key(|r| r.fixed_k().unwrap_or(usize::MAX));
        let mut categories: Vec<String> = by_k.iter().map(|r| r.k_category()).collect();
        categories.dedup();
        let category_names: Vec<&str> = categories.iter().map(String::as_str).collect();
        let mut chart = BarChart::new(
            format!("{}: speedup over plain decoding", self.model_name()),
            "speedup (same-run ratio)",
            &category_names,
        )
        .format(|v| format!("{v:.1}"))
        .reference_line("plain decoding", 1.0);
        let mut top: f64 = 1.0;
        for drafter in in_order_of_appearance(self.runs.iter().map(BenchRun::drafter_name)) {
            for task in in_order_of_appearance(self.runs.iter().map(|r| r.task.as_str())) {
                let runs: Vec<&BenchRun> = self
                    .runs
                    .iter()
                    .filter(|r| r.drafter_name() == drafter && r.task == task)
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let values: Vec<f64> = categories
                    .iter()
                    .map(|c| {
                        runs.iter()
                            .find(|r| r.k_category() == *c)
                            .map_or(0.0, |r| r.summary.speedup)
                    })
                    .collect();
                top = values.iter().copied().fold(top, f64::max);
                chart = chart.series(format!("{drafter}, {task}"), values);
            }
        }
        // Head room above the tallest bar keeps the legend off the bars.
        chart.y_max(1.6 * top).render()
    }

    /// For one drafter (its name, as in [`BenchRun::drafter_name`]): of the rounds that
    /// drafted a token at position i, the share whose drafts were accepted up to and
    /// including i, per task, pooled over every K of the grid.
    pub fn acceptance_by_position_chart(&self, drafter: &str) -> Result<Chart> {
        let mut chart = LineChart::new(
            format!("{}: acceptance by draft position", capitalized(drafter)),
            "draft position in the round",
            "accepted (% of rounds drafting there)",
        )
        .y_from_zero();
        for task in in_order_of_appearance(self.runs.iter().map(|r| r.task.as_str())) {
            let mut drafted: Vec<usize> = Vec::new();
            let mut accepted: Vec<usize> = Vec::new();
            for r in self
                .runs
                .iter()
                .filter(|r| r.drafter_name() == drafter && r.task == task)
            {
                for (i, (&d, &a)) in r.drafted_at.iter().zip(&r.accepted_at).enumerate() {
                    if drafted.len() <= i {
                        drafted.push(0);
                        accepted.push(0);
                    }
                    drafted[i] += d;
                    accepted[i] += a;
                }
            }
            let points: Vec<(f64, f64)> = drafted
                .iter()
                .zip(&accepted)
                .enumerate()
                .filter(|(_, (&d, _))| d > 0)
                .map(|(i, (&d, &a))| ((i + 1) as f64, 100.0 * a as f64 / d as f64))
                .collect();
            if !points.is_empty() {
                chart = chart.curve(task, points);
            }
        }
        chart.render()
    }

    /// Every run of the grid.
    pub fn table(&self) -> Result<Table> {
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "task".into(),
                self.runs.iter().map(|r| r.task.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "drafter".into(),
                self.runs
                    .iter()
                    .map(|r| r.drafter.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "K".into(),
                self.runs.iter().map(BenchRun::k_label).collect::<Vec<_>>(),
            ),
            Column::new(
                "acceptance %".into(),
                self.runs
                    .iter()
                    .map(|r| 100.0 * r.summary.acceptance_rate)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "tokens per round".into(),
                self.runs
                    .iter()
                    .map(|r| r.summary.tokens_per_round)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "speedup".into(),
                self.runs
                    .iter()
                    .map(|r| r.summary.speedup)
                    .collect::<Vec<_>>(),
            ),
        ])?;
        Ok(Table::new(
            format!("Speculative decoding on {}, greedy", self.model_name()),
            frame,
        )
        .with_note(format!(
            "Speedup: decode speed with the drafter over plain decoding of the same prompt in the \
             same process (greedy, so both produce the same tokens). Measured on {}; {}.",
            self.machine(),
            self.file
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        )))
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The acceptance rates the modelled curves are drawn at: 0 to 1 in steps of 0.02.
fn alphas() -> Vec<f64> {
    (0..=50).map(|i| i as f64 / 50.0).collect()
}

/// The modelled speedup against the acceptance rate, one curve per timed K, from measured
/// costs (c and the measured v of each K).
pub fn modelled_speedup_chart(record: &CostsRecord) -> Result<Chart> {
    let mut chart = LineChart::new(
        format!(
            "Modelled: {} drafting for {}",
            record.draft.name, record.target.name
        ),
        "acceptance rate α",
        "speedup (modelled from measured costs)",
    )
    .y_from_zero();
    let alphas = alphas();
    let mut top: f64 = 1.0;
    for v in &record.costs.verify {
        let points: Vec<(f64, f64)> = alphas
            .iter()
            .filter_map(|&a| Some((a, record.costs.modelled_speedup(a, v.k)?)))
            .collect();
        top = points.iter().map(|p| p.1).fold(top, f64::max);
        chart = chart.curve(format!("modelled, K={}", v.k), points);
    }
    // Plain decoding is speedup 1 at every α. Head room above the curves, which rise to the
    // right, keeps the legend off them.
    chart
        .curve("plain decoding", alphas.iter().map(|&a| (a, 1.0)).collect())
        .y_max(1.5 * top)
        .render()
}

/// The measured step costs per K, with what they imply: the break-even acceptance rate and
/// the best case (every draft accepted).
pub fn costs_table(record: &CostsRecord) -> Result<Table> {
    let c = &record.costs;
    let verify = &c.verify;
    let frame = DataFrame::new_infer_height(vec![
        Column::new(
            "K".into(),
            verify.iter().map(|v| v.k as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "verify K+1 tokens (ms)".into(),
            verify
                .iter()
                .map(|v| 1e3 * v.seconds.median)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "v (target steps)".into(),
            verify.iter().map(|v| v.v).collect::<Vec<_>>(),
        ),
        Column::new(
            "round K·c + v (target steps)".into(),
            verify
                .iter()
                .map(|v| v.k as f64 * c.c + v.v)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "break-even α".into(),
            verify
                .iter()
                .map(|v| {
                    c.break_even_acceptance(v.k)
                        .map_or_else(|| "none".to_string(), |a| format!("{a:.2}"))
                })
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "speedup at α = 1".into(),
            verify
                .iter()
                .map(|v| c.modelled_speedup(1.0, v.k).unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        ),
    ])?;
    let gb = |b: f64| b / 1e9;
    let weights = |m: &crate::speculative::CostedModel| {
        format!(
            "{}{}",
            if m.weights == "random" {
                "random weights"
            } else {
                "trained weights"
            },
            m.quantization
                .as_deref()
                .map_or_else(String::new, |q| format!(", {q}"))
        )
    };
    Ok(Table::new(
        format!(
            "Measured costs: {} ({}) drafting for {} ({})",
            record.draft.name,
            weights(&record.draft),
            record.target.name,
            weights(&record.target)
        ),
        frame,
    )
    .with_note(format!(
        "Measured on {} ({}, {} threads; load average {}): one target token {:.1} ms, one draft \
         token {:.1} ms, so c = {:.3}; medians of {} rounds after {} warm-up, {} tokens of \
         context. The speedups are modelled from these costs with (1 − α^(K+1)) / ((1 − α)(K·c + \
         v)) and the measured v, not measured: random weights have no meaningful acceptance \
         rate. Peak resident set after loading the target: {:.1} GB (its weights in f32: {:.1} \
         GB).",
        record.header.hardware.cpu,
        record.header.instruction_set,
        record.threads,
        record
            .load_average
            .map_or_else(|| "not recorded".to_string(), |l| format!("{l:.1}")),
        1e3 * c.target_token_s.median,
        1e3 * c.draft_token_s.median,
        c.c,
        record.settings.runs,
        record.settings.warmup,
        record.settings.context_tokens,
        gb(record.target_load_peak_rss_bytes as f64),
        gb(record.target.f32_bytes as f64),
    ))
    .with_decimals(2))
}

/// One speculative generation with the accepted drafted tokens marked, and plain decoding of
/// the same prompt beside it.
#[derive(Debug, Clone)]
pub struct DraftedText {
    pub drafter: String,
    pub schedule: KSchedule,
    /// The answer's text in pieces, each with whether a drafted and accepted token produced it.
    pub pieces: Vec<(String, bool)>,
    pub run: SameRun,
}

impl DraftedText {
    /// The answer as HTML: accepted drafts on a green background, then the run's figures.
    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<div style=\"font-family: monospace; white-space: pre-wrap; line-height: 1.5\">",
        );
        for (piece, drafted) in &self.pieces {
            if *drafted {
                out.push_str(&format!(
                    "<span style=\"background: #b5e3ad\">{}</span>",
                    escape_html(piece)
                ));
            } else {
                out.push_str(&escape_html(piece));
            }
        }
        out.push_str("</div>\n");
        out.push_str(&format!("<p>{}</p>\n", escape_html(&self.summary())));
        out
    }

    /// The run's figures in one line.
    pub fn summary(&self) -> String {
        let s = &self.run.speculative;
        let k = match self.schedule {
            KSchedule::Fixed(k) => format!("K = {k}"),
            KSchedule::Adaptive { start, max } => format!("adaptive K from {start}, at most {max}"),
        };
        format!(
            "{}, {k}: {:.0}% of drafted tokens accepted (highlighted), {:.2} tokens per target \
             forward; {:.1} tok/s against {:.1} tok/s for plain decoding in the same run ({:.2}×)",
            self.drafter,
            100.0 * s.acceptance_rate(),
            s.tokens_per_round(),
            s.decode_tokens_per_s(),
            self.run.plain.decode_tokens_per_s(),
            self.run.speedup()
        )
    }

    /// Shows the coloured answer in a Jupyter notebook.
    pub fn evcxr_display(&self) {
        evcxr_print("text/html", &self.to_html());
    }
}

/// Sends `request` through the model's chat template and decodes the answer greedily with
/// prompt lookup (K drafts per round), then plainly, in the same run.
pub fn prompt_lookup_demo(
    model: &mut LoadedModel,
    request: &str,
    k: usize,
    max_new_tokens: usize,
) -> Result<DraftedText> {
    let prompt = model.chat_prompt(request)?;
    let mut stream = model.tokenizer()?.output_stream();
    let mut drafter = PromptLookup::default();
    let schedule = KSchedule::Fixed(k);
    let mut pieces: Vec<(String, bool)> = Vec::new();
    let run = SpeculativeDecoder {
        target: &mut model.model,
        drafter: &mut drafter,
        schedule,
        sampling: SamplingParams::default(),
    }
    .generate_beside_plain(&prompt, max_new_tokens, |token, drafted| {
        if let Some(piece) = stream.next_token(token)? {
            pieces.push((piece, drafted));
        }
        Ok(())
    })?;
    if let Some(rest) = stream.flush()? {
        pieces.push((rest, false));
    }
    Ok(DraftedText {
        drafter: drafter.describe(),
        schedule,
        pieces,
        run,
    })
}

#[cfg(test)]
mod tests;
