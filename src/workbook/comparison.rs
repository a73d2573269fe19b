//! Reading `billion-llm bench` results back: the comparison table, its charts, and
//! `docs/COMPARISON.md`. Measured numbers come only from result files; published ones only from
//! [`crate::workbook::published`], in a separate, labelled section.

use crate::eval::bench::{BenchHardware, BenchReport, ModelResult};
use crate::hub::zoo;
use crate::report::{BarChart, Chart, ScatterChart, Table};
use crate::workbook::scale;
use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One model's latest measured result.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A short name: the zoo name, or the file name of a path, with the weights and format.
    pub name: String,
    pub file: PathBuf,
    pub timestamp: String,
    pub hardware: BenchHardware,
    pub result: ModelResult,
}

/// Complete `bench-*.json` files in `dir` (a `.partial.json` is a run still going or cut
/// short, and is ignored), oldest first.
pub fn load_runs(dir: &Path) -> Result<Vec<(PathBuf, BenchReport)>> {
    let mut runs = Vec::new();
    if !dir.is_dir() {
        return Ok(runs);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("bench-") && name.ends_with(".json"))
            || name.ends_with(".partial.json")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: BenchReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench result", path.display()))?;
        if report.complete {
            runs.push((path, report));
        }
    }
    runs.sort_by(|a, b| a.1.timestamp.cmp(&b.1.timestamp));
    Ok(runs)
}

fn display_name(source: &str, r: &ModelResult) -> String {
    let base = zoo::lookup(source).map_or_else(
        || {
            Path::new(source)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or(source)
                .trim_end_matches(".gguf")
                .to_string()
        },
        |m| m.name.to_string(),
    );
    let mut name = base;
    if let Some(q) = &r.quantization {
        name.push_str(&format!(" {q}"));
    }
    if r.weights == "random" {
        name.push_str(" (random weights)");
    }
    name
}

/// The latest result of each model (same name, weights and format), in name order.
pub fn latest_entries(runs: &[(PathBuf, BenchReport)]) -> Vec<Entry> {
    let mut by_name: std::collections::BTreeMap<String, Entry> = Default::default();
    for (path, report) in runs {
        for (source, result) in &report.models {
            let name = display_name(source, result);
            by_name.insert(
                name.clone(),
                Entry {
                    name,
                    file: path.clone(),
                    timestamp: report.timestamp.clone(),
                    hardware: report.hardware.clone(),
                    result: result.clone(),
                },
            );
        }
    }
    by_name.into_values().collect()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))
}

/// The headline table: quality, speed and memory of every measured model.
pub fn measured_table(entries: &[Entry]) -> Result<Table> {
    let col = |name: &str, f: &dyn Fn(&Entry) -> String| {
        Column::new(name.into(), entries.iter().map(f).collect::<Vec<_>>())
    };
    let df = DataFrame::new_infer_height(vec![
        col("model", &|e| e.name.clone()),
        col("MMLU 5-shot % (95% CI)", &|e| {
            e.result.mmlu.as_ref().map_or("–".into(), |m| {
                format!(
                    "{:.1} ({:.1}–{:.1}), {} q",
                    100.0 * m.summary.micro.accuracy,
                    100.0 * m.summary.micro.ci95_low,
                    100.0 * m.summary.micro.ci95_high,
                    m.summary.micro.total
                )
            })
        }),
        col("HumanEval pass@1 %", &|e| {
            e.result.humaneval.as_ref().map_or("–".into(), |h| {
                // A run whose sandbox was not fully isolated is flagged where its number is.
                let flag = if h.isolation.is_full() { "" } else { " ⚠" };
                format!(
                    "{} ({}/{}){flag}",
                    pct(Some(h.pass_at_1)),
                    h.passed,
                    h.problems
                )
            })
        }),
        col("prefill tok/s", &|e| {
            let m = &e.result.speed.prefill_tokens_per_s;
            format!("{:.1} ± {:.1}", m.mean, m.std)
        }),
        col("decode tok/s", &|e| {
            let m = &e.result.speed.decode_tokens_per_s;
            format!("{:.1} ± {:.1}", m.mean, m.std)
        }),
        col("weights GB", &|e| {
            format!("{:.2}", e.result.memory.weights_bytes as f64 / 1e9)
        }),
        col("peak memory GB", &|e| {
            format!("{:.2}", e.result.peak_memory_gb)
        }),
        col("machine", &|e| {
            format!("{}, {} threads", e.hardware.cpu, e.hardware.threads)
        }),
        col("result file", &|e| {
            e.file
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned())
        }),
    ])?;
    Ok(Table::new("Measured by billion-llm bench", df).with_note(
        "MMLU: lm-eval's 5-shot prompt, prediction by log-probability of \" A\"..\" D\", micro accuracy \
         with a Wilson 95% interval. HumanEval: greedy completion, unit tests in a sandbox (⚠: it was not \
         fully isolated; the result file's `isolation` says what held). Speed: \
         mean ± std over timed runs after a warm-up, prefill and decode apart. Peak memory: the \
         process's peak resident set while loading and running the model (on a GPU, the \
         device's peak).",
    ))
}

