//! Did training teach the task? Greedy answers to held-out examples, scored by code.
//!
//! The loss going down says the model got better at predicting the training answers; it does
//! not say the model now does the task on examples it never saw. This module asks the model
//! each held-out question (through its chat template, greedy, as `billion-llm chat` would) and
//! scores the answer against the reference with a [`Metric`]. The same questions are asked in
//! several ways, the rows of the fine-tuning Short's before/after table: the base model plainly,
//! the base model with training examples in the prompt (few-shot prompting, the cheap
//! alternative to training), and the base model with the trained adapter. Examples that carry
//! tags (a template never trained on, two people in one sentence) are also scored per tag.
//!
//! A baseline is not cut short: an answer may run to four times its reference's length plus 64
//! tokens, and stops early only when it ends, or, for JSON, once its first JSON value closes.

use crate::finetune::data::Labeled;
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
    /// The answer's first JSON value (prose or a markdown code fence around it is allowed) has
    /// the reference's shape, an object or a list of objects, with exactly its keys and values;
    /// partial credit per field.
    JsonFields,
}

impl Metric {
    /// [`Metric::JsonFields`] when every reference answer is a JSON object or a list of
    /// objects, else exact match.
    pub fn detect(references: &[&str]) -> Self {
        let all_records = !references.is_empty()
            && references.iter().all(|r| {
                serde_json::from_str::<serde_json::Value>(r)
                    .ok()
                    .and_then(|v| records(&v).map(|_| ()))
                    .is_some()
            });
        if all_records {
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
                let Some(expected) = serde_json::from_str(reference).ok().and_then(records_owned)
                else {
                    return Score::default();
                };
                let Some(got) = first_json(answer) else {
                    return Score::default();
                };
                let total: usize = expected.iter().map(|e| e.len()).sum();
                // A list where one object is expected (or the other way round) is valid JSON
                // with no field right.
                let same_shape = got.is_array() == reference_is_list(reference);
                let got = if same_shape { records_owned(got) } else { None };
                let Some(got) = got else {
                    return Score {
                        valid: true,
                        ..Score::default()
                    };
                };
                let right: usize = expected
                    .iter()
                    .zip(&got)
                    .map(|(e, g)| e.iter().filter(|(k, v)| g.get(*k) == Some(v)).count())
                    .sum();
                let exact_keys = got.len() == expected.len()
                    && expected.iter().zip(&got).all(|(e, g)| e.len() == g.len());
                Score {
                    correct: right == total && exact_keys,
                    valid: true,
                    fields: right as f64 / total.max(1) as f64,
                }
            }
        }
    }

    /// What "valid" means for this metric, for table headers.
    fn valid_label(self) -> &'static str {
        match self {
            Metric::ExactMatch => "answered",
            Metric::JsonFields => "valid JSON",
        }
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

/// The objects of a record answer: the object itself, or every element of a list of objects.
fn records(value: &serde_json::Value) -> Option<Vec<&Object>> {
    match value {
        serde_json::Value::Object(o) => Some(vec![o]),
        serde_json::Value::Array(items) if !items.is_empty() => {
            items.iter().map(|i| i.as_object()).collect()
        }
        _ => None,
    }
}

/// [`records`], owned.
fn records_owned(value: serde_json::Value) -> Option<Vec<Object>> {
    records(&value).map(|r| r.into_iter().cloned().collect())
}

fn reference_is_list(reference: &str) -> bool {
    reference.trim_start().starts_with('[')
}

/// The first JSON object or list in `answer`, whatever comes before or after it (prose, a
/// markdown code fence): what a reader would take as the model's answer. Brackets that start no
/// JSON (`[note]`) are skipped; `None` when there is none, or the first one is unfinished.
pub fn first_json(answer: &str) -> Option<serde_json::Value> {
    for (at, _) in answer
        .char_indices()
        .filter(|(_, c)| matches!(c, '{' | '['))
    {
        let mut values =
            serde_json::Deserializer::from_str(&answer[at..]).into_iter::<serde_json::Value>();
        match values.next()? {
            Ok(value) => return Some(value),
            Err(e) if e.is_eof() => return None,
            Err(_) => continue,
        }
    }
    None
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
    /// The example's tags ([`crate::finetune::data::Labeled`]).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The answer reached the token limit before it ended (a baseline cut short).
    #[serde(default)]
    pub cut: bool,
}

