//! Did training teach the task? Greedy answers to held-out examples, scored by code.
//!
//! The loss going down says the model got better at predicting the training answers; it does
//! not say the model now does the task on examples it never saw. This module asks the model
//! each held-out question (through its chat template, greedy, as `billion-llm chat` would) and
//! scores the answer against the reference with a [`Metric`]. The same questions are asked in
//! three ways, the rows of the fine-tuning Short's before/after table: the base model plainly,
//! the base model with a few training examples in the prompt (few-shot prompting, the cheap
//! alternative to training), and the base model with the trained adapter.

use crate::hub::chat_template::Message;
use crate::hub::loader::LoadedModel;
use crate::model::generation::{generate, GenerateOptions};
use crate::report::Table;
use anyhow::{bail, Result};
use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How an answer is compared with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The answer equals the reference, up to surrounding and repeated whitespace.
    ExactMatch,
    /// The answer is a JSON object (a markdown code fence around it is allowed) with exactly the
    /// reference's keys and values; partial credit per field.
    JsonFields,
}

impl Metric {
    /// [`Metric::JsonFields`] when every reference answer is a JSON object, else exact match.
    pub fn detect(references: &[&str]) -> Self {
        let all_objects = !references.is_empty()
            && references
                .iter()
                .all(|r| serde_json::from_str::<serde_json::Value>(r).is_ok_and(|v| v.is_object()));
        if all_objects {
            Metric::JsonFields
        } else {
            Metric::ExactMatch
        }
    }

    /// Scores one answer.
    pub fn score(self, reference: &str, answer: &str) -> Score {
        match self {
            Metric::ExactMatch => {
                let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
                let correct = norm(reference) == norm(answer);
                Score {
                    correct,
                    valid: true,
                    fields: if correct { 1.0 } else { 0.0 },
                }
            }
            Metric::JsonFields => {
                let Ok(serde_json::Value::Object(expected)) =
                    serde_json::from_str::<serde_json::Value>(reference)
                else {
                    return Score::default();
                };
                let Ok(serde_json::Value::Object(got)) =
                    serde_json::from_str::<serde_json::Value>(strip_code_fence(answer))
                else {
                    return Score::default();
                };
                let right = expected
                    .iter()
                    .filter(|(k, v)| got.get(*k) == Some(v))
                    .count();
                Score {
                    correct: right == expected.len() && got.len() == expected.len(),
                    valid: true,
                    fields: right as f64 / expected.len().max(1) as f64,
                }
            }
        }
    }

    /// What "valid" means for this metric, for table headers.
    fn valid_label(self) -> &'static str {
        match self {
            Metric::ExactMatch => "answered",
            Metric::JsonFields => "valid JSON object",
        }
    }
}

/// The text inside a markdown code fence (```` ```json ... ``` ````), or the trimmed text.
fn strip_code_fence(answer: &str) -> &str {
    let t = answer.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    // Drop the language tag line, then everything from the closing fence on.
    let body = rest.split_once('\n').map_or("", |(_, b)| b);
    body.split("```").next().unwrap_or("").trim()
}

/// One answer's score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Entirely right.
    pub correct: bool,
    /// In the expected form (for JSON: a JSON object), right or not.
    pub valid: bool,
    /// The fraction of the reference's fields that are right (1 or 0 for exact match).
    pub fields: f64,
}

/// One held-out question and the answer given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// The last user message (what was asked).
    pub question: String,
    pub reference: String,
    pub answer: String,
    pub score: Score,
}

/// One row of the before/after table: a way of asking, over all held-out examples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub label: String,
    pub metric: Metric,
    pub examples: usize,
    /// Fraction entirely right.
    pub correct: f64,
    /// Fraction in the expected form.
    pub valid: f64,
    /// Mean fraction of fields right.
    pub fields: f64,
    /// Prompt tokens per question, on average (few-shot prompts are longer).
    pub mean_prompt_tokens: f64,
    /// Seconds per question, reading and answering (absent in files from before 2026-11-30).
    #[serde(default)]
    pub seconds_per_answer: Option<f64>,
    /// Every answer (a results file keeps the first few: see [`Evaluation::with_samples`]).
    pub samples: Vec<Sample>,
}

