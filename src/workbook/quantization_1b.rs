//! Short 7's question for the 1B models (from `quant-1b`'s `results/quant-1b-*.json`): at each
//! file type, what does each of the four take in memory with a 2,048-token context, which
//! machines does it fit, and how fast does it decode? Measured on random weights in each type's
//! mix, which cost what the trained weights cost.

use super::read_results;
use crate::quantize::FileType;
use crate::report::{Chart, LineChart, Table};
use crate::workbook::engines::{EngineSpeed, Hardware};
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The machine sizes the Short sets the models against, in GB (10⁹ bytes).
pub const MACHINES_GB: [f64; 3] = [2.0, 4.0, 8.0];

/// What the workbook reads of a `quant-1b` file.
#[derive(Debug, Clone, Deserialize)]
pub struct OneB {
    pub timestamp: String,
    #[serde(default)]
    pub instruction_set: String,
    pub hardware: Hardware,
    pub settings: Settings,
    pub contexts: Vec<Context>,
    pub rows: Vec<Row>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub context: usize,
    pub speed: Speed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Speed {
    pub threads: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub runs: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Context {
    pub model: String,
    pub file_type: String,
    pub positions: usize,
    pub prefill_s: f64,
    pub added_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub model: String,
    pub file_type: String,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    pub loaded_bytes: u64,
    pub peak_rss_bytes: u64,
    pub with_context_bytes: u64,
    pub speed: EngineSpeed,
    #[serde(default)]
    pub fallback_matrices: BTreeMap<String, usize>,
}

/// Every `quant-1b` run in `results`, oldest first.
pub fn load_runs(results: &Path) -> Result<Vec<OneB>> {
    Ok(read_results(results, "quant-1b-", "quant-1b")?
        .into_iter()
        .map(|(file, r)| OneB { file, ..r })
        .collect())
}

impl OneB {
    /// Whether this is the run the Short describes: the four compared models at every file
    /// type, with a 2,048-token context. A quick run of one model or a few types does not
    /// replace it.
    pub fn is_complete(&self) -> bool {
        crate::hub::zoo::compared().all(|m| {
            FileType::ALL.iter().all(|t| {
                self.rows
                    .iter()
                    .any(|r| r.model == m.name && r.file_type == t.name())
            })
        }) && self.settings.context >= 2048
    }

    /// The models, in the order measured.
    pub fn models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !models.contains(&r.model.as_str()) {
                models.push(&r.model);
            }
        }
        models
    }

