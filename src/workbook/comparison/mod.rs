//! Reading `billion-llm bench` results back: the comparison table, its charts, and
//! `docs/COMPARISON.md`. Measured numbers come only from result files; published ones only from
//! [`crate::workbook::published`], in a separate, labelled section.
//!
//! The Short's rows come from the run it describes ([`short_entries`]): the two real checkpoints
//! benchmarked side by side in one run, chosen by its data and models, never by date alone; the
//! four 1B architectures, which run here with random weights, add their speed and memory.
//! Elsewhere a model's row can combine its latest run of each measurement
//! ([`latest_entries`]): a HumanEval-only run (say, in chat format) does not hide the MMLU score
//! of an earlier run, and HumanEval is kept per setting (format and decoding), because a chat
//! model's score depends on the format as much as on its code.

use crate::eval::bench::{
    BenchHardware, BenchReport, HumanEvalResult, MmluResult, ModelResult, SpeedResult,
};
use crate::eval::mmlu::{paired_difference, DEFAULT_SUBJECTS};
use crate::hub::assets::{GEMMA3_GGUF, SMOLLM2_GGUF};
use crate::hub::zoo;
use crate::report::{BarChart, Chart, ScatterChart, Table};
use crate::workbook::scale;
use anyhow::{Context, Result};
use polars::prelude::{Column, DataFrame};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A measurement and the results file it was read from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub file: PathBuf,
}

/// One model's latest measurements.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A short name: the zoo name, or the file name of a path, with the weights and format.
    pub name: String,
    /// The model's latest run: its speed, memory and machine.
    pub file: PathBuf,
    pub timestamp: String,
    pub hardware: BenchHardware,
    /// The quantized kernels the run used (`AVX2`, `AVX-512 VNNI`; empty in files written before
    /// it was recorded).
    pub instruction_set: String,
    /// The latest run's result, its `mmlu` and `humaneval` moved into the fields below.
    pub result: ModelResult,
    /// From the latest run that scored MMLU.
    pub mmlu: Option<Sourced<MmluResult>>,
    /// The latest HumanEval result of each setting (format and decoding), by setting name.
    pub humaneval: Vec<Sourced<HumanEvalResult>>,
    /// Where the speed in `result` was re-measured, when not in `file` (see [`short_entries`]).
    pub speed_file: Option<PathBuf>,
}

impl Entry {
    /// The CPU, threads and kernels its speed was measured with.
    pub fn machine(&self) -> String {
        let kernels = if self.instruction_set.is_empty() {
            String::new()
        } else {
            format!(", {} kernels", self.instruction_set)
        };
        format!(
            "{}, {} threads{kernels}",
            self.hardware.cpu, self.hardware.threads
        )
    }

