//! `billion-llm speculative-bench`: speculative decoding against plain decoding of the same
//! target, on requests whose answers copy the prompt (an edit, a rewrite, a code change) and
//! on an open question, for every drafter and K schedule asked for.
//!
//! Each configuration runs `repetitions` times, and each time the plain and the speculative
//! decoding of the same prompt take turns (plain first on even repetitions, speculative first
//! on odd ones), so a slow moment of the machine hits both alike; the speedup is the median of
//! the per-pair ratios, with their spread. Greedy decoding, so both must write the same tokens.

use super::job::make_drafter;
use super::{KSchedule, SpeculativeDecoder, SpeculativeOutput};
use crate::eval::results::{write_json_atomic, RunHeader};
use crate::eval::speed::Measured;
use crate::hub::loader::{load, LoadOptions};
use crate::model::generation::{generate, GenerateOptions, SamplingParams};
use crate::model::Transformer;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A request of the benchmark, sent through the target's chat template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchTask {
    pub name: String,
    /// Whether the answer copies the prompt (where prompt lookup can help).
    pub grounded: bool,
    pub prompt: String,
}

/// Short 6's requests: three whose answers repeat most of the prompt, and an open question.
pub fn short_tasks() -> Vec<BenchTask> {
    let task = |name: &str, grounded: bool, prompt: &str| BenchTask {
        name: name.to_string(),
        grounded,
        prompt: prompt.to_string(),
    };
    vec![
        task(
            "edit",
            true,
            "Fix the spelling mistakes in this text and return the whole text otherwise \
             unchanged:\n\nThe quick brown fox jumpd over the lazy dog. The dog did not move, \
             and the fox ran into the forest to find its famly before the night fell. In the \
             forest, the fox met an old owl who lived in a tall tree. The owl asked the fox \
             where it was going so late, and the fox said that it was looking for its brothers \
             and sisters. The owl had seen them near the river, so the fox thanked the owl and \
             ran to the river as fast as it coud.",
        ),
        task(
            "rewrite",
            true,
            "Replace the name Anna with Maria everywhere in this text and return the whole \
             text:\n\nAnna opened the shop at eight o'clock, as she did every morning. The \
             first customer was an old man who wanted bread and milk. Anna gave him the \
             freshest loaf and asked about his garden. He told Anna that the tomatoes were \
             finally red. At noon Anna closed the shop for lunch and walked to the park, where \
             she fed the ducks and read a book until one o'clock.",
        ),
        task(
            "code",
            true,
            "Rename the variable x to total in this Python function and return the whole \
             function:\n\ndef summarize(values):\n    x = 0\n    count = 0\n    for v in \
             values:\n        if v is None:\n            continue\n        x = x + v\n        \
             count = count + 1\n    if count == 0:\n        return None\n    mean = x / count\n    \
             print(\"sum:\", x)\n    print(\"mean:\", mean)\n    return x, mean",
        ),
        task(
            "open",
            false,
            "What should I think about before adopting a dog?",
        ),
    ]
}

/// What `billion-llm speculative-bench` runs.
#[derive(Debug, Clone)]
pub struct BenchJob {
    /// The model decoded: zoo alias, hub id, local folder or .gguf.
    pub target: String,
    /// As `speculative --draft` (`lookup`, `layers:N`, or a draft model), each with the K
    /// schedules it runs with.
    pub drafters: Vec<(String, Vec<KSchedule>)>,
    pub tasks: Vec<BenchTask>,
    pub max_new_tokens: usize,
    pub repetitions: usize,
    pub threads: usize,
    pub results_dir: PathBuf,
}

/// One `results/speculative-bench-<timestamp>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRecord {
    #[serde(flatten)]
    pub header: RunHeader,
    /// The target as given (`--target`).
    pub model: String,
    pub max_new_tokens: usize,
    pub repetitions: usize,
    pub tasks: Vec<BenchTask>,
    pub runs: Vec<BenchRun>,
}

/// One task × drafter × schedule, over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRun {
    pub task: String,
    /// The drafter as `--draft` names it, and as it describes itself.
    pub draft: String,
    pub drafter: String,
    pub schedule: KSchedule,
    /// New tokens per generation (the same each time: greedy).
    pub new_tokens: usize,
    pub acceptance_rate: f64,
    /// New tokens per target forward.
    pub tokens_per_round: f64,
    pub rounds: usize,
    /// Rounds by how many drafts they verified (index 0: plain steps).
    pub rounds_by_k: Vec<usize>,
    pub drafted_at: Vec<usize>,
    pub accepted_at: Vec<usize>,
    pub speculative_tokens_per_s: Measured,
    pub plain_tokens_per_s: Measured,
    /// Speculative over plain decode speed, one ratio per pair of turns.
    pub speedup: Measured,
    /// Where the speculative tokens first differ from plain greedy decoding's, if they do (a
    /// near tie of the target's top two logits, rounded differently in a wider forward).
    pub first_difference: Option<usize>,
}

