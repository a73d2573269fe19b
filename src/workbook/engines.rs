//! Our engine against llama.cpp on the files people download (Short 3, from `bench-speed`'s
//! `results/speed-*.json`): for each model, each engine on its own fastest file, and the
//! same-file ratios beside it. A ratio against a peer's slow file says little; best file against
//! best file is the claim.

use super::read_results;
use crate::report::Table;
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What the table reads of a `bench-speed` results file.
#[derive(Debug, Clone, Deserialize)]
pub struct SpeedRun {
    pub timestamp: String,
    #[serde(default)]
    pub instruction_set: String,
    pub hardware: Hardware,
    pub cases: Vec<SpeedCase>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hardware {
    pub cpu: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SpeedCase {
    pub name: String,
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub threads: usize,
    pub billion_llm: EngineSpeed,
    pub llama_cpp: Option<EngineSpeed>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineSpeed {
    pub prefill_tokens_per_s: Median,
    pub decode_tokens_per_s: Median,
}

/// The median of a measurement; older runs kept no mean or spread beside it.
#[derive(Debug, Clone, Deserialize)]
pub struct Median {
    pub median: f64,
}

impl SpeedCase {
    /// The model a case measures: `SmolLM2-135M` or `TinyLlama-1.1B` (its shape).
    pub fn model(&self) -> &str {
        let first = self.name.split(' ').next().unwrap_or_default();
        first.trim_end_matches("-Instruct")
    }

    /// The file's format as the case names it (`Q4_1`, `Q4_K_M`, `q4_0`, `f32`).
    pub fn format(&self) -> &str {
        self.name
            .split([' ', ','])
            .find(|w| {
                let w = w.to_ascii_lowercase();
                w == "f32"
                    || (w.starts_with('q') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
            })
            .unwrap_or("?")
    }
}

/// Every `bench-speed` run in `results`, oldest first.
pub fn load_runs(results: &Path) -> Result<Vec<SpeedRun>> {
    Ok(read_results(results, "speed-", "bench-speed")?
        .into_iter()
        .map(|(file, run)| SpeedRun { file, ..run })
        .collect())
}

/// The run the table describes: the newest in which llama.cpp ran beside us on SmolLM2 in a K
/// format as well as in the shipped Q4_1, so that each engine's fastest common file is in it.
pub fn latest_comparable(runs: &[SpeedRun]) -> Option<&SpeedRun> {
    runs.iter().rev().find(|run| {
        let with_peer = |format: &str| {
            run.cases.iter().any(|c| {
                c.model() == "SmolLM2-135M" && c.format() == format && c.llama_cpp.is_some()
            })
        };
        with_peer("Q4_1") && with_peer("Q4_K_M")
    })
}

/// Which speed a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
}

impl Phase {
    fn of(self, e: &EngineSpeed) -> f64 {
        match self {
            Phase::Prefill => e.prefill_tokens_per_s.median,
            Phase::Decode => e.decode_tokens_per_s.median,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// One row: a model at one prompt length and thread count, one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct BestAgainstBest {
    pub model: String,
    pub prompt_tokens: usize,
    pub threads: usize,
    pub phase: Phase,
    /// Our fastest file and its median tokens/s ...
    pub ours: (String, f64),
    /// ... llama.cpp's ...
    pub theirs: (String, f64),
    /// ... and every file both ran, with ours / theirs on it.
    pub same_file: Vec<(String, f64)>,
}

impl BestAgainstBest {
    pub fn ratio(&self) -> f64 {
        self.ours.1 / self.theirs.1
    }
}

/// Best file against best file for every model, prompt length and thread count of `run` that
/// llama.cpp ran, quantized files only (the f32 reference is no one's fastest).
pub fn best_against_best(run: &SpeedRun) -> Vec<BestAgainstBest> {
    let mut groups: Vec<(String, usize, usize)> = Vec::new();
    for c in &run.cases {
        let key = (c.model().to_string(), c.prompt_tokens, c.threads);
        if c.llama_cpp.is_some() && c.format() != "f32" && !groups.contains(&key) {
            groups.push(key);
        }
    }
    let mut rows = Vec::new();
    for (model, prompt_tokens, threads) in groups {
        let cases: Vec<&SpeedCase> = run
            .cases
            .iter()
            .filter(|c| {
                c.model() == model
                    && (c.prompt_tokens, c.threads) == (prompt_tokens, threads)
                    && c.format() != "f32"
            })
            .collect();
        for phase in [Phase::Prefill, Phase::Decode] {
            let best = |speed: &dyn Fn(&SpeedCase) -> Option<f64>| {
                cases
                    .iter()
                    .filter_map(|c| Some((c.format().to_string(), speed(c)?)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
            };
            let (Some(ours), Some(theirs)) = (
                best(&|c| Some(phase.of(&c.billion_llm))),
                best(&|c| c.llama_cpp.as_ref().map(|l| phase.of(l))),
            ) else {
                continue;
            };
            let same_file = cases
                .iter()
                .filter_map(|c| {
                    let theirs = phase.of(c.llama_cpp.as_ref()?);
                    Some((c.format().to_string(), phase.of(&c.billion_llm) / theirs))
                })
                .collect();
            rows.push(BestAgainstBest {
                model: model.clone(),
                prompt_tokens,
                threads,
                phase,
                ours,
                theirs,
                same_file,
            });
        }
    }
    rows
}

/// The table of [`best_against_best`], with the run it comes from in its note.
pub fn engines_table(run: &SpeedRun) -> Result<Table> {
    let rows = best_against_best(run);
    let text =
        |f: &dyn Fn(&BestAgainstBest) -> String| -> Vec<String> { rows.iter().map(f).collect() };
    let file = run
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let frame = DataFrame::new_infer_height(vec![
        Column::new("model".into(), text(&|r| r.model.clone())),
        Column::new(
            "prompt, threads".into(),
            text(&|r| format!("{}, {}", r.prompt_tokens, r.threads)),
        ),
        Column::new("speed".into(), text(&|r| r.phase.name().to_string())),
        Column::new(
            "billion-llm: fastest file, tok/s".into(),
            text(&|r| format!("{} {:.1}", r.ours.0, r.ours.1)),
        ),
        Column::new(
            "llama.cpp: fastest file, tok/s".into(),
            text(&|r| format!("{} {:.1}", r.theirs.0, r.theirs.1)),
        ),
        Column::new(
            "best against best".into(),
            text(&|r| format!("{:.2}×", r.ratio())),
        ),
        Column::new(
            "same file, ours / llama.cpp".into(),
            text(&|r| {
                r.same_file
                    .iter()
                    .map(|(f, x)| format!("{f} {x:.2}×"))
                    .collect::<Vec<_>>()
                    .join(" · ")
            }),
        ),
    ])?;
    Ok(Table::new(
        "billion-llm against llama.cpp, each on its fastest file",
        frame,
    )
    .with_note(format!(
        "Medians of {file}: {} with our {} kernels, the engines taking turns run by run \
             (llama-cpp-python, same machine, same files). SmolLM2's Q4_K_M and Q6_K and \
             TinyLlama's Q4_K_M were made by llama.cpp's own quantizer; TinyLlama is its \
             architecture with random weights, which cost what the trained ones do.",
        run.hardware.cpu, run.instruction_set
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, ours: f64, theirs: Option<f64>) -> String {
        let speed = |v: f64| {
            format!(
                r#"{{"prefill_tokens_per_s": {{"median": {}, "runs": []}},
                    "decode_tokens_per_s": {{"median": {v}, "mean": 0, "std": 0, "runs": []}}}}"#,
                10.0 * v
            )
        };
        format!(
            r#"{{"name": "{name}", "prompt_tokens": 64, "threads": 2,
                "billion_llm": {}, "llama_cpp": {}}}"#,
            speed(ours),
            theirs.map_or("null".into(), speed)
        )
    }

    fn run(cases: &[String]) -> SpeedRun {
        serde_json::from_str(&format!(
            r#"{{"timestamp": "t", "instruction_set": "AVX2", "hardware": {{"cpu": "x"}},
                "cases": [{}]}}"#,
            cases.join(",")
        ))
        .unwrap()
    }

    #[test]
    fn each_engine_is_taken_on_its_own_fastest_file() {
        let r = run(&[
            case("SmolLM2-135M-Instruct Q4_1 (GGUF)", 150.0, Some(80.0)),
            case(
                "SmolLM2-135M-Instruct Q4_K_M (llama.cpp's quantizer)",
                120.0,
                Some(100.0),
            ),
            case(
                "TinyLlama-1.1B architecture, random weights, q4_0",
                40.0,
                Some(30.0),
            ),
            case(
                "TinyLlama-1.1B architecture, random weights, f32",
                5.0,
                Some(50.0),
            ),
        ]);
        assert_eq!(r.cases[1].model(), "SmolLM2-135M");
        assert_eq!(r.cases[1].format(), "Q4_K_M");
        assert_eq!(r.cases[2].model(), "TinyLlama-1.1B");
        assert_eq!(r.cases[2].format(), "q4_0");
        let rows = best_against_best(&r);
        let decode = rows
            .iter()
            .find(|b| b.model == "SmolLM2-135M" && b.phase == Phase::Decode)
            .unwrap();
        assert_eq!(decode.ours, ("Q4_1".to_string(), 150.0));
        assert_eq!(decode.theirs, ("Q4_K_M".to_string(), 100.0));
        assert_eq!(decode.ratio(), 1.5);
        assert_eq!(decode.same_file.len(), 2);
        // The f32 reference is nobody's fastest file, even where it is faster.
        let tiny = rows
            .iter()
            .find(|b| b.model == "TinyLlama-1.1B" && b.phase == Phase::Decode)
            .unwrap();
        assert_eq!(tiny.theirs.0, "q4_0");
        assert_eq!(engines_table(&r).unwrap().rows().len(), 4);
    }

    #[test]
    fn the_table_comes_from_a_run_with_both_engines_on_every_smollm2_file() {
        let full = run(&[
            case("SmolLM2-135M-Instruct Q4_1 (GGUF)", 150.0, Some(80.0)),
            case(
                "SmolLM2-135M-Instruct Q4_K_M (llama.cpp's quantizer)",
                120.0,
                Some(100.0),
            ),
        ]);
        let ours_only = run(&[
            case("SmolLM2-135M-Instruct Q4_1 (GGUF)", 150.0, None),
            case(
                "SmolLM2-135M-Instruct Q4_K_M (llama.cpp's quantizer)",
                120.0,
                None,
            ),
        ]);
        let no_k_quants = run(&[case("SmolLM2-135M-Instruct Q4_1 (GGUF)", 150.0, Some(80.0))]);
        let runs = vec![full, ours_only.clone(), no_k_quants.clone()];
        // The newest two lack llama.cpp or the K file: the older full run is the one.
        assert!(latest_comparable(&runs).unwrap().cases[0]
            .llama_cpp
            .is_some());
        assert!(latest_comparable(&[ours_only, no_k_quants]).is_none());
    }
}