/// The score of the examples that carry one tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagScore {
    pub tag: String,
    pub examples: usize,
    /// Fraction entirely right.
    pub correct: f64,
    /// Mean fraction of fields right.
    pub fields: f64,
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
    /// Fraction of answers that hit the token limit before they ended.
    #[serde(default)]
    pub cut: f64,
    /// The score per tag, tags in order of first appearance.
    #[serde(default)]
    pub by_tag: Vec<TagScore>,
    /// Every answer (a `finetune` results file keeps the first few: see
    /// [`Evaluation::with_samples`]).
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

    /// The score of the examples tagged `tag`, if any are.
    pub fn tag(&self, tag: &str) -> Option<&TagScore> {
        self.by_tag.iter().find(|t| t.tag == tag)
    }
}

/// The scores per tag of `samples`, tags in order of first appearance.
fn scores_by_tag(samples: &[Sample]) -> Vec<TagScore> {
    let mut tags: Vec<&str> = Vec::new();
    for t in samples.iter().flat_map(|s| &s.tags) {
        if !tags.contains(&t.as_str()) {
            tags.push(t);
        }
    }
    tags.into_iter()
        .map(|tag| {
            let group: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.tags.iter().any(|t| t == tag))
                .collect();
            let n = group.len() as f64;
            TagScore {
                tag: tag.to_string(),
                examples: group.len(),
                correct: group.iter().filter(|s| s.score.correct).count() as f64 / n,
                fields: group.iter().map(|s| s.score.fields).sum::<f64>() / n,
            }
        })
        .collect()
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
/// scores the greedy answers.
pub fn evaluate(
    label: &str,
    loaded: &mut LoadedModel,
    heldout: &[Labeled],
    shots: &[Vec<Message>],
    metric: Metric,
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
    for example in heldout {
        let (asked, reference) = split_reference(&example.messages)?;
        let mut messages: Vec<Message> = shots.iter().flatten().cloned().collect();
        messages.extend_from_slice(asked);
        let text = template.render(&messages, true)?;
        let ids = tokenizer.encode(&text, false)?;
        let max_new_tokens = 4 * tokenizer.encode(reference, false)?.len() + 64;
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
            so_far.push(t);
            let text = tokenizer.decode(&so_far, true)?;
            let turn_over = turn_end.is_some_and(|end| text.contains(end));
            let json_closed = metric == Metric::JsonFields && first_json(&text).is_some();
            if turn_over || json_closed {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(())
        })?;
        let cut = !generation.stopped_at_eos
            && !generation.interrupted
            && generation.tokens.len() >= max_new_tokens;
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
            tags: example.tags.clone(),
            cut,
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
        cut: mean(&|s| f64::from(u8::from(s.cut))),
        by_tag: scores_by_tag(&samples),
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
        Column::new("cut by the limit %".into(), pct(&|r| r.cut)),
        Column::new("fields right %".into(), pct(&|r| r.fields)),
        Column::new("all right %".into(), pct(&|r| r.correct)),
    ])?;
    let n = rows.first().map_or(0, |r| r.examples);
    Ok(Table::new(format!("{n} held-out examples, greedy answers"), frame).with_decimals(1))
}