/// MMLU accuracy per subject, one bar per measured model.
pub fn mmlu_subject_chart(entries: &[Entry]) -> Result<Option<Chart>> {
    let with: Vec<&Entry> = entries.iter().filter(|e| e.result.mmlu.is_some()).collect();
    if with.is_empty() {
        return Ok(None);
    }
    let subjects: BTreeSet<String> = with
        .iter()
        .flat_map(|e| {
            e.result
                .mmlu
                .as_ref()
                .unwrap()
                .summary
                .per_subject
                .keys()
                .cloned()
        })
        .collect();
    let labels: Vec<String> = subjects.iter().map(|s| short_subject(s)).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut chart = BarChart::new(
        "MMLU accuracy per subject (measured)",
        "accuracy %",
        &labels,
    )
    .format(|v| format!("{v:.0}"))
    .reference_line("chance, 25%", 25.0);
    for e in with {
        let per = &e.result.mmlu.as_ref().unwrap().summary.per_subject;
        chart = chart.series(
            e.name.clone(),
            subjects
                .iter()
                .map(|s| per.get(s).map_or(0.0, |a| 100.0 * a.accuracy))
                .collect(),
        );
    }
    chart.render().map(Some)
}

/// Subject names short enough for an axis label.
fn short_subject(subject: &str) -> String {
    subject
        .replace("high_school_", "HS ")
        .replace("elementary_", "elem. ")
        .replace("professional_", "prof. ")
        .replace('_', " ")
}

/// Decode speed against peak memory.
pub fn speed_memory_chart(entries: &[Entry]) -> Result<Chart> {
    let mut chart = ScatterChart::new(
        "Decode speed against peak memory (measured)",
        "peak memory (GB)",
        "decode tokens/s",
    );
    for e in entries {
        chart = chart.point(
            e.name.clone(),
            e.result.peak_memory_gb,
            e.result.tokens_per_second,
        );
    }
    chart.render()
}