    fn row(&self, model: &str, t: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.model == model && r.file_type == t)
    }

    fn note(&self) -> String {
        let s = &self.settings.speed;
        format!(
            "Measured on random weights in each type's mix (llama.cpp's choice per tensor), which \
             cost what trained weights cost. Peak: the process's peak resident set while decoding \
             {} tokens after a {}-token prompt, plus what a {}-token context added to it, measured \
             once per model by one long prefill (KV cache and activations). GB = 10⁹ bytes. \
             Speed: median of {} runs, {} threads. {}{}; {}.",
            s.new_tokens,
            s.prompt_tokens,
            thousands(self.settings.context),
            s.runs,
            s.threads,
            self.hardware.cpu,
            if self.instruction_set.is_empty() {
                String::new()
            } else {
                format!(", {} kernels", self.instruction_set)
            },
            self.file.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}

/// The Short's run: the latest complete one (see [`OneB::is_complete`]).
pub fn short_run(results: &Path) -> Result<Option<OneB>> {
    Ok(load_runs(results)?
        .into_iter()
        .rev()
        .find(OneB::is_complete))
}

/// `2048` as `2,048`.
fn thousands(n: usize) -> String {
    if n < 1000 {
        n.to_string()
    } else {
        format!("{},{:03}", n / 1000, n % 1000)
    }
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// The smallest of [`MACHINES_GB`] that holds `bytes`.
pub fn smallest_machine(bytes: u64) -> Option<f64> {
    MACHINES_GB.into_iter().find(|m| gb(bytes) <= *m)
}

/// One row per file type and one column per model, each cell `cell` of that model's row ("–"
/// where the run has none).
fn by_type_and_model(run: &OneB, cell: impl Fn(&Row) -> String) -> Result<DataFrame> {
    let mut columns = vec![Column::new(
        "type".into(),
        FileType::ALL
            .iter()
            .map(|t| t.name().to_string())
            .collect::<Vec<_>>(),
    )];
    for m in run.models() {
        let cells: Vec<String> = FileType::ALL
            .iter()
            .map(|t| run.row(m, t.name()).map_or("–".into(), &cell))
            .collect();
        columns.push(Column::new(m.into(), cells));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

/// Per type and model: the file's size, the peak memory with a 2,048-token context, and the
/// smallest machine that holds it.
pub fn memory_table(run: &OneB) -> Result<Table> {
    let df = by_type_and_model(run, |r| {
        let fits = smallest_machine(r.with_context_bytes)
            .map_or("> 8 GB".into(), |g| format!("{g:.0} GB"));
        format!(
            "{:.2} / {:.2} GB → {fits}",
            gb(r.file_bytes),
            gb(r.with_context_bytes)
        )
    })?;
    Ok(Table::new(
        format!(
            "The four 1B models, measured: file size / peak memory with a {}-token context → the \
             smallest machine that holds it",
            thousands(run.settings.context)
        ),
        df,
    )
    .with_note(format!(
        "{} The operating system and other programs need room beyond this, so take the next \
         size up when a model only just fits.",
        run.note()
    )))
}

/// Per type and model: decode and prefill tokens/s.
pub fn speed_table(run: &OneB) -> Result<Table> {
    let df = by_type_and_model(run, |r| {
        let fallback = if r.fallback_matrices.is_empty() {
            ""
        } else {
            " ‡"
        };
        format!(
            "{:.1}{fallback} / {:.0}",
            r.speed.decode_tokens_per_s.median, r.speed.prefill_tokens_per_s.median
        )
    })?;
    Ok(Table::new(
        "The four 1B models, measured: decode / prefill tokens per second",
        df,
    )
    .with_note(format!(
        "{} ‡ some matrices ran on candle's matmul (no kernel of ours for that format yet).",
        run.note()
    )))
}

/// Decode speed against file size, one curve per model.
pub fn speed_chart(run: &OneB) -> Result<Chart> {
    let mut chart = LineChart::new(
        format!(
            "1B models: decode speed against file size ({} threads)",
            run.settings.speed.threads
        ),
        "file size (GB)",
        "decode tokens/s",
    )
    .y_from_zero();
    for m in run.models() {
        let mut points: Vec<(f64, f64)> = run
            .rows
            .iter()
            .filter(|r| r.model == m)
            .map(|r| (gb(r.file_bytes), r.speed.decode_tokens_per_s.median))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart = chart.curve(m.to_string(), points);
    }
    chart.render()
}

/// Sentences from the run: which models fit which machine at q4_k_m, and the fastest type.
pub fn takeaway(run: &OneB) -> Vec<String> {
    let mut lines = Vec::new();
    let q4: Vec<&Row> = run
        .models()
        .into_iter()
        .filter_map(|m| run.row(m, FileType::Q4KM.name()))
        .collect();
    if !q4.is_empty() {
        let largest = q4.iter().map(|r| r.with_context_bytes).max().unwrap_or(0);
        let each: Vec<String> = q4
            .iter()
            .map(|r| format!("{} {:.2} GB", r.model, gb(r.with_context_bytes)))
            .collect();
        let verdict = match smallest_machine(largest) {
            Some(g) if g <= 4.0 => format!(
                "so the seeds' \"4 GB: all models (INT4 quantized)\" holds (every one fits {g:.0} GB)"
            ),
            _ => "so the seeds' \"4 GB: all models (INT4 quantized)\" does not hold".to_string(),
        };
        lines.push(format!(
            "Measured at q4_k_m with a {}-token context: {}; {verdict}.",
            thousands(run.settings.context),
            each.join(", ")
        ));
    }
    // Smaller files that take more memory than q4_k_m because part of them runs without our
    // kernels: their weights load larger than the file.
    let heavier: Vec<String> = run
        .rows
        .iter()
        .filter(|r| !r.fallback_matrices.is_empty())
        .filter(|r| {
            run.row(&r.model, FileType::Q4KM.name()).is_some_and(|q4| {
                r.file_bytes < q4.file_bytes && r.with_context_bytes > q4.with_context_bytes
            })
        })
        .map(|r| {
            format!(
                "{} {} ({:.2} GB file, {:.2} GB loaded; {} on candle's matmul)",
                r.model,
                r.file_type,
                gb(r.file_bytes),
                gb(r.loaded_bytes),
                r.fallback_matrices
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if !heavier.is_empty() {
        lines.push(format!(
            "Smaller than q4_k_m on disk but larger in memory here: {}. Those formats have no \
             kernel of this engine's.",
            heavier.join(", ")
        ));
    }
    for m in run.models() {
        let fastest = run.rows.iter().filter(|r| r.model == m).max_by(|a, b| {
            a.speed
                .decode_tokens_per_s
                .median
                .total_cmp(&b.speed.decode_tokens_per_s.median)
        });
        let f32_row = run.row(m, "f32");
        if let (Some(f), Some(f32_row)) = (fastest, f32_row) {
            lines.push(format!(
                "{m} decodes fastest as {} ({:.1} tokens/s, {:.1}× its f32 speed, {:.2} GB file).",
                f.file_type,
                f.speed.decode_tokens_per_s.median,
                f.speed.decode_tokens_per_s.median / f32_row.speed.decode_tokens_per_s.median,
                gb(f.file_bytes)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workbook::engines::Median;

    fn run(models: &[&str], types: &[FileType], context: usize) -> OneB {
        let rows = models
            .iter()
            .flat_map(|m| {
                types.iter().enumerate().map(move |(i, t)| Row {
                    model: m.to_string(),
                    file_type: t.name().into(),
                    file_bytes: 4_000_000_000 / (i as u64 + 1),
                    bits_per_weight: 32.0 / (i as f64 + 1.0),
                    loaded_bytes: 4_000_000_000 / (i as u64 + 1),
                    peak_rss_bytes: 4_100_000_000 / (i as u64 + 1),
                    with_context_bytes: 4_200_000_000 / (i as u64 + 1),
                    speed: EngineSpeed {
                        prefill_tokens_per_s: Median { median: 100.0 },
                        decode_tokens_per_s: Median {
                            median: 3.0 * (i as f64 + 1.0),
                        },
                    },
                    fallback_matrices: BTreeMap::new(),
                })
            })
            .collect();
        OneB {
            timestamp: "t".into(),
            instruction_set: "AVX2".into(),
            hardware: Hardware { cpu: "cpu".into() },
            settings: Settings {
                context,
                speed: Speed {
                    threads: 2,
                    prompt_tokens: 64,
                    new_tokens: 32,
                    runs: 3,
                },
            },
            contexts: Vec::new(),
            rows,
            file: PathBuf::new(),
        }
    }

    fn compared() -> Vec<&'static str> {
        crate::hub::zoo::compared().map(|m| m.name).collect()
    }

    /// Only a run of all four models at every type with the full context is the Short's.
    #[test]
    fn the_short_run_has_every_model_and_type() {
        let all = FileType::ALL.to_vec();
        assert!(run(&compared(), &all, 2048).is_complete());
        assert!(!run(&compared()[..3], &all, 2048).is_complete());
        assert!(!run(&compared(), &all[..5], 2048).is_complete());
        assert!(!run(&compared(), &all, 512).is_complete());
    }

    #[test]
    fn machines_and_the_takeaway_follow_the_measured_peak() {
        assert_eq!(smallest_machine(1_999_000_000), Some(2.0));
        assert_eq!(smallest_machine(2_001_000_000), Some(4.0));
        assert_eq!(smallest_machine(9_000_000_000), None);
        let r = run(&compared(), &FileType::ALL, 2048);
        let lines = takeaway(&r);
        // q4_k_m is the 7th type: 4.2 GB / 7 = 0.6 GB, within 2 GB.
        assert!(
            lines[0].contains("holds (every one fits 2 GB)"),
            "{lines:?}"
        );
        // The last type decodes fastest in this made-up run: 12× the f32 speed.
        assert!(
            lines[1].contains("fastest as q2_k") && lines[1].contains("12.0×"),
            "{lines:?}"
        );
        // A smaller file that loads larger than q4_k_m is named, with its loaded size.
        let mut r = r;
        let q2 = r.rows.iter_mut().find(|x| x.file_type == "q2_k").unwrap();
        (q2.with_context_bytes, q2.loaded_bytes) = (3_000_000_000, 2_500_000_000);
        q2.fallback_matrices.insert("q2_K".into(), 22);
        let lines = takeaway(&r);
        assert!(
            lines[1].contains(
                "larger in memory here: TinyLlama 1.1B q2_k (0.33 GB file, 2.50 GB loaded; q2_K on \
                 candle's matmul)"
            ),
            "{lines:?}"
        );
        let table = memory_table(&r).unwrap();
        assert!(table.to_markdown().contains("4.00 / 4.20 GB → 8 GB"));
    }
}