    /// The names of the results files the entry's numbers come from, the latest run first.
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<&PathBuf> = vec![&self.file];
        files.extend(self.speed_file.iter());
        files.extend(self.mmlu.iter().map(|m| &m.file));
        files.extend(self.humaneval.iter().map(|h| &h.file));
        let mut names: Vec<String> = Vec::new();
        for f in files {
            let name = f
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// Complete `bench-*.json` files in `dir` (a `.partial.json` is a run still going or cut
/// short, and is ignored), oldest first.
pub fn load_runs(dir: &Path) -> Result<Vec<(PathBuf, BenchReport)>> {
    let mut runs = Vec::new();
    for path in super::sorted_files(dir, "bench-", ".json")? {
        if path.to_string_lossy().ends_with(".partial.json") {
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
    runs.sort_by(|a, b| a.1.header.timestamp.cmp(&b.1.header.timestamp));
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

/// Each model's (same name, weights and format) latest measurements, in name order, from runs
/// ordered oldest first: speed and memory from its latest run, MMLU from the latest run that
/// scored it, HumanEval from the latest run of each setting.
pub fn latest_entries(runs: &[(PathBuf, BenchReport)]) -> Vec<Entry> {
    let mut by_name: BTreeMap<String, (Entry, BTreeMap<String, Sourced<HumanEvalResult>>)> =
        BTreeMap::new();
    for (path, report) in runs {
        for (source, result) in &report.models {
            let name = display_name(source, result);
            let mut result = result.clone();
            let mmlu = result.mmlu.take();
            let humaneval = result.humaneval.take();
            let (entry, by_setting) = by_name.entry(name.clone()).or_insert_with(|| {
                let entry = Entry {
                    name,
                    file: path.clone(),
                    timestamp: report.header.timestamp.clone(),
                    hardware: report.header.hardware.clone(),
                    instruction_set: report.header.instruction_set.clone(),
                    result: result.clone(),
                    mmlu: None,
                    humaneval: Vec::new(),
                    speed_file: None,
                };
                (entry, BTreeMap::new())
            });
            entry.file = path.clone();
            entry.timestamp = report.header.timestamp.clone();
            entry.hardware = report.header.hardware.clone();
            entry.instruction_set = report.header.instruction_set.clone();
            entry.result = result;
            if let Some(value) = mmlu {
                entry.mmlu = Some(Sourced {
                    value,
                    file: path.clone(),
                });
            }
            if let Some(value) = humaneval {
                by_setting.insert(
                    value.setting(),
                    Sourced {
                        value,
                        file: path.clone(),
                    },
                );
            }
        }
    }
    by_name
        .into_values()
        .map(|(mut entry, by_setting)| {
            entry.humaneval = by_setting.into_values().collect();
            entry
        })
        .collect()
}

/// The real checkpoints Short 3 compares, by GGUF file name.
pub const SHORT_MODELS: [&str; 2] = [SMOLLM2_GGUF, GEMMA3_GGUF];

/// The file name of a bench result's model source (a path, or a name without folders).
fn file_of(source: &str) -> Option<&str> {
    Path::new(source).file_name().and_then(|f| f.to_str())
}

/// Whether `report` is the run Short 3 describes (`scripts/bench-real-models.sh`): every model of
/// [`SHORT_MODELS`] with its trained weights, each scored on MMLU's ten default subjects in full
/// (MMLU's test split has at least 100 questions in every subject, so a `--limit`ed run is not
/// it) and on HumanEval.
pub fn is_short_run(report: &BenchReport) -> bool {
    let full_mmlu = |r: &ModelResult| {
        r.mmlu.as_ref().is_some_and(|m| {
            let per = &m.summary.per_subject;
            per.len() == DEFAULT_SUBJECTS.len()
                && DEFAULT_SUBJECTS
                    .iter()
                    .all(|s| per.get(*s).is_some_and(|a| a.total >= 100))
        })
    };
    report.complete
        && SHORT_MODELS.iter().all(|file| {
            report.models.iter().any(|(source, r)| {
                file_of(source) == Some(file)
                    && r.weights == "pretrained"
                    && full_mmlu(r)
                    && r.humaneval.is_some()
            })
        })
}

/// Short 3's rows: the real models from the latest run that [`is_short_run`] (nothing from
/// other runs of theirs), then the 1B architectures' random-weight rows, each from its latest
/// run. Without such a run there are only the latter.
///
/// One exception keeps a disturbed timing out of the table: a model's speed comes from a later
/// speed-only run of both models (`bench-real-models.sh --skip-mmlu --skip-humaneval`) on the
/// same CPU, threads, kernels and prompt and generation lengths, where there is one. MMLU,
/// HumanEval and peak memory (which the long MMLU prompts set) stay the Short run's.
pub fn short_entries(runs: &[(PathBuf, BenchReport)]) -> Vec<Entry> {
    let short = runs.iter().rev().find(|(_, report)| is_short_run(report));
    let mut entries: Vec<Entry> = short
        .map(|run| latest_entries(std::slice::from_ref(run)))
        .unwrap_or_default();
    if let Some((_, short)) = short {
        for entry in &mut entries {
            if let Some((path, speed)) = speed_rerun(runs, short, &entry.result) {
                entry.result.tokens_per_second = speed.decode_tokens_per_s.mean;
                entry.result.speed = speed.clone();
                entry.speed_file = Some(path.clone());
            }
        }
    }
    entries.extend(
        latest_entries(runs)
            .into_iter()
            .filter(|e| e.result.weights == "random"),
    );
    entries
}

/// The latest speed-only run of every [`SHORT_MODELS`] file after `short`, measured as `short`
/// measured `model`, and that run's speed of it.
fn speed_rerun<'a>(
    runs: &'a [(PathBuf, BenchReport)],
    short: &BenchReport,
    model: &ModelResult,
) -> Option<(&'a PathBuf, &'a SpeedResult)> {
    let same_setup = |report: &BenchReport| {
        let (a, b) = (&report.header, &short.header);
        report.complete
            && a.timestamp > b.timestamp
            && a.hardware.cpu == b.hardware.cpu
            && a.hardware.threads == b.hardware.threads
            && a.instruction_set == b.instruction_set
            && SHORT_MODELS
                .iter()
                .all(|f| report.models.keys().any(|s| file_of(s) == Some(f)))
    };
    runs.iter()
        .rev()
        .filter(|(_, r)| same_setup(r))
        .find_map(|(path, r)| {
            let rerun = r.models.values().find(|m| {
                file_of(&m.source) == file_of(&model.source)
                    && m.weights == model.weights
                    && m.mmlu.is_none()
                    && m.humaneval.is_none()
                    && m.speed.prompt_tokens == model.speed.prompt_tokens
                    && m.speed.new_tokens == model.speed.new_tokens
            })?;
            Some((path, &rerun.speed))
        })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))
}

/// A run whose sandbox was not fully isolated is flagged where its number is.
fn isolation_flag(h: &HumanEvalResult) -> &'static str {
    if h.isolation.is_full() {
        ""
    } else {
        " ⚠"
    }
}

/// pass@k of a run; files written before pass@k was recorded hold pass@1 only.
fn pass_at(h: &HumanEvalResult, k: usize) -> Option<f64> {
    h.pass_at_k
        .get(&k)
        .copied()
        .or((k == 1).then_some(h.pass_at_1))
}

/// The headline table: quality, speed and memory of every measured model.
pub fn measured_table(entries: &[Entry]) -> Result<Table> {
    let col = |name: &str, f: &dyn Fn(&Entry) -> String| {
        Column::new(name.into(), entries.iter().map(f).collect::<Vec<_>>())
    };
    let df = DataFrame::new_infer_height(vec![
        col("model", &|e| e.name.clone()),
        col("MMLU 5-shot % (95% CI)", &|e| {
            e.mmlu.as_ref().map(|m| &m.value).map_or("–".into(), |m| {
                format!(
                    "{:.1} ({:.1}–{:.1}), {} q",
                    100.0 * m.summary.micro.accuracy,
                    100.0 * m.summary.micro.ci95_low,
                    100.0 * m.summary.micro.ci95_high,
                    m.summary.micro.total
                ) + if m.shots_from_test_split { " †" } else { "" }
            })
        }),
        col("HumanEval pass@1 % (format)", &|e| {
            if e.humaneval.is_empty() {
                return "–".into();
            }
            e.humaneval
                .iter()
                .map(|h| {
                    let h = &h.value;
                    // Greedy: the problems passed; sampled pass@1 is a mean of estimates.
                    let passed = if h.sampling.is_greedy() {
                        format!(" ({}/{})", h.passed, h.problems)
                    } else {
                        String::new()
                    };
                    format!(
                        "{}{passed} {}{}",
                        pct(Some(h.pass_at_1)),
                        h.setting(),
                        isolation_flag(h)
                    )
                })
                .collect::<Vec<_>>()
                .join(" · ")
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
        col("machine", &|e| e.machine()),
        col("result files", &|e| e.files().join(", ")),
    ])?;
    Ok(Table::new("Measured by billion-llm bench", df).with_note(
        "MMLU: lm-eval's 5-shot prompt, prediction by log-probability of \" A\"..\" D\", micro accuracy \
         with a Wilson 95% interval; † marks runs whose five shots are other test questions of the \
         same subject (the MMLU copy on PyPI has no dev split; the hub's has). HumanEval: per format (completion: the prompt continued; chat: through the \
         chat template, the answer's code block run), greedy unless the decoding is named, unit \
         tests in a sandbox (⚠: it was not fully isolated; the result file's `isolation` says \
         what held); pass@k in the HumanEval table. The trained models' rows come from one run \
         (the result files named: speed from a speed-only rerun where a second file is named); \
         random-weight rows (speed and memory only) from each architecture's latest run. Speed: \
         mean ± std over timed runs after a warm-up, prefill and decode apart. Peak memory: the \
         process's peak resident set while loading and running the model (on a GPU, the \
         device's peak).",
    ))
}

/// HumanEval in detail: one row per model and setting (format and decoding), with pass@k.
/// `None` when no model ran HumanEval.
pub fn humaneval_table(entries: &[Entry]) -> Result<Option<Table>> {
    let rows: Vec<(&Entry, &Sourced<HumanEvalResult>)> = entries
        .iter()
        .flat_map(|e| e.humaneval.iter().map(move |h| (e, h)))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let col = |name: &str, f: &dyn Fn(&Entry, &HumanEvalResult) -> String| {
        Column::new(
            name.into(),
            rows.iter().map(|(e, h)| f(e, &h.value)).collect::<Vec<_>>(),
        )
    };
    let files: Vec<String> = rows
        .iter()
        .map(|(_, h)| {
            h.file
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned())
        })
        .collect();
    let df = DataFrame::new_infer_height(vec![
        col("model", &|e, _| e.name.clone()),
        col("format", &|_, h| h.format.name().to_string()),
        col("decoding", &|_, h| h.sampling.describe()),
        col("pass@1 %", &|_, h| {
            format!("{}{}", pct(pass_at(h, 1)), isolation_flag(h))
        }),
        col("pass@5 %", &|_, h| pct(pass_at(h, 5))),
        col("pass@10 %", &|_, h| pct(pass_at(h, 10))),
        col("solved by a sample", &|_, h| {
            format!("{}/{}", h.passed, h.problems)
        }),
        Column::new("result file".into(), files),
    ])?;
    Ok(Some(
        Table::new("HumanEval by format and decoding", df).with_note(
            "completion: the problem's prompt continued as raw text and cut at the next top-level \
         statement; chat: the prompt sent through the model's chat template with EvalPlus's \
         instruction (and its response prefix where the template allows one), the first code \
         block of the answer run. pass@k: the unbiased estimator of Chen et al. (2021), \
         1 − C(n−c, k)/C(n, k), averaged over problems, for k ≤ n samples per problem; greedy \
         decoding draws one sample (pass@1). Solved by a sample: problems with c > 0. ⚠: the \
         sandbox was not fully isolated.",
        ),
    ))
}

/// MMLU accuracy per subject, one bar per measured model.
pub fn mmlu_subject_chart(entries: &[Entry]) -> Result<Option<Chart>> {
    let with: Vec<&Entry> = entries.iter().filter(|e| e.mmlu.is_some()).collect();
    if with.is_empty() {
        return Ok(None);
    }
    let subjects: BTreeSet<String> = with
        .iter()
        .flat_map(|e| {
            e.mmlu
                .as_ref()
                .unwrap()
                .value
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
        let per = &e.mmlu.as_ref().unwrap().value.summary.per_subject;
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
        .filter(|e| e.mmlu.is_some())
        .collect();
    by_mmlu.sort_by(|a, b| {
        let acc = |e: &Entry| e.mmlu.as_ref().unwrap().value.summary.micro.accuracy;
        acc(b).total_cmp(&acc(a))
    });
    if let Some(best) = by_mmlu.first() {
        let m = &best.mmlu.as_ref().unwrap().value.summary.micro;
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
            let n = &next.mmlu.as_ref().unwrap().value.summary.micro;
            let paired = paired_difference(
                &best.mmlu.as_ref().unwrap().value.questions,
                &next.mmlu.as_ref().unwrap().value.questions,
            );
            if let Some(d) = paired {
                line.push_str(&format!(
                    " On the {} questions both answered, it is {:.1} points ahead of {} (95% CI \
                     {:.1} to {:.1}; {} right for it alone, {} for {} alone): {}.",
                    d.questions,
                    100.0 * d.difference,
                    next.name,
                    100.0 * d.ci95_low,
                    100.0 * d.ci95_high,
                    d.only_a,
                    d.only_b,
                    next.name,
                    if d.is_established() {
                        "a difference the data establish"
                    } else {
                        "the difference is not established"
                    }
                ));
            } else if n.ci95_high >= m.ci95_low {
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
        // Every scored model against chance, not just the best.
        let (guessing, above): (Vec<&Entry>, Vec<&Entry>) = by_mmlu
            .iter()
            .skip(1)
            .partition(|e| e.mmlu.as_ref().unwrap().value.summary.micro.ci95_low <= 0.25);
        let describe = |list: &[&Entry]| {
            list.iter()
                .map(|e| {
                    let m = &e.mmlu.as_ref().unwrap().value.summary.micro;
                    format!(
                        "{} ({:.1}%, 95% CI {:.1}–{:.1})",
                        e.name,
                        100.0 * m.accuracy,
                        100.0 * m.ci95_low,
                        100.0 * m.ci95_high
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !guessing.is_empty() {
            lines.push(format!(
                "**Chance is 25% on MMLU:** the interval of {} includes it.",
                describe(&guessing)
            ));
        }
        if !above.is_empty() {
            lines.push(format!("**Above chance on MMLU:** {}.", describe(&above)));
        }
    }
    let runs: Vec<(&Entry, &HumanEvalResult)> = trained
        .iter()
        .flat_map(|e| e.humaneval.iter().map(move |h| (*e, &h.value)))
        .collect();
    if let Some((best, h)) = runs
        .iter()
        .max_by(|a, b| a.1.pass_at_1.total_cmp(&b.1.pass_at_1))
    {
        lines.push(if h.passed == 0 {
            let mut settings: Vec<String> = runs.iter().map(|(_, h)| h.setting()).collect();
            settings.sort();
            settings.dedup();
            format!(
                "**Code:** none of the measured models passed a HumanEval problem ({} tried; \
                 {}): use a larger or code-trained model for code.",
                h.problems,
                settings.join("; ")
            )
        } else {
            // The same model in its other settings: how much the format moved its score.
            let others: Vec<String> = runs
                .iter()
                .filter(|(e, o)| e.name == best.name && o.setting() != h.setting())
                .map(|(_, o)| format!("{} {:.1}%", o.setting(), 100.0 * o.pass_at_1))
                .collect();
            let others = if others.is_empty() {
                String::new()
            } else {
                format!(" Its other settings: {}.", others.join(", "))
            };
            // Other models at the same score: a tie, not a winner.
            let tied: Vec<String> = runs
                .iter()
                .filter(|(e, o)| e.name != best.name && o.pass_at_1 == h.pass_at_1)
                .map(|(e, o)| format!("{} ({}; {}/{})", e.name, o.setting(), o.passed, o.problems))
                .collect();
            let leader = if tied.is_empty() {
                format!("{} has the highest HumanEval pass@1 here", best.name)
            } else {
                format!(
                    "{} ties for the highest HumanEval pass@1 here with {}",
                    best.name,
                    tied.join(", ")
                )
            };
            format!(
                "**Code:** {leader}: {:.1}% ({}; {}/{} problems solved).{others}",
                100.0 * h.pass_at_1,
                h.setting(),
                h.passed,
                h.problems
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
            fast.name,
            fast.machine(),
            fast.result.tokens_per_second
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
                    e.result.tokens_per_second,
                    e.result.peak_memory_gb,
                    e.name,
                    e.machine()
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
pub fn comparison_markdown(entries: &[Entry], engines: Option<&Table>) -> Result<String> {
    let mut md = String::from(
        "# Comparison\n\n<!-- Generated by `billion-llm book-assets` from results/bench-*.json, \
         results/speed-*.json and src/workbook/published.rs. Do not edit: run the benchmarks and \
         regenerate. -->\n\n",
    );
    md.push_str("## Measured here\n\n");
    if entries.is_empty() {
        md.push_str("No benchmark results yet: run `billion-llm bench`.\n\n");
    } else {
        md.push_str(&measured_table(entries)?.to_markdown());
        md.push('\n');
        if let Some(table) = humaneval_table(entries)? {
            md.push_str(&table.to_markdown());
            md.push('\n');
        }
    }
    if let Some(engines) = engines {
        md.push_str("## Speed against llama.cpp\n\n");
        md.push_str(&engines.to_markdown());
        md.push('\n');
    }
    md.push_str("## When to use each model\n\nFrom the measured numbers above only.\n\n");
    for line in advice(entries) {
        md.push_str(&format!("- {line}\n"));
    }
    let partial: Vec<String> = entries
        .iter()
        .flat_map(|e| e.humaneval.iter().map(move |h| (e, h)))
        .filter_map(|(e, h)| {
            let i = h.value.isolation;
            let file = h.file.file_name()?.to_string_lossy();
            (!i.is_full()).then(|| {
                format!(
                    "- {} ({file}, {}): sandbox `{:?}` lacked {}",
                    e.name,
                    h.value.setting(),
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
mod tests;