/// "When to use each model", from the measured numbers only.
pub fn advice(entries: &[Entry]) -> Vec<String> {
    let mut lines = Vec::new();
    let trained: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.result.weights == "pretrained")
        .collect();
    let mut by_mmlu: Vec<&Entry> = trained
        .iter()
        .copied()
        .filter(|e| e.result.mmlu.is_some())
        .collect();
    by_mmlu.sort_by(|a, b| {
        let acc = |e: &Entry| e.result.mmlu.as_ref().unwrap().summary.micro.accuracy;
        acc(b).total_cmp(&acc(a))
    });
    if let Some(best) = by_mmlu.first() {
        let m = &best.result.mmlu.as_ref().unwrap().summary.micro;
        let claim = if by_mmlu.len() == 1 {
            "is the only model with an MMLU score here"
        } else {
            "scores highest on MMLU here"
        };
        let mut line = format!(
            "**Knowledge questions:** {} {claim} ({:.1}%, 95% CI {:.1}–{:.1}).",
            best.name,
            100.0 * m.accuracy,
            100.0 * m.ci95_low,
            100.0 * m.ci95_high
        );
        if let Some(next) = by_mmlu.get(1) {
            let n = &next.result.mmlu.as_ref().unwrap().summary.micro;
            if n.ci95_high >= m.ci95_low {
                line.push_str(&format!(
                    " Its interval overlaps {}'s ({:.1}%): the difference is not established.",
                    next.name,
                    100.0 * n.accuracy
                ));
            }
        }
        if m.ci95_low <= 0.25 {
            line.push_str(" Its interval includes chance (25%): the result shows no knowledge beyond guessing.");
        } else if m.accuracy < 0.30 {
            line.push_str(" That is only just above chance (25%): do not rely on it for facts.");
        }
        lines.push(line);
    }
    let coders: Vec<&Entry> = trained
        .iter()
        .copied()
        .filter(|e| e.result.humaneval.is_some())
        .collect();
    if let Some(best) = coders.iter().max_by(|a, b| {
        let p = |e: &Entry| e.result.humaneval.as_ref().unwrap().pass_at_1;
        p(a).total_cmp(&p(b))
    }) {
        let h = best.result.humaneval.as_ref().unwrap();
        lines.push(if h.passed == 0 {
            format!(
                "**Code:** none of the measured models passed a HumanEval problem ({} tried): \
                 use a larger or code-trained model for code.",
                h.problems
            )
        } else {
            format!(
                "**Code:** {} passes the most HumanEval problems ({}/{}).",
                best.name, h.passed, h.problems
            )
        });
    }
    if let Some(fast) = entries.iter().max_by(|a, b| {
        a.result
            .tokens_per_second
            .total_cmp(&b.result.tokens_per_second)
    }) {
        lines.push(format!(
            "**Speed:** {} decodes fastest on {} ({:.1} tokens/s).",
            fast.name, fast.hardware.cpu, fast.result.tokens_per_second
        ));
    }
    if let Some(small) = entries
        .iter()
        .min_by(|a, b| a.result.peak_memory_gb.total_cmp(&b.result.peak_memory_gb))
    {
        lines.push(format!(
            "**Small devices:** {} needs the least memory ({:.2} GB at peak).",
            small.name, small.result.peak_memory_gb
        ));
    }
    for m in zoo::compared() {
        if trained.iter().any(|e| e.name.starts_with(m.name)) {
            continue;
        }
        // A random-weights run still tells what the architecture costs: the trained model
        // does the same arithmetic on the same shapes.
        let cost = entries
            .iter()
            .filter(|e| e.name.starts_with(m.name))
            .map(|e| {
                format!(
                    "{:.1} tokens/s decode and {:.2} GB at peak as {} on {} (the trained \
                     model decodes as fast: same shapes, same arithmetic)",
                    e.result.tokens_per_second, e.result.peak_memory_gb, e.name, e.hardware.cpu
                )
            })
            .collect::<Vec<_>>();
        let cost = if cost.is_empty() {
            String::new()
        } else {
            format!(" {}.", cost.join("; "))
        };
        lines.push(format!(
            "{}:{cost} No quality measurement yet: run `billion-llm download {}` then \
             `billion-llm bench --model {}`.",
            m.name, m.alias, m.alias
        ));
    }
    lines
}