impl Evaluation {
    /// This row with only its first `n` answers, for a results file.
    pub fn with_samples(&self, n: usize) -> Self {
        Self {
            samples: self.samples.iter().take(n).cloned().collect(),
            ..self.clone()
        }
    }
}

/// The reference answer of a held-out conversation (its last message, which must be the
/// assistant's) and the messages before it.
pub fn split_reference(conversation: &[Message]) -> Result<(&[Message], &str)> {
    match conversation.split_last() {
        Some((last, asked)) if last.role == "assistant" && !asked.is_empty() => {
            Ok((asked, last.content.as_str()))
        }
        _ => bail!(
            "a held-out example must end with the assistant's answer after at least one message"
        ),
    }
}

/// Asks `model` every held-out question, after the `shots` conversations (empty: plainly), and
/// scores the greedy answers. `max_new_tokens` is added to each reference's length in tokens.
pub fn evaluate(
    label: &str,
    loaded: &mut LoadedModel,
    heldout: &[Vec<Message>],
    shots: &[Vec<Message>],
    metric: Metric,
    extra_tokens: usize,
) -> Result<Evaluation> {
    // Asked as the examples were rendered for training.
    let template = loaded.template_or_plain()?;
    let tokenizer = loaded.tokenizer()?.clone();
    let context = loaded.model.config().max_position_embeddings;
    let mut samples = Vec::with_capacity(heldout.len());
    let mut prompt_tokens = 0usize;
    // What the KV cache holds. The questions share their beginning (the system prompt, and with
    // few-shot prompting every example), which is read once, as a chat session reuses it.
    let mut cached: Vec<u32> = Vec::new();
    loaded.model.reset_cache();
    let start = Instant::now();
    for conversation in heldout {
        let (asked, reference) = split_reference(conversation)?;
        let mut messages: Vec<Message> = shots.iter().flatten().cloned().collect();
        messages.extend_from_slice(asked);
        let text = template.render(&messages, true)?;
        let ids = tokenizer.encode(&text, false)?;
        let max_new_tokens = tokenizer.encode(reference, false)?.len() + extra_tokens;
        if ids.len() + max_new_tokens > context {
            bail!(
                "a held-out prompt of {} tokens (with {} examples before it) does not fit the \
                 context of {context} tokens: use fewer --few-shot examples",
                ids.len(),
                shots.len()
            );
        }
        prompt_tokens += ids.len();
        // At least one token must be read to get logits.
        let common = cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        loaded.model.truncate_cache(common);
        // A plain transcript's answer ends where the model starts the next `User:` turn (a
        // base model seldom writes the end-of-text token on its own).
        let turn_end = template.is_plain_transcript().then_some("\nUser:");
        let stop = Arc::new(AtomicBool::new(false));
        let options = GenerateOptions {
            max_new_tokens,
            stop: Some(stop.clone()),
            ..GenerateOptions::default()
        };
        let mut so_far = Vec::new();
        let generation = generate(&mut loaded.model, &ids[common..], &options, |t| {
            if let Some(end) = turn_end {
                so_far.push(t);
                if tokenizer.decode(&so_far, true)?.contains(end) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        // Every generated token but the last was fed back into the cache (a stopped generation
        // fed the last one too: the cache then holds one token more than `cached` says).
        cached = ids.clone();
        cached.extend_from_slice(&generation.tokens[..generation.tokens.len().saturating_sub(1)]);
        let mut answer = tokenizer.decode(&generation.tokens, true)?;
        if let Some(at) = turn_end.and_then(|end| answer.find(end)) {
            answer.truncate(at);
        }
        let answer = answer.trim().to_string();
        let score = metric.score(reference, &answer);
        samples.push(Sample {
            question: asked.last().map(|m| m.content.clone()).unwrap_or_default(),
            reference: reference.to_string(),
            answer,
            score,
        });
    }
    loaded.model.reset_cache();
    let n = samples.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    Ok(Evaluation {
        label: label.to_string(),
        metric,
        examples: samples.len(),
        correct: mean(&|s| f64::from(u8::from(s.score.correct))),
        valid: mean(&|s| f64::from(u8::from(s.score.valid))),
        fields: mean(&|s| s.score.fields),
        mean_prompt_tokens: prompt_tokens as f64 / n,
        seconds_per_answer: Some(start.elapsed().as_secs_f64() / n),
        samples,
    })
}

/// The before/after table: one row per way of asking.
pub fn comparison_table(rows: &[Evaluation]) -> Result<Table> {
    let metric = rows.first().map_or(Metric::ExactMatch, |r| r.metric);
    let pct = |f: &dyn Fn(&Evaluation) -> f64| -> Vec<f64> {
        rows.iter().map(|r| 100.0 * f(r)).collect()
    };
    let frame = DataFrame::new_infer_height(vec![
        Column::new(
            "asked".into(),
            rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "prompt tokens".into(),
            rows.iter()
                .map(|r| r.mean_prompt_tokens)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "s per answer".into(),
            rows.iter()
                .map(|r| r.seconds_per_answer)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            format!("{} %", metric.valid_label()).into(),
            pct(&|r| r.valid),
        ),
        Column::new("fields right %".into(), pct(&|r| r.fields)),
        Column::new("all right %".into(), pct(&|r| r.correct)),
    ])?;
    let n = rows.first().map_or(0, |r| r.examples);
    Ok(Table::new(format!("{n} held-out examples, greedy answers"), frame).with_decimals(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: &str = r#"{"name": "Ines Park", "age": 41, "city": "Oslo", "occupation": "chef"}"#;

    #[test]
    fn json_fields_scores_keys_and_values() {
        let m = Metric::JsonFields;
        assert_eq!(
            m.score(REF, REF),
            Score {
                correct: true,
                valid: true,
                fields: 1.0
            }
        );
        // Key order does not matter; a fence around the object is allowed.
        let fenced = "```json\n{\"age\": 41, \"city\": \"Oslo\", \"occupation\": \"chef\", \"name\": \"Ines Park\"}\n```";
        assert!(m.score(REF, fenced).correct);
        // The age as a string is a wrong field; an extra key spoils "all right".
        let s = m.score(
            REF,
            r#"{"name": "Ines Park", "age": "41", "city": "Oslo", "occupation": "chef"}"#,
        );
        assert!(s.valid && !s.correct && (s.fields - 0.75).abs() < 1e-12);
        let s = m.score(
            REF,
            r#"{"name": "Ines Park", "age": 41, "city": "Oslo", "occupation": "chef", "x": 1}"#,
        );
        assert!(s.valid && !s.correct && s.fields == 1.0);
        // Prose is not JSON.
        assert_eq!(
            m.score(REF, "Ines Park is a chef from Oslo."),
            Score::default()
        );
    }

    #[test]
    fn exact_match_ignores_whitespace_only() {
        let m = Metric::ExactMatch;
        assert!(m.score("Paris", "  Paris\n").correct);
        assert!(m.score("New  York", "New York").correct);
        assert!(!m.score("Paris", "paris").correct);
    }

    #[test]
    fn detect_picks_json_only_when_every_reference_is_an_object() {
        assert_eq!(Metric::detect(&[REF, "{}"]), Metric::JsonFields);
        assert_eq!(Metric::detect(&[REF, "Paris"]), Metric::ExactMatch);
        assert_eq!(Metric::detect(&["[1, 2]"]), Metric::ExactMatch);
        assert_eq!(Metric::detect(&[]), Metric::ExactMatch);
    }

    #[test]
    fn the_reference_is_the_last_assistant_message() {
        let c = vec![Message::new("user", "q"), Message::new("assistant", "a")];
        let (asked, reference) = split_reference(&c).unwrap();
        assert_eq!((asked.len(), reference), (1, "a"));
        assert!(split_reference(&c[..1]).is_err());
        assert!(split_reference(&c[1..]).is_err());
    }
}
