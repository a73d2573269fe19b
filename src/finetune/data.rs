//! Training examples: alpaca records or chat conversations, rendered with the model's own chat
//! template and tokenized, with only the answers counted in the loss.
//!
//! The answer tokens are found by rendering the conversation up to each assistant turn twice:
//! with the generation prompt (everything the model is given) and with the answer (everything
//! it should produce). The text between the two is the answer, template tokens that close it
//! (`<|im_end|>`) included, so the model also learns where to stop. Everything else is masked,
//! as transformers does with the label -100.

use crate::hub::chat_template::{ChatTemplate, Message};
use crate::hub::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// One tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Per token: whether it is part of an answer, i.e. a target of the loss.
    pub trained: Vec<bool>,
}

impl Example {
    /// Whether any token after the first is an answer token (the first is never a target).
    fn has_targets(&self) -> bool {
        self.trained.iter().skip(1).any(|&t| t)
    }
}

/// A tokenized data file.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// Examples cut to `max_len` tokens.
    pub truncated: usize,
    /// Examples dropped because truncation left no answer token.
    pub dropped: usize,
}

impl Dataset {
    /// Tokens in all examples (prompt and answer).
    pub fn tokens(&self) -> usize {
        self.examples.iter().map(|e| e.ids.len()).sum()
    }
}

/// One line (or array element) of a data file: alpaca fields or a `messages` conversation,
/// optionally with `tags` (groups that evaluation scores apart, such as "unseen template") and
/// the `template` it was written from. Other fields (an `id`, a `category`) are ignored.
#[derive(Debug, Deserialize)]
struct Record {
    instruction: Option<String>,
    #[serde(default)]
    input: Option<String>,
    output: Option<String>,
    messages: Option<Vec<Message>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    template: Option<String>,
}

/// A conversation with the labels its record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled {
    pub messages: Vec<Message>,
    /// The groups it belongs to, scored apart in evaluation (empty: none).
    pub tags: Vec<String>,
    /// The sentence template it was made from, when the record says (few-shot prompts pick
    /// examples that cover every template).
    pub template: Option<String>,
}

impl From<Vec<Message>> for Labeled {
    fn from(messages: Vec<Message>) -> Self {
        Self {
            messages,
            tags: Vec::new(),
            template: None,
        }
    }
}

impl Record {
    fn into_labeled(mut self) -> Result<Labeled> {
        let tags = std::mem::take(&mut self.tags);
        let template = self.template.take();
        Ok(Labeled {
            messages: self.into_conversation()?,
            tags,
            template,
        })
    }

    fn into_conversation(self) -> Result<Vec<Message>> {
        if let Some(messages) = self.messages {
            if self.instruction.is_some() || self.output.is_some() {
                bail!("a record has either \"messages\" or \"instruction\"/\"output\", not both");
            }
            if let Some(bad) = messages
                .iter()
                .find(|m| !["system", "user", "assistant"].contains(&m.role.as_str()))
            {
                bail!(
                    "unknown role {:?} (use system, user or assistant)",
                    bad.role
                );
            }
            if !messages.iter().any(|m| m.role == "assistant") {
                bail!("the conversation has no assistant message to learn from");
            }
            return Ok(messages);
        }
        match (self.instruction, self.output) {
            (Some(instruction), Some(output)) => {
                // Alpaca's optional input is the material the instruction refers to.
                let user = match self.input.filter(|i| !i.trim().is_empty()) {
                    Some(input) => format!("{instruction}\n\n{input}"),
                    None => instruction,
                };
                Ok(vec![
                    Message::new("user", &user),
                    Message::new("assistant", &output),
                ])
            }
            _ => bail!(
                "expected alpaca fields \"instruction\" and \"output\" (\"input\" optional) or \
                 chat \"messages\""
            ),
        }
    }
}

/// The conversations of a data file: a JSON array of records, or JSON Lines (one record per
/// line). A malformed record is an error naming its line.
pub fn read_conversations(path: &Path) -> Result<Vec<Vec<Message>>> {
    Ok(read_labeled(path)?
        .into_iter()
        .map(|l| l.messages)
        .collect())
}

/// The conversations of a data file with their tags and templates ([`read_conversations`]).
pub fn read_labeled(path: &Path) -> Result<Vec<Labeled>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the data file {}", path.display()))?;
    let mut conversations = Vec::new();
    if text.trim_start().starts_with('[') {
        let records: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid JSON array", path.display()))?;
        for (i, value) in records.into_iter().enumerate() {
            let conversation = serde_json::from_value::<Record>(value)
                .map_err(anyhow::Error::from)
                .and_then(Record::into_labeled)
                .with_context(|| format!("{}: record {} of the array", path.display(), i + 1))?;
            conversations.push(conversation);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let conversation = serde_json::from_str::<Record>(line)
                .map_err(anyhow::Error::from)
                .and_then(Record::into_labeled)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))?;
            conversations.push(conversation);
        }
    }
    if conversations.is_empty() {
        bail!(
            "{} has no examples: give alpaca records (instruction, input, output) or chat \
             records (messages), as a JSON array or one JSON object per line",
            path.display()
        );
    }
    Ok(conversations)
}

/// Renders and tokenizes one conversation, marking its assistant answers as trained.
pub fn tokenize_conversation(
    messages: &[Message],
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
) -> Result<Example> {
    let mut ids = Vec::new();
    let mut trained = Vec::new();
    let mut done = String::new();
    let mut push = |text: &str, answer: bool| -> Result<()> {
        let piece = tokenizer.encode(text, false)?;
        trained.extend(std::iter::repeat_n(answer, piece.len()));
        ids.extend(piece);
        Ok(())
    };
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prompt = template.render(&messages[..i], true)?;
        let full = template.render(&messages[..=i], false)?;
        let (Some(asked), Some(answer)) = (
            prompt.strip_prefix(done.as_str()),
            full.strip_prefix(prompt.as_str()),
        ) else {
            bail!(
                "the chat template does not render this conversation as a growing text \
                 (each turn's rendering must start with the previous one), so the answer \
                 tokens cannot be found"
            );
        };
        push(asked, false)?;
        push(answer, true)?;
        done = full;
    }
    Ok(Example { ids, trained })
}

/// Tokenizes conversations, cutting each to `max_len` tokens.
pub fn tokenize(
    conversations: &[Vec<Message>],
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<Dataset> {
    if max_len < 2 {
        bail!("--max-len must be at least 2 tokens (one input, one target)");
    }
    let mut data = Dataset::default();
    for (i, c) in conversations.iter().enumerate() {
        let mut e = tokenize_conversation(c, template, tokenizer)
            .with_context(|| format!("example {}", i + 1))?;
        if e.ids.len() > max_len {
            e.ids.truncate(max_len);
            e.trained.truncate(max_len);
            data.truncated += 1;
        }
        if e.has_targets() {
            data.examples.push(e);
        } else {
            data.dropped += 1;
        }
    }
    if data.examples.is_empty() {
        bail!("no example has an answer token left within --max-len {max_len}: raise --max-len");
    }
    Ok(data)
}
