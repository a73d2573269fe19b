//! The shape of `results/bench-*.json`: what one run records per model (MMLU, HumanEval,
//! speed, memory) and about the machine. The workbook reads these files back, so a field only
//! ever gains a `#[serde(default)]` for files written before it existed.

use crate::eval::humaneval::{Format, Isolation, Outcome, Sampling};
use crate::eval::mmlu::{Scored, Summary};
use crate::eval::results::RunHeader;
use crate::eval::speed::Measured;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// When, from which commit, and on what machine (its device and GPU included).
    #[serde(flatten)]
    pub header: RunHeader<BenchHardware>,
    /// False in the `.partial.json` written while a run is under way.
    pub complete: bool,
    pub models: BTreeMap<String, ModelResult>,
    pub versions: BTreeMap<String, String>,
}