/// The whole of `docs/COMPARISON.md`.
pub fn comparison_markdown(entries: &[Entry]) -> Result<String> {
    let mut md = String::from(
        "# Comparison\n\n<!-- Generated by `billion-llm book-assets` from results/bench-*.json and \
         src/workbook/published.rs. Do not edit: run the benchmarks and regenerate. -->\n\n",
    );
    md.push_str("## Measured here\n\n");
    if entries.is_empty() {
        md.push_str("No benchmark results yet: run `billion-llm bench`.\n\n");
    } else {
        md.push_str(&measured_table(entries)?.to_markdown());
        md.push('\n');
    }
    md.push_str("## When to use each model\n\nFrom the measured numbers above only.\n\n");
    for line in advice(entries) {
        md.push_str(&format!("- {line}\n"));
    }
    let partial: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            let i = e.result.humaneval.as_ref()?.isolation;
            let file = e.file.file_name()?.to_string_lossy();
            (!i.is_full()).then(|| {
                format!(
                    "- {} ({file}): sandbox `{:?}` lacked {}",
                    e.name,
                    i.mechanism,
                    i.missing().join(", ")
                )
            })
        })
        .collect();
    if !partial.is_empty() {
        md.push_str(
            "\n**⚠ HumanEval runs without full isolation.** Their model-written code ran with \
             less confinement than the sandbox gives today (namespaces or Landlock: read-only \
             files, hidden homes, private /tmp, no network, confined signals):\n\n",
        );
        md.push_str(&partial.join("\n"));
        md.push('\n');
    }
    md.push_str("\n## Published (not measured here)\n\n");
    md.push_str(&scale::published_scores_table()?.to_markdown());
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_labels_are_short() {
        assert_eq!(short_subject("high_school_physics"), "HS physics");
        assert_eq!(short_subject("us_foreign_policy"), "us foreign policy");
    }

    /// An entry with the given decode speed and peak memory, and an MMLU score when `mmlu`
    /// is `Some((correct, total))`.
    fn entry(
        source: &str,
        weights: &str,
        tok_s: f64,
        peak_gb: f64,
        mmlu: Option<(usize, usize)>,
    ) -> Entry {
        let speed = crate::eval::speed::Measured::new(vec![tok_s]);
        let mmlu = mmlu.map(|(correct, total)| {
            let acc = crate::eval::mmlu::Accuracy::new(correct, total);
            serde_json::json!({
                "source": "test", "shots_from_test_split": false, "shots": 5,
                "summary": {"per_subject": {}, "micro": acc, "macro_accuracy": acc.accuracy,
                            "macro_ci95": [acc.ci95_low, acc.ci95_high]},
                "prefill_tokens": 0, "prefill_tokens_saved": 0, "truncated_prompts": 0,
                "seconds": 1.0, "seconds_per_question": 1.0, "questions": []
            })
        });
        let result = serde_json::json!({
            "mmlu_accuracy": null, "humaneval_pass_rate": null,
            "tokens_per_second": tok_s, "peak_memory_gb": peak_gb,
            "source": source, "weights": weights, "dtype": "f32", "quantization": "q4_0",
            "load_seconds": 1.0,
            "memory": {"weights_bytes": 1, "peak_rss_bytes": 1},
            "speed": {"prompt_tokens": 64, "new_tokens": 128, "warmup": 1,
                      "prefill_tokens_per_s": speed, "decode_tokens_per_s": speed},
            "mmlu": mmlu, "humaneval": null
        });
        let result: ModelResult = serde_json::from_value(result).unwrap();
        Entry {
            name: display_name(source, &result),
            file: PathBuf::from("bench-test.json"),
            timestamp: "2026-01-01T00:00:00Z".into(),
            hardware: BenchHardware {
                device: "Cpu".into(),
                gpu_name: None,
                cpu: "Test CPU".into(),
                cores: 2,
                threads: 2,
            },
            result,
        }
    }

    #[test]
    fn advice_follows_the_numbers_and_names_what_is_missing() {
        let entries = [
            entry(
                "/models/small.gguf",
                "pretrained",
                50.0,
                0.5,
                Some((2800, 10_000)),
            ),
            entry("tinyllama", "random", 20.0, 1.25, None),
        ];
        let text = advice(&entries).join("\n");
        assert!(
            text.contains("small q4_0 is the only model with an MMLU score"),
            "{text}"
        );
        assert!(text.contains("only just above chance"), "{text}");
        assert!(
            text.contains("TinyLlama 1.1B: 20.0 tokens/s decode and 1.25 GB at peak"),
            "{text}"
        );
        assert!(text.contains("billion-llm download pythia-1b"), "{text}");

        let coin_flip = [entry("/m/a.gguf", "pretrained", 1.0, 1.0, Some((26, 100)))];
        assert!(advice(&coin_flip).join("\n").contains("includes chance"));
    }

    #[test]
    fn no_results_still_make_a_page() {
        let md = comparison_markdown(&[]).unwrap();
        assert!(md.contains("No benchmark results yet"));
        assert!(md.contains("Published (not measured here)"));
        assert!(md.contains("billion-llm download tinyllama"));
    }
}
