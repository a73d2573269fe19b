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
mod tests {
    use super::*;
    use crate::eval::results::RunHeader;
    use crate::eval::speed::Measured;
    use crate::speculative::{CostSettings, CostedModel, StepCosts, VerifyCost};

    fn run(task: &str, drafter: &str, schedule: &str, speedup: f64) -> String {
        format!(
            r#"{{"task": "{task}", "target": "/x/SmolLM2-135M-Instruct.Q4_1.gguf",
            "drafter": "{drafter}", "schedule": {schedule},
            "summary": {{"acceptance_rate": 0.5, "tokens_per_round": 1.5, "speedup": {speedup},
                "tokens_per_s": 60.0, "baseline_tokens_per_s": 50.0, "target_forwards": 9}},
            "drafted_at": [4, 2], "accepted_at": [3, 1], "rounds": 4,
            "hardware": {{"cpu": "Test CPU", "cores": 2, "threads": 2}},
            "instruction_set": "AVX2", "prompt_tokens": 10}}"#
        )
    }

    fn synthetic_bench() -> SpeculativeBench {
        let lookup = "prompt lookup (n-grams of 2 to 3)";
        let layers = "the target's first 24 layers";
        let runs = [
            run("edit", lookup, r#"{"fixed": 1}"#, 1.2),
            run("edit", lookup, r#"{"fixed": 2}"#, 1.5),
            run(
                "edit",
                lookup,
                r#"{"adaptive": {"start": 2, "max": 16}}"#,
                1.4,
            ),
            run("edit", layers, r#"{"fixed": 1}"#, 0.4),
            run("open", lookup, r#"{"fixed": 1}"#, 0.9),
        ];
        serde_json::from_str(&format!(r#"{{"runs": [{}]}}"#, runs.join(","))).unwrap()
    }

    #[test]
    fn bench_charts_and_table_come_from_the_runs() {
        let bench = synthetic_bench();
        assert_eq!(bench.runs[3].drafter_name(), "first 24 layers");
        let chart = bench.speedup_chart().unwrap();
        for label in [
            "prompt lookup, edit",
            "prompt lookup, open",
            "first 24 layers, edit",
            "plain decoding",
            "K = 1",
            "adaptive K",
        ] {
            assert!(chart.svg.contains(label), "{label}");
        }
        let acceptance = bench.acceptance_by_position_chart("prompt lookup").unwrap();
        assert!(acceptance.svg.contains("edit") && acceptance.svg.contains("open"));
        assert!(!acceptance.svg.contains("first 24 layers"));
        let table = bench.table().unwrap();
        let rows = table.rows();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[2],
            [
                "edit",
                "prompt lookup (n-grams of 2 to 3)",
                "adaptive (2, at most 16)",
                "50.00",
                "1.50",
                "1.40"
            ]
        );
        assert!(table.note.unwrap().contains("Test CPU, AVX2, 2 threads"));
    }

    fn synthetic_costs() -> CostsRecord {
        let m = |name: &str| CostedModel {
            model: name.to_string(),
            name: name.to_string(),
            parameters: 1,
            weights: "random".to_string(),
            quantization: Some("q4_0".to_string()),
            weight_bytes: 1,
            f32_bytes: 4,
            load_s: 1.0,
        };
        let s = Measured::new(vec![0.1]);
        CostsRecord {
            header: RunHeader {
                timestamp: "2026-11-24T00:00:00Z".to_string(),
                git_commit: None,
                hardware: Hardware {
                    cpu: "Test CPU".to_string(),
                    cores: 2,
                    threads: 2,
                },
                instruction_set: "AVX2".to_string(),
            },
            target: m("Big"),
            draft: m("Small"),
            settings: CostSettings::default(),
            threads: 2,
            costs: StepCosts {
                target_token_s: s.clone(),
                draft_token_s: s.clone(),
                c: 0.2,
                verify: [(1, 1.3), (4, 2.5)]
                    .map(|(k, v)| VerifyCost {
                        k,
                        seconds: s.clone(),
                        v,
                    })
                    .to_vec(),
            },
            target_load_peak_rss_bytes: 5_000_000_000,
            peak_rss_bytes: 6_000_000_000,
            load_average: Some(1.0),
        }
    }

    #[test]
    fn modelled_curves_start_at_one_round_of_cost() {
        let record = synthetic_costs();
        // At α = 0 every round yields one token and costs K·c + v target steps.
        for v in &record.costs.verify {
            let at_zero = record.costs.modelled_speedup(0.0, v.k).unwrap();
            assert!((at_zero - 1.0 / (v.k as f64 * 0.2 + v.v)).abs() < 1e-12);
        }
        let chart = modelled_speedup_chart(&record).unwrap();
        for label in ["modelled, K=1", "modelled, K=4", "Small drafting for Big"] {
            assert!(chart.svg.contains(label), "{label}");
        }
        let table = costs_table(&record).unwrap();
        assert_eq!(table.rows().len(), 2);
        let note = table.note.unwrap();
        assert!(
            note.contains("c = 0.200") && note.contains("5.0 GB"),
            "{note}"
        );
    }

    #[test]
    fn drafted_pieces_are_highlighted_and_escaped() {
        let run = SameRun {
            speculative: crate::speculative::SpeculativeOutput {
                tokens: vec![1, 2],
                from_draft: vec![false, true],
                prompt_tokens: 3,
                rounds: 1,
                drafted: 1,
                accepted: 1,
                target_forwards: 2,
                drafted_at: vec![1],
                accepted_at: vec![1],
                prefill_s: 0.1,
                decode_s: 0.1,
                stopped_at_eos: false,
            },
            plain: crate::model::generation::Generation {
                tokens: vec![1, 2],
                prompt_tokens: 3,
                prefill_s: 0.1,
                decode_s: 0.2,
                time_to_first_token_s: 0.1,
                stopped_at_eos: false,
                interrupted: false,
            },
        };
        let text = DraftedText {
            drafter: "prompt lookup".to_string(),
            schedule: KSchedule::Fixed(4),
            pieces: vec![("a<b".to_string(), false), (" c".to_string(), true)],
            run,
        };
        let html = text.to_html();
        assert!(html.contains("a&lt;b<span style=\"background: #b5e3ad\"> c</span>"));
        assert!(html.contains("100% of drafted tokens accepted"));
        assert!(html.contains("(2.00×)"), "{html}");
    }
}
