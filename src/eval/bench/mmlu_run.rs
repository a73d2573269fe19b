//! MMLU in `bench`: the hub's copy of the questions, and one model's 5-shot score over the
//! selected subjects.

use super::schema::MmluResult;
use super::settings::BenchSettings;
use crate::eval::mmlu::{self, Dataset, Scorer};
use crate::hub::client::HubClient;
use crate::hub::loader::LoadedModel;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

/// The hub dataset MMLU is read from, and its files (test questions; dev: five shots per
/// subject).
pub const MMLU_DATASET: &str = "cais/mmlu";
pub const MMLU_TEST_FILE: &str = "all/test-00000-of-00001.parquet";
pub const MMLU_DEV_FILE: &str = "all/dev-00000-of-00001.parquet";

/// MMLU's test and dev splits from the hub (or its local cache), as (test, dev) paths.
pub fn hub_mmlu(hub: &HubClient) -> Result<(PathBuf, PathBuf)> {
    let repo = hub.dataset(MMLU_DATASET);
    Ok((repo.get(MMLU_TEST_FILE)?, repo.get(MMLU_DEV_FILE)?))
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
    let bar = s.progress_bar(jobs.len(), "MMLU questions");
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
