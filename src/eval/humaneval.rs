//! HumanEval: complete a Python function from its signature and docstring, then run the
//! problem's unit tests on it. Generated code is untrusted, so it runs in a [`Sandbox`].
//!
//! Two prompt formats ([`Format`]): the raw completion of the prompt, which suits base models,
//! and the chat format of [`crate::eval::humaneval_chat`] for chat models. Greedy decoding gives
//! pass@1; [`Sampling`] draws n samples per problem for pass@k (Chen et al. 2021).

use crate::model::generation::SamplingParams;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The sandbox's types, re-exported: a HumanEval result is a sandboxed [`Execution`].
pub use crate::eval::sandbox::{executions_table, Execution, Isolation, Outcome, Sandbox};

/// One HumanEval problem, as in OpenAI's `HumanEval.jsonl.gz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

/// The default 20-problem subset, chosen to span difficulty: one-liners (strlen, add,
/// concatenate), short loops and string work, and three that small models rarely solve
/// (make_palindrome, find_zero, minPath).
pub const SUBSET: [&str; 20] = [
    "HumanEval/0",
    "HumanEval/2",
    "HumanEval/4",
    "HumanEval/7",
    "HumanEval/10",
    "HumanEval/12",
    "HumanEval/13",
    "HumanEval/15",
    "HumanEval/16",
    "HumanEval/23",
    "HumanEval/28",
    "HumanEval/29",
    "HumanEval/32",
    "HumanEval/34",
    "HumanEval/35",
    "HumanEval/45",
    "HumanEval/53",
    "HumanEval/55",
    "HumanEval/60",
    "HumanEval/129",
];

/// Where a completion ends: the next top-level statement after the function body.
pub const STOP_SEQUENCES: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// How a problem is put to the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The prompt as raw text to continue, cut at the next top-level statement (Codex's
    /// protocol, for base models). Results files written before formats were recorded used it.
    #[default]
    Completion,
    /// Through the model's chat template, the code taken from the answer's code block
    /// (EvalPlus's protocol for instruction-tuned models).
    Chat,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Completion => "completion",
            Format::Chat => "chat",
        }
    }

    /// Most new tokens per sample: a completion is the function's body, a chat answer
    /// rewrites the signature and the docstring as well before its body.
    pub fn max_new_tokens(self) -> usize {
        match self {
            Format::Completion => 384,
            Format::Chat => 512,
        }
    }
}

/// How many completions are drawn per problem, and how.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// n, the samples per problem.
    pub samples: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// Sample i of every problem is drawn with seed `seed + i`.
    pub seed: u64,
}

impl Default for Sampling {
    /// One greedy completion per problem: pass@1, what results files held before sampling.
    fn default() -> Self {
        Self {
            samples: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 42,
        }
    }
}

impl Sampling {
    /// Refuses settings that cannot estimate pass@k: no samples, or several greedy ones.
    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 {
            bail!(
                "--samples 0 draws no completion: give at least 1 (1 with the default greedy \
                 decoding is pass@1)"
            );
        }
        if self.temperature.is_nan() || self.temperature < 0.0 {
            bail!(
                "--temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            );
        }
        if self.temperature == 0.0 && self.samples > 1 {
            bail!(
                "--samples {} with --temperature 0: greedy decoding draws the same completion \
                 every time, so the samples would be identical; give a temperature (Chen et al. \
                 sample at 0.8 for pass@10) or --samples 1",
                self.samples
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The k reported: 1, 5 and 10, those not above n.
    pub fn ks(&self) -> Vec<usize> {
        [1, 5, 10]
            .into_iter()
            .filter(|&k| k <= self.samples)
            .collect()
    }

    /// The decoding of sample `i`.
    pub fn params(&self, i: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed + i as u64,
        }
    }

    /// "greedy", or "10 samples at T 0.8, top-p 0.95".
    pub fn describe(&self) -> String {
        if self.is_greedy() {
            return "greedy".into();
        }
        format!(
            "{} sample{} at T {}, top-p {}",
            self.samples,
            if self.samples == 1 { "" } else { "s" },
            self.temperature,
            self.top_p
        )
    }
}

/// Reads `HumanEval.jsonl.gz` (or an uncompressed `.jsonl`).
pub fn load_problems(path: &Path) -> Result<Vec<Problem>> {
    // The hub dataset openai/openai_humaneval stores the same records as Parquet.
    if crate::eval::parquet_rows::is_parquet(path) {
        return crate::eval::parquet_rows::read_rows(path);
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read HumanEval from {}: run `bash scripts/fetch-assets.sh` or pass --humaneval-file",
            path.display()
        )
    })?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("{} is not a valid gzip file", path.display()))?;
        text
    } else {
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?
    };
    let problems = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {}: not a HumanEval problem", path.display(), i + 1)
            })
        })
        .collect::<Result<Vec<Problem>>>()?;
    if problems.is_empty() {
        bail!("{} holds no problems", path.display());
    }
    Ok(problems)
}

/// The problems with the given ids, in that order; an unknown id is an error.
pub fn select<'a>(problems: &'a [Problem], ids: &[&str]) -> Result<Vec<&'a Problem>> {
    ids.iter()
        .map(|id| {
            problems
                .iter()
                .find(|p| p.task_id == *id)
                .with_context(|| format!("HumanEval has no problem {id}"))
        })
        .collect()
}

/// Cuts a completion at the first stop sequence.
pub fn truncate_at_stop(completion: &str) -> &str {
    let end = STOP_SEQUENCES
        .iter()
        .filter_map(|s| completion.find(s))
        .min()
        .unwrap_or(completion.len());
    &completion[..end]
}

/// The program that is run: the prompt, the completion, the tests, and the call of `check`.
pub fn program(problem: &Problem, completion: &str) -> String {
    format!(
        "{}{}\n\n{}\n\ncheck({})\n",
        problem.prompt, completion, problem.test, problem.entry_point
    )
}

/// The unbiased pass@k estimator of Chen et al. (2021) for a problem with `c` of `n` samples
/// passing: the chance that k samples drawn from the n without replacement include a passing
/// one, `1 - C(n-c, k) / C(n, k)`. Computed as `1 - prod_{i=n-c+1..n} (1 - k/i)`, which equals it
/// and never forms the binomials (they overflow for large n). NaN when k is 0 or above n, or c
/// above n.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n || c > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_stop_at_the_next_top_level_statement() {
        let c = "    return x + 1\n\n\ndef other():\n    pass\n";
        assert_eq!(truncate_at_stop(c), "    return x + 1\n\n");
        assert_eq!(
            truncate_at_stop("    return 1\nif __name__"),
            "    return 1"
        );
        assert_eq!(truncate_at_stop("    return 1"), "    return 1");
    }

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
        assert_eq!(pass_at_k(1, 0, 1), 0.0);
        // n=10, c=3, k=1: 3/10.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(10, 8, 5), 1.0);
    }
}
