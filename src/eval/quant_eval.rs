//! What quantization costs in quality: a quantized model's next-token distributions against a
//! full-precision reference's, at every position of a real text.
//!
//! The measure is the one llama.cpp's maintainers rank quant types by
//! (`llama-perplexity --kl-divergence`): the KL divergence KL(P_ref ‖ P_quant) at each position
//! (its mean, and its 99th percentile for the rare positions where a quant goes badly wrong),
//! how often the two pick the same most likely token, and the perplexity of each on the text.
//! Perplexity alone hides errors that cancel; KL divergence does not.

use crate::eval::mmlu::{self, Dataset};
use crate::eval::results::RunHeader;
use crate::hub::loader::LoadedModel;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::path::Path;

/// One text to score, by name.
#[derive(Clone, Debug)]
pub struct EvalText {
    pub name: String,
    pub text: String,
}

/// The default texts, built from the assets the benchmarks already use, so nothing is
/// downloaded: English (MMLU questions, with their answers, of the subjects the benchmark does
/// not ask) and Python (the canonical solutions of the HumanEval problems outside its subset).
pub fn asset_texts(mmlu_file: &Path, humaneval_file: &Path) -> Result<Vec<EvalText>> {
    let dataset = Dataset::from_jsonl(mmlu_file)?;
    let mut english = String::new();
    for (subject, questions) in &dataset.test {
        if mmlu::DEFAULT_SUBJECTS.contains(&subject.as_str()) {
            continue;
        }
        for q in questions.iter().take(3) {
            english.push_str(&mmlu::format_question(q, true));
            english.push_str("\n\n");
        }
    }
    let mut code = String::new();
    for p in crate::eval::humaneval::load_problems(humaneval_file)? {
        if crate::eval::humaneval::SUBSET.contains(&p.task_id.as_str()) {
            continue;
        }
        code.push_str(&p.prompt);
        code.push_str(&p.canonical_solution);
        code.push_str("\n\n");
    }
    Ok(vec![
        EvalText {
            name: "mmlu-other-subjects".into(),
            text: english,
        },
        EvalText {
            name: "humaneval-solutions".into(),
            text: code,
        },
    ])
}

/// The scores over some positions.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Divergence {
    pub positions: usize,
    /// Mean KL(P_ref ‖ P_model) in nats.
    pub mean_kl: f64,
    /// Standard error of the mean KL divergence.
    pub mean_kl_stderr: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    /// Share of positions where both pick the same most likely token.
    pub top1_agreement: f64,
    pub perplexity_reference: f64,
    pub perplexity_model: f64,
}

/// Position-by-position sums behind a [`Divergence`].
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    kl: Vec<f64>,
    same_top: usize,
    nll_reference: f64,
    nll_model: f64,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    row.iter().map(|&v| v as f64 - log_z).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

impl Accumulator {
    /// Adds one position: both models' logits there, and the token that comes next in the text.
    pub fn add(&mut self, reference: &[f32], model: &[f32], next: u32) {
        let (lp, lq) = (log_softmax(reference), log_softmax(model));
        let kl: f64 = lp
            .iter()
            .zip(&lq)
            .map(|(&p, &q)| {
                if p.is_finite() {
                    p.exp() * (p - q)
                } else {
                    0.0
                }
            })
            .sum();
        self.kl.push(kl.max(0.0));
        self.same_top += usize::from(argmax(reference) == argmax(model));
        self.nll_reference -= lp[next as usize];
        self.nll_model -= lq[next as usize];
    }

    pub fn merge(&mut self, other: &Accumulator) {
        self.kl.extend_from_slice(&other.kl);
        self.same_top += other.same_top;
        self.nll_reference += other.nll_reference;
        self.nll_model += other.nll_model;
    }

