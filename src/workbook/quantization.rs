//! Short 7, "How small can a 1B go?" (from `quant-study`'s `results/quant-study-*.json`): for
//! each real model, what every file type costs in quality (KL divergence from the F32
//! reference, top-1 agreement, perplexity) and buys in size and speed, and one prompt answered
//! by every type. What each type does to the four 1B models is `quantization_1b`'s.

use super::read_results;
use crate::eval::quant_eval::Divergence;
use crate::eval::quant_study::PlannedSize;
use crate::quantize::FileType;
use crate::report::{Chart, LineChart, Table};
use crate::workbook::engines::{EngineSpeed, Hardware};
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The models the Short shows, by the name the study gives them (`scripts/quant-study.sh`), and
/// the short name of their files in the book.
pub const SHORT_MODELS: [(&str, &str); 2] = [
    ("SmolLM2-135M-Instruct", "smollm2"),
    ("Gemma-3-270M", "gemma"),
];

/// What the workbook reads of a `quant-study` file.
#[derive(Debug, Clone, Deserialize)]
pub struct Study {
    pub timestamp: String,
    #[serde(default)]
    pub instruction_set: String,
    pub hardware: Hardware,
    pub model: String,
    pub source: String,
    /// Recorded by newer studies; older ones name it in the source's file name.
    #[serde(default)]
    pub source_file_type: Option<String>,
    pub reference: String,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub planned_1b: Vec<PlannedSize>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub context: usize,
    pub windows: usize,
    pub prompt: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub file_type: String,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    pub divergence: Divergence,
    pub billion_llm: EngineSpeed,
    pub llama_cpp: Option<EngineSpeed>,
    pub decode_ratio: Option<f64>,
    #[serde(default)]
    pub fallback_matrices: BTreeMap<String, usize>,
    pub answer: String,
}

/// Every study in `results`, oldest first.
pub fn load_studies(results: &Path) -> Result<Vec<Study>> {
    Ok(read_results(results, "quant-study-", "quant-study")?
        .into_iter()
        .map(|(file, s)| Study { file, ..s })
        .collect())
}

impl Study {
    /// Whether this is a run the Short describes: every file type, each scored on at least four
    /// windows of 512 tokens per text. A quick run of a few types does not replace it.
    pub fn is_complete(&self) -> bool {
        FileType::ALL
            .iter()
            .all(|t| self.rows.iter().any(|r| r.file_type == t.name()))
            && self.settings.windows >= 4
            && self.settings.context >= 512
    }

    /// The machine, with the kernels the run used.
    pub fn machine(&self) -> String {
        let isa = if self.instruction_set.is_empty() {
            String::new()
        } else {
            format!(", {} kernels", self.instruction_set)
        };
        format!("{}{isa}", self.hardware.cpu)
    }

    /// The type the source file was shipped in. Re-quantizing the F32 reference to it lands
    /// on nearly the source's own values, so its small distance says nothing about the type.
    pub fn source_type(&self) -> Option<String> {
        self.source_file_type.clone().or_else(|| {
            let name = Path::new(&self.source)
                .file_name()?
                .to_string_lossy()
                .to_ascii_lowercase();
            FileType::ALL
                .iter()
                .find(|t| name.contains(t.name()))
                .map(|t| t.name().to_string())
        })
    }

    fn row(&self, t: FileType) -> Option<&Row> {
        self.rows.iter().find(|r| r.file_type == t.name())
    }
}

/// The Short's study of each of [`SHORT_MODELS`]: the latest complete one of that model.
pub fn short_studies(studies: &[Study]) -> Vec<&Study> {
    SHORT_MODELS
        .iter()
        .filter_map(|(m, _)| {
            studies
                .iter()
                .rev()
                .find(|s| s.model == *m && s.is_complete())
        })
        .collect()
}

/// [`short_studies`] of `results`, owned (a notebook keeps them between cells).
pub fn load_short_studies(results: &Path) -> Result<Vec<Study>> {
    Ok(short_studies(&load_studies(results)?)
        .into_iter()
        .cloned()
        .collect())
}

/// The short name of a study's files in the book (`smollm2`).
pub fn book_slug(model: &str) -> &'static str {
    SHORT_MODELS
        .iter()
        .find(|(m, _)| *m == model)
        .map_or("other", |(_, slug)| slug)
}

fn mb(bytes: f64) -> String {
    format!("{:.0}", bytes / 1e6)
}