impl BenchRun {
    /// The measured figures of one drafter × schedule on a task, from the last repetition's
    /// output and every repetition's speeds.
    fn new(
        task: &str,
        draft: &str,
        drafter: String,
        schedule: KSchedule,
        out: &SpeculativeOutput,
        plain_tokens: &[u32],
        speeds: &[(f64, f64)],
    ) -> Self {
        Self {
            task: task.to_string(),
            draft: draft.to_string(),
            drafter,
            schedule,
            new_tokens: out.tokens.len(),
            acceptance_rate: out.acceptance_rate(),
            tokens_per_round: out.tokens_per_round(),
            rounds: out.rounds,
            rounds_by_k: out.rounds_by_k.clone(),
            drafted_at: out.drafted_at.clone(),
            accepted_at: out.accepted_at.clone(),
            speculative_tokens_per_s: Measured::new(speeds.iter().map(|s| s.0).collect()),
            plain_tokens_per_s: Measured::new(speeds.iter().map(|s| s.1).collect()),
            speedup: Measured::new(speeds.iter().map(|s| s.0 / s.1.max(1e-9)).collect()),
            first_difference: out
                .tokens
                .iter()
                .zip(plain_tokens)
                .position(|(a, b)| a != b)
                .or((out.tokens.len() != plain_tokens.len())
                    .then(|| out.tokens.len().min(plain_tokens.len()))),
        }
    }
}

/// Runs the benchmark and writes its results file; returns the file's path.
pub fn run_bench(job: &BenchJob) -> Result<PathBuf> {
    let mut target = load(&job.target, &LoadOptions::default())
        .with_context(|| format!("loading the target {}", job.target))?;
    let greedy = SamplingParams::default();
    let plain_opts = GenerateOptions {
        max_new_tokens: job.max_new_tokens,
        sampling: greedy,
        ignore_eos: false,
        stop: None,
    };
    let mut runs = Vec::new();
    for task in &job.tasks {
        let prompt = target
            .chat_prompt(&task.prompt)
            .with_context(|| format!("the {} request", task.name))?;
        for (draft, schedules) in &job.drafters {
            let mut drafter = make_drafter(draft, &target, &job.target)?;
            for &schedule in schedules {
                let mut speeds = Vec::with_capacity(job.repetitions);
                let mut last = None;
                for rep in 0..job.repetitions {
                    let plain = |model: &mut Transformer| {
                        model.reset_cache();
                        generate(model, &prompt, &plain_opts, |_| Ok(()))
                    };
                    let mut decoder = SpeculativeDecoder {
                        target: &mut target.model,
                        drafter: drafter.as_mut(),
                        schedule,
                        sampling: greedy,
                    };
                    let (out, plain) = if rep % 2 == 0 {
                        let plain = plain(decoder.target)?;
                        let out = decoder.generate(&prompt, job.max_new_tokens, |_, _| Ok(()))?;
                        (out, plain)
                    } else {
                        let out = decoder.generate(&prompt, job.max_new_tokens, |_, _| Ok(()))?;
                        (out, plain(decoder.target)?)
                    };
                    speeds.push((out.decode_tokens_per_s(), plain.decode_tokens_per_s()));
                    last = Some((out, plain.tokens));
                }
                let Some((out, plain_tokens)) = last else {
                    anyhow::bail!("give at least one repetition");
                };
                let run = BenchRun::new(
                    &task.name,
                    draft,
                    drafter.describe(),
                    schedule,
                    &out,
                    &plain_tokens,
                    &speeds,
                );
                eprintln!(
                    "{:8} {:28} K {:9}: acceptance {:3.0}%, {:.2} tokens/round, speedup {:.2}× \
                     (spread {:.2}–{:.2})",
                    run.task,
                    run.drafter,
                    schedule.label(),
                    100.0 * run.acceptance_rate,
                    run.tokens_per_round,
                    run.speedup.median,
                    run.speedup
                        .runs
                        .iter()
                        .cloned()
                        .fold(f64::INFINITY, f64::min),
                    run.speedup.runs.iter().cloned().fold(0.0, f64::max),
                );
                runs.push(run);
            }
        }
    }
    let record = BenchRecord {
        header: RunHeader::now(job.threads),
        model: job.target.clone(),
        max_new_tokens: job.max_new_tokens,
        repetitions: job.repetitions,
        tasks: job.tasks.clone(),
        runs,
    };
    let path = job
        .results_dir
        .join(record.header.file_name("speculative-bench"));
    write_json_atomic(&path, &record)?;
    Ok(path)
}

/// The model's file name without `.gguf`: how tables name a bench's target.
pub fn model_file_name(model: &str) -> String {
    Path::new(model)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(model)
        .trim_end_matches(".gguf")
        .to_string()
}