    pub fn summary(&self) -> Divergence {
        let n = self.kl.len().max(1) as f64;
        let mean = self.kl.iter().sum::<f64>() / n;
        let var = self.kl.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let mut sorted = self.kl.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p99 = if sorted.is_empty() {
            0.0
        } else {
            sorted[((0.99 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
        };
        Divergence {
            positions: self.kl.len(),
            mean_kl: mean,
            mean_kl_stderr: (var / n).sqrt(),
            kl_p99: p99,
            kl_max: sorted.last().copied().unwrap_or(0.0),
            top1_agreement: self.same_top as f64 / n,
            perplexity_reference: (self.nll_reference / n).exp(),
            perplexity_model: (self.nll_model / n).exp(),
        }
    }
}

/// Cuts `tokens` into windows of at most `context` tokens, each opened with `bos` where the
/// model's tokenizer adds one, at most `max_windows` of them.
pub fn windows(
    tokens: &[u32],
    bos: Option<u32>,
    context: usize,
    max_windows: usize,
) -> Vec<Vec<u32>> {
    let body = context - usize::from(bos.is_some());
    tokens
        .chunks(body)
        .filter(|c| c.len() >= 2)
        .take(max_windows)
        .map(|c| bos.into_iter().chain(c.iter().copied()).collect())
        .collect()
}

/// The logits at every position of `window`, read from a fresh cache; the cache is left empty.
fn all_logits(model: &mut LoadedModel, window: &[u32]) -> Result<Vec<Vec<f32>>> {
    model.model.reset_cache();
    let x = Tensor::new(window, &Device::Cpu)?.unsqueeze(0)?;
    let logits = model.model.forward(&x)?.squeeze(0)?.to_vec2();
    model.model.reset_cache();
    Ok(logits?)
}

/// Scores `model` against `reference` at every position of `windows` (each position predicts
/// the next token of its window).
pub fn divergence(
    reference: &mut LoadedModel,
    model: &mut LoadedModel,
    windows: &[Vec<u32>],
) -> Result<Accumulator> {
    let mut acc = Accumulator::default();
    for w in windows {
        let (r, m) = (all_logits(reference, w)?, all_logits(model, w)?);
        if r[0].len() != m[0].len() {
            bail!(
                "the two models have different vocabularies ({} and {} tokens): compare a \
                 quantized file with the reference it was made from",
                r[0].len(),
                m[0].len()
            );
        }
        for pos in 0..w.len() - 1 {
            acc.add(&r[pos], &m[pos], w[pos + 1]);
        }
    }
    Ok(acc)
}

/// The scores on one text.
#[derive(Clone, Debug, Serialize)]
pub struct TextScore {
    pub text: String,
    pub tokens: usize,
    #[serde(flatten)]
    pub divergence: Divergence,
}

/// A `quant-eval` run: `results/quant-eval-<timestamp>.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QuantEvalRun {
    #[serde(flatten)]
    pub header: RunHeader,
    pub reference: String,
    pub model: String,
    /// `general.file_type` of the quantized file, by name where it is one of ours.
    pub file_type: Option<String>,
    pub model_file_bytes: u64,
    pub bits_per_weight: f64,
    pub context: usize,
    pub texts: Vec<TextScore>,
    pub overall: Divergence,
}

/// Scores `model` against `reference` on each text (up to `max_windows` windows of `context`
/// tokens each).
pub fn evaluate(
    reference: &mut LoadedModel,
    model: &mut LoadedModel,
    texts: &[EvalText],
    context: usize,
    max_windows: usize,
) -> Result<(Vec<TextScore>, Divergence)> {
    if context < 2 {
        bail!("--context must be at least 2 tokens");
    }
    let tokenizer = reference.tokenizer()?;
    let with = tokenizer.encode("a", true)?;
    let without = tokenizer.encode("a", false)?;
    let bos = (with.len() > without.len()).then(|| with[0]);
    let mut scores = Vec::new();
    let mut all = Accumulator::default();
    for t in texts {
        let tokens = reference.tokenizer()?.encode(&t.text, false)?;
        let ws = windows(&tokens, bos, context, max_windows);
        if ws.is_empty() {
            bail!("the text {} is too short to score", t.name);
        }
        let acc = divergence(reference, model, &ws)?;
        all.merge(&acc);
        scores.push(TextScore {
            text: t.name.clone(),
            tokens: ws.iter().map(Vec::len).sum(),
            divergence: acc.summary(),
        });
    }
    Ok((scores, all.summary()))
}

/// Loads both GGUF files, scores `model` against `reference` on `texts` and writes
/// `results/quant-eval-<timestamp>.json`. Returns the run and the file written.
pub fn run(
    reference: &Path,
    model: &Path,
    texts: &[EvalText],
    context: usize,
    max_windows: usize,
    threads: usize,
    results_dir: &Path,
) -> Result<(QuantEvalRun, std::path::PathBuf)> {
    let header = RunHeader::now(threads);
    let opts = crate::hub::loader::LoadOptions::default();
    let load = |p: &Path| crate::hub::loader::load(&p.to_string_lossy(), &opts);
    let (mut r, mut m) = (load(reference)?, load(model)?);
    let (scores, overall) = evaluate(&mut r, &mut m, texts, context, max_windows)?;
    let size = crate::quantize::GgufSize::of(model)?;
    let run = QuantEvalRun {
        reference: reference.display().to_string(),
        model: model.display().to_string(),
        file_type: size.file_type.clone(),
        model_file_bytes: std::fs::metadata(model)?.len(),
        bits_per_weight: size.bits_per_weight(),
        context,
        texts: scores,
        overall,
        header,
    };
    let path = results_dir.join(run.header.file_name("quant-eval"));
    crate::eval::results::write_json_atomic(&path, &run)?;
    Ok((run, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_top1_and_perplexity_match_a_hand_computation() {
        // Reference p = (1/4, 1/2, 1/4); model q uniform over three tokens.
        let reference = [0.0, 2f32.ln(), 0.0];
        let model = [1.0f32, 1.0, 1.0];
        let mut acc = Accumulator::default();
        acc.add(&reference, &model, 1);
        // KL = 1/4 ln(3/4) + 1/2 ln(3/2) + 1/4 ln(3/4) = 1/2 ln(9/8).
        let d = acc.summary();
        assert!(
            (d.mean_kl - 0.5 * (9.0f64 / 8.0).ln()).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(d.top1_agreement, 0.0);
        assert!((d.perplexity_reference - 2.0).abs() < 1e-5);
        assert!((d.perplexity_model - 3.0).abs() < 1e-5);
        // The same distribution: no divergence, same top token.
        acc.add(&reference, &[5.0, 5.0 + 2f32.ln(), 5.0], 0);
        let d = acc.summary();
        assert_eq!(d.positions, 2);
        assert!((d.mean_kl - 0.25 * (9.0f64 / 8.0).ln()).abs() < 1e-6);
        assert_eq!(d.top1_agreement, 0.5);
        assert!((d.kl_max - 0.5 * (9.0f64 / 8.0).ln()).abs() < 1e-6);
    }

    #[test]
    fn windows_open_with_bos_and_never_exceed_the_context() {
        let tokens: Vec<u32> = (10..30).collect();
        let ws = windows(&tokens, Some(1), 8, 10);
        assert!(ws.iter().all(|w| w.len() <= 8 && w[0] == 1));
        assert_eq!(ws.iter().map(|w| w.len() - 1).sum::<usize>(), 20);
        assert_eq!(windows(&tokens, None, 8, 2).len(), 2);
    }
}