/// Each row's share of answers entirely right among the examples of each tag, a column per
/// tag (its example count in the header); the tags of the first row when `tags` is empty.
pub fn tag_table(rows: &[Evaluation], tags: &[&str]) -> Result<Table> {
    let tags: Vec<&TagScore> = match rows.first() {
        Some(first) if tags.is_empty() => first.by_tag.iter().collect(),
        Some(first) => tags.iter().filter_map(|t| first.tag(t)).collect(),
        None => Vec::new(),
    };
    let mut columns = vec![Column::new(
        "asked".into(),
        rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
    )];
    columns.push(Column::new(
        format!("all ({})", rows.first().map_or(0, |r| r.examples)).into(),
        rows.iter().map(|r| 100.0 * r.correct).collect::<Vec<_>>(),
    ));
    for t in tags {
        columns.push(Column::new(
            format!("{} ({})", t.tag, t.examples).into(),
            rows.iter()
                .map(|r| r.tag(&t.tag).map(|s| 100.0 * s.correct))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(Table::new(
        "Answers entirely right, % of the examples of each kind (how many in brackets)",
        DataFrame::new_infer_height(columns)?,
    )
    .with_decimals(1))
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
        // Key order does not matter; a fence or prose around the object is allowed.
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
        assert!(
            m.score(REF, &format!("Here it is [as asked]: {REF} Anything else?"))
                .correct
        );
        // Prose is not JSON.
        assert_eq!(
            m.score(REF, "Ines Park is a chef from Oslo."),
            Score::default()
        );
    }

    #[test]
    fn json_fields_scores_lists_and_nulls() {
        let m = Metric::JsonFields;
        let two = format!("[{REF}, {}]", REF.replace("Ines", "Omar"));
        assert!(m.score(&two, &two).correct);
        // One of two people right: half the fields; a single object where a list is due: none.
        let s = m.score(&two, &format!("[{REF}, {REF}]"));
        assert!(s.valid && !s.correct && (s.fields - 7.0 / 8.0).abs() < 1e-12);
        let s = m.score(&two, REF);
        assert!(s.valid && !s.correct && s.fields == 0.0);
        // A missing person spoils "all right" and leaves their fields wrong.
        let s = m.score(&two, &format!("[{REF}]"));
        assert!(!s.correct && s.fields == 0.5);
        // A field the sentence does not give must be null, not left out.
        let null_age =
            r#"{"name": "Ines Park", "age": null, "city": "Oslo", "occupation": "chef"}"#;
        assert!(m.score(null_age, null_age).correct);
        let s = m.score(
            null_age,
            r#"{"name": "Ines Park", "city": "Oslo", "occupation": "chef"}"#,
        );
        assert!(!s.correct && s.fields == 0.75);
    }

    #[test]
    fn the_first_json_value_is_found_only_when_complete() {
        assert_eq!(
            first_json("[note] {\"a\": 1} trailing"),
            Some(serde_json::json!({"a": 1}))
        );
        // The first value is unfinished: its inner object is not taken for the answer.
        assert_eq!(first_json("[{\"a\": 1}, {\"a\""), None);
        assert_eq!(
            first_json("```json\n[{\"a\": 1}]\n```"),
            Some(serde_json::json!([{"a": 1}]))
        );
        assert_eq!(first_json("no JSON here"), None);
    }

    #[test]
    fn scores_are_split_by_tag() {
        let sample = |tags: &[&str], correct: bool| Sample {
            question: String::new(),
            reference: String::new(),
            answer: String::new(),
            score: Score {
                correct,
                valid: true,
                fields: if correct { 1.0 } else { 0.5 },
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
            cut: false,
        };
        let by_tag = scores_by_tag(&[
            sample(&["seen", "two people"], true),
            sample(&["unseen"], false),
            sample(&["unseen", "two people"], true),
        ]);
        let names: Vec<&str> = by_tag.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(names, ["seen", "two people", "unseen"]);
        assert_eq!((by_tag[1].examples, by_tag[1].correct), (2, 1.0));
        assert_eq!(
            (by_tag[2].examples, by_tag[2].correct, by_tag[2].fields),
            (2, 0.5, 0.75)
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
        assert_eq!(
            Metric::detect(&[REF, &format!("[{REF}]")]),
            Metric::JsonFields
        );
        assert_eq!(Metric::detect(&[REF, "Paris"]), Metric::ExactMatch);
        assert_eq!(Metric::detect(&["[1, 2]"]), Metric::ExactMatch);
        assert_eq!(Metric::detect(&["[]"]), Metric::ExactMatch);
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