/// One model's types, largest first: size, quality and speed beside llama.cpp's.
pub fn quality_table(study: &Study) -> Result<Table> {
    let rows: Vec<&Row> = study.rows.iter().collect();
    let col = |name: &str, f: &dyn Fn(&Row) -> String| {
        Column::new(name.into(), rows.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let source = study.source_type().unwrap_or_default();
    let df = DataFrame::new_infer_height(vec![
        col("type", &|r| {
            if r.file_type == source {
                format!("{} §", r.file_type)
            } else {
                r.file_type.clone()
            }
        }),
        col("file MB", &|r| mb(r.file_bytes as f64)),
        col("bits/weight", &|r| format!("{:.2}", r.bits_per_weight)),
        col("mean KL", &|r| format!("{:.4}", r.divergence.mean_kl)),
        col("KL p99", &|r| format!("{:.3}", r.divergence.kl_p99)),
        col("top-1 same %", &|r| {
            format!("{:.1}", 100.0 * r.divergence.top1_agreement)
        }),
        col("perplexity", &|r| {
            format!("{:.2}", r.divergence.perplexity_model)
        }),
        col("decode tok/s (ours / llama.cpp)", &|r| {
            let theirs = r.llama_cpp.as_ref().map_or("–".into(), |l| {
                format!("{:.0}", l.decode_tokens_per_s.median)
            });
            let fallback = if r.fallback_matrices.is_empty() {
                ""
            } else {
                " ‡"
            };
            format!(
                "{:.0}{fallback} / {theirs}",
                r.billion_llm.decode_tokens_per_s.median
            )
        }),
        col("prefill tok/s (ours / llama.cpp)", &|r| {
            let theirs = r.llama_cpp.as_ref().map_or("–".into(), |l| {
                format!("{:.0}", l.prefill_tokens_per_s.median)
            });
            format!(
                "{:.0} / {theirs}",
                r.billion_llm.prefill_tokens_per_s.median
            )
        }),
    ])?;
    let positions = study.rows.first().map_or(0, |r| r.divergence.positions);
    Ok(
        Table::new(format!("{}: what each type costs", study.model), df).with_note(format!(
            "Reference: {}. KL divergence in nats per token over {positions} positions of MMLU \
         questions (subjects the benchmark does not ask) and HumanEval solutions; top-1: how \
         often the type's most likely token is the reference's. § the source file's own type: \
         quantizing the reference back to it recovers nearly the source's values, so its \
         distance is not comparable with the other rows' (and types whose blocks line up with \
         the source's look better than they would from the original weights). Speed: 64-token \
         prompt, 64 new tokens, median of 3 runs each, the engines taking turns, 2 threads. \
         ‡ some matrices ran on candle's matmul (no kernel of ours for that format yet). {}; {}.",
            study.reference,
            study.machine(),
            study.file.file_name().unwrap_or_default().to_string_lossy()
        )),
    )
}

/// Mean KL divergence (log scale) against bits per weight, one curve per model: the
/// size–quality curve.
pub fn kl_chart(studies: &[Study]) -> Result<Chart> {
    let mut chart = LineChart::new(
        "What each bit costs: distance from the full-precision model",
        "bits per weight (whole file)",
        "log10 of mean KL divergence (nats)",
    );
    for s in studies {
        let mut points: Vec<(f64, f64)> = s
            .rows
            .iter()
            .filter(|r| r.divergence.mean_kl > 0.0)
            .map(|r| (r.bits_per_weight, r.divergence.mean_kl.log10()))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart = chart.curve(s.model.clone(), points);
    }
    chart.render()
}

/// Decode speed against file size, ours and llama.cpp's, one pair of curves per model.
pub fn speed_chart(studies: &[Study]) -> Result<Chart> {
    let mut chart = LineChart::new(
        "Decode speed against file size (2 threads)",
        "file size (MB)",
        "decode tokens/s",
    )
    .y_from_zero();
    for s in studies {
        let mut ours: Vec<(f64, f64)> = Vec::new();
        let mut theirs: Vec<(f64, f64)> = Vec::new();
        for r in s.rows.iter().filter(|r| r.file_type != "f32") {
            let x = r.file_bytes as f64 / 1e6;
            ours.push((x, r.billion_llm.decode_tokens_per_s.median));
            if let Some(l) = &r.llama_cpp {
                theirs.push((x, l.decode_tokens_per_s.median));
            }
        }
        ours.sort_by(|a, b| a.0.total_cmp(&b.0));
        theirs.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart = chart.curve(format!("{} (billion-llm)", s.model), ours);
        if !theirs.is_empty() {
            chart = chart.curve(format!("{} (llama.cpp)", s.model), theirs);
        }
    }
    chart.render()
}

/// Every type's greedy continuation of the study's prompt.
pub fn answers_table(study: &Study) -> Result<Table> {
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "type".into(),
            study
                .rows
                .iter()
                .map(|r| r.file_type.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "continuation (greedy)".into(),
            study
                .rows
                .iter()
                .map(|r| r.answer.replace('\n', " ⏎ ").trim().to_string())
                .collect::<Vec<_>>(),
        ),
    ])?;
    Ok(Table::new(
        format!("{}: \"{}\" …", study.model, study.settings.prompt),
        df,
    ))
}

/// The takeaway, in sentences written from the numbers: per model, the smallest file that stays
/// close to the reference, and what the smallest type costs.
pub fn takeaway(studies: &[Study]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in studies {
        let Some(f32_row) = s.row(FileType::F32) else {
            continue;
        };
        let source = s.source_type().unwrap_or_default();
        let close = s
            .rows
            .iter()
            .filter(|r| r.file_type != "f32" && r.file_type != source)
            .filter(|r| r.divergence.top1_agreement >= 0.95)
            .min_by_key(|r| r.file_bytes);
        if let Some(r) = close {
            lines.push(format!(
                "{}: {} is the smallest file that picks the reference's next token at least 95% \
                 of the time ({:.1}%, mean KL {:.4}): {} MB, {:.0}% of the F32 file (the \
                 source's own type, {source}, aside).",
                s.model,
                r.file_type,
                100.0 * r.divergence.top1_agreement,
                r.divergence.mean_kl,
                mb(r.file_bytes as f64),
                100.0 * r.file_bytes as f64 / f32_row.file_bytes as f64
            ));
        }
        // The 4-bit file to set q2_k against: q4_k_m, or q4_k_s where q4_k_m is the source's
        // own (flattered) type.
        let q4 = [FileType::Q4KM, FileType::Q4KS]
            .into_iter()
            .find(|t| t.name() != source)
            .and_then(|t| s.row(t));
        if let (Some(q4), Some(q2)) = (q4, s.row(FileType::Q2K)) {
            lines.push(format!(
                "{}: q2_k saves {} MB against {} ({} vs {} MB) but agrees on the top token \
                 {:.1}% of the time instead of {:.1}%, and its perplexity is {:.2} against \
                 {:.2}.",
                s.model,
                mb(q4.file_bytes as f64 - q2.file_bytes as f64),
                q4.file_type,
                mb(q2.file_bytes as f64),
                mb(q4.file_bytes as f64),
                100.0 * q2.divergence.top1_agreement,
                100.0 * q4.divergence.top1_agreement,
                q2.divergence.perplexity_model,
                q4.divergence.perplexity_model
            ));
        }
    }
    lines
}

/// One type made and measured live, in the notebook.
#[derive(Debug, Clone)]
pub struct LiveRow {
    pub file_type: FileType,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    pub divergence: Divergence,
    pub answer: String,
}

/// Dequantizes `source` to F32 in `dir`, makes each of `types` from it, and measures each
/// against the F32 file on one `context`-token window of each asset text, with its greedy
/// continuation of `prompt`: a small, quick version of the study.
pub fn quantize_and_compare(
    source: &Path,
    types: &[FileType],
    dir: &Path,
    context: usize,
    prompt: &str,
) -> Result<Vec<LiveRow>> {
    use crate::eval::quant_eval;
    use crate::hub::assets::asset;
    use crate::hub::loader::{load, LoadOptions};
    use crate::model::generation::{generate, GenerateOptions};
    let reference = dir.join("reference-f32.gguf");
    if !reference.exists() {
        crate::quantize::quantize_gguf(source, FileType::F32, &reference, |_, _, _| {})?;
    }
    let texts = quant_eval::asset_texts(&asset("mmlu.jsonl")?, &asset("HumanEval.jsonl.gz")?)?;
    let mut r = load(&reference.to_string_lossy(), &LoadOptions::default())?;
    let mut rows = Vec::new();
    for &t in types {
        let path = dir.join(format!("{}.gguf", t.name()));
        if !path.exists() {
            crate::quantize::quantize_gguf(&reference, t, &path, |_, _, _| {})?;
        }
        let mut m = load(&path.to_string_lossy(), &LoadOptions::default())?;
        let (_, divergence) = quant_eval::evaluate(&mut r, &mut m, &texts, context, 1)?;
        let ids = m.tokenizer()?.encode(prompt, true)?;
        let opts = GenerateOptions {
            max_new_tokens: 24,
            ..GenerateOptions::default()
        };
        m.model.reset_cache();
        let g = generate(&mut m.model, &ids, &opts, |_| Ok(()))?;
        rows.push(LiveRow {
            file_type: t,
            file_bytes: std::fs::metadata(&path)?.len(),
            bits_per_weight: crate::quantize::GgufSize::of(&path)?.bits_per_weight(),
            divergence,
            answer: m.tokenizer()?.decode(&g.tokens, true)?,
        });
    }
    Ok(rows)
}

/// [`quantize_and_compare`]'s rows as a table.
pub fn live_table(rows: &[LiveRow], prompt: &str) -> Result<Table> {
    let col = |name: &str, f: &dyn Fn(&LiveRow) -> String| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let df = DataFrame::new_infer_height(vec![
        col("type", &|r| r.file_type.name().to_string()),
        col("file MB", &|r| mb(r.file_bytes as f64)),
        col("bits/weight", &|r| format!("{:.2}", r.bits_per_weight)),
        col("mean KL", &|r| format!("{:.4}", r.divergence.mean_kl)),
        col("top-1 same %", &|r| {
            format!("{:.1}", 100.0 * r.divergence.top1_agreement)
        }),
        col(&format!("\"{prompt}\" …"), &|r| {
            r.answer.replace('\n', " ⏎ ")
        }),
    ])?;
    let positions = rows.first().map_or(0, |r| r.divergence.positions);
    Ok(Table::new("Made here, just now", df).with_note(format!(
        "KL divergence from the F32 reference over {positions} positions (one window of each \
         text); greedy continuations."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workbook::engines::Median;

    fn row(t: &str, bytes: u64, top1: f64) -> Row {
        Row {
            file_type: t.into(),
            file_bytes: bytes,
            bits_per_weight: 4.0,
            divergence: Divergence {
                positions: 4096,
                mean_kl: 0.01,
                mean_kl_stderr: 0.001,
                kl_p99: 0.1,
                kl_max: 0.5,
                top1_agreement: top1,
                perplexity_reference: 8.0,
                perplexity_model: 8.5,
            },
            billion_llm: EngineSpeed {
                prefill_tokens_per_s: Median { median: 300.0 },
                decode_tokens_per_s: Median { median: 100.0 },
            },
            llama_cpp: None,
            decode_ratio: None,
            fallback_matrices: BTreeMap::new(),
            answer: "red, yellow and blue".into(),
        }
    }

    fn study(model: &str, types: &[FileType], windows: usize) -> Study {
        Study {
            timestamp: "t".into(),
            instruction_set: "AVX2".into(),
            hardware: Hardware { cpu: "cpu".into() },
            model: model.into(),
            source: "/x/model.Q4_1.gguf".into(),
            source_file_type: None,
            reference: "r".into(),
            settings: Settings {
                context: 512,
                windows,
                prompt: "p".into(),
            },
            rows: types
                .iter()
                .enumerate()
                .map(|(i, t)| row(t.name(), 1000 - 50 * i as u64, 1.0 - 0.012 * i as f64))
                .collect(),
            planned_1b: Vec::new(),
            file: PathBuf::new(),
        }
    }

    /// A newer quick run (few types, or fewer windows) never replaces the complete study, and
    /// each model gets its own.
    #[test]
    fn the_short_shows_the_latest_complete_study_of_each_model() {
        let all = FileType::ALL.to_vec();
        let studies = vec![
            study("SmolLM2-135M-Instruct", &all, 4),
            study("Gemma-3-270M", &all, 4),
            study("SmolLM2-135M-Instruct", &[FileType::Q8_0], 4),
            study("Gemma-3-270M", &all, 1),
        ];
        let chosen = short_studies(&studies);
        assert_eq!(chosen.len(), 2);
        assert!(chosen
            .iter()
            .all(|s| s.rows.len() == all.len() && s.settings.windows == 4));
        assert_eq!(chosen[1].model, "Gemma-3-270M");
    }

    #[test]
    fn the_takeaway_names_the_smallest_file_that_stays_close() {
        let s = study("SmolLM2-135M-Instruct", &FileType::ALL, 4);
        let lines = takeaway(std::slice::from_ref(&s));
        // Top-1 falls 1.2 points a type, sizes 50 bytes: q5_k_s (95.2%) is the last above 95%.
        assert!(lines[0].contains("q5_k_s is the smallest"), "{lines:?}");
        assert_eq!(s.source_type().as_deref(), Some("q4_1"));
        // The source's own type is never the answer, however close it looks.
        let mut s = s;
        s.rows
            .iter_mut()
            .find(|r| r.file_type == "q4_1")
            .unwrap()
            .divergence
            .top1_agreement = 1.0;
        assert!(takeaway(std::slice::from_ref(&s))[0].contains("q5_k_s is the smallest"));
        assert!(lines[1].contains("q2_k saves"), "{lines:?}");
    }
}
