//! A multi-turn chat with one model: the conversation, its chat template, and a KV cache that
//! is reused from turn to turn.
//!
//! Each turn renders the whole conversation through the model's template, as chat models were
//! trained, but only the tokens after the longest prefix already in the KV cache are read again
//! (the cache is rolled back to that prefix). When the conversation no longer fits in the
//! context, the oldest turns are dropped and the caller is told how many.

use crate::hub::chat_template::{ChatTemplate, Message};
use crate::hub::loader::LoadedModel;
use crate::model::generation::{generate, GenerateOptions};
use crate::report::Table;
use anyhow::{bail, Result};
use polars::prelude::{Column, DataFrame};
use serde::Serialize;

/// What one answer cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TurnStats {
    /// Tokens of the whole rendered conversation up to the answer.
    pub prompt_tokens: usize,
    /// Of those, the tokens actually read this turn (the rest came from the KV cache).
    pub prefill_tokens: usize,
    pub answer_tokens: usize,
    pub time_to_first_token_s: f64,
    pub decode_tokens_per_s: f64,
    /// Oldest turns dropped to fit the context.
    pub dropped_turns: usize,
    /// The answer was stopped (Ctrl-C) before it was complete.
    pub interrupted: bool,
}

/// One answer and its statistics.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    pub answer: String,
    pub stats: TurnStats,
}

/// A conversation with one model.
pub struct ChatSession {
    pub model: LoadedModel,
    template: ChatTemplate,
    system: Option<String>,
    /// User and assistant messages, oldest first (the system prompt is kept apart).
    history: Vec<Message>,
    /// The token ids whose keys and values are in the model's KV cache.
    cached: Vec<u32>,
    pub options: GenerateOptions,
    /// Every finished turn's statistics, for `/stats`.
    pub turns: Vec<TurnStats>,
}

impl ChatSession {
    /// A session over a loaded model; it needs a tokenizer. Without a chat template of its own
    /// the model is prompted with a plain `User:` / `Assistant:` transcript.
    pub fn new(
        model: LoadedModel,
        system: Option<String>,
        options: GenerateOptions,
    ) -> Result<Self> {
        model.tokenizer()?;
        let template = model.template_or_plain()?;
        Ok(Self {
            model,
            template,
            system,
            history: Vec::new(),
            cached: Vec::new(),
            options,
            turns: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.model.name
    }

    /// Forgets the conversation (the system prompt stays).
    pub fn reset(&mut self) {
        self.history.clear();
        self.cached.clear();
        self.model.model.reset_cache();
    }

    /// Replaces the system prompt and starts over.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
        self.reset();
    }

    /// Messages in the order the template sees them.
    fn messages(&self) -> Vec<Message> {
        let mut all = Vec::with_capacity(self.history.len() + 1);
        if let Some(s) = &self.system {
            all.push(Message::new("system", s));
        }
        all.extend(self.history.iter().cloned());
        all
    }

    /// Tokens used in the context so far and the context size.
    pub fn context_usage(&self) -> (usize, usize) {
        (
            self.model.model.cache_len(),
            self.model.model.config().max_position_embeddings,
        )
    }

    /// The prompt for the current history, dropping the oldest turns until it and the answer
    /// fit in the context. Returns the ids and how many turns were dropped.
    fn fitted_prompt(&mut self) -> Result<(Vec<u32>, usize)> {
        let context = self.model.model.config().max_position_embeddings;
        let mut dropped = 0;
        loop {
            let text = self.template.render(&self.messages(), true)?;
            // Like transformers' apply_chat_template: the template places the special tokens.
            let ids = self.model.tokenizer()?.encode(&text, false)?;
            if ids.len() + self.options.max_new_tokens <= context {
                return Ok((ids, dropped));
            }
            if self.history.len() <= 1 {
                bail!(
                    "the message is {} tokens and the answer may take {}, more than the context of {context} tokens: \
                     shorten the message or lower --max-new-tokens",
                    ids.len(),
                    self.options.max_new_tokens
                );
            }
            // Drop the oldest user message and the answer to it.
            let n = if self.history.len() >= 3 && self.history[1].role == "assistant" {
                2
            } else {
                1
            };
            self.history.drain(..n);
            dropped += 1;
        }
    }

    /// Answers `user`, calling `on_text` with each piece of the answer as it is generated.
    pub fn ask(&mut self, user: &str, mut on_text: impl FnMut(&str)) -> Result<Turn> {
        self.history.push(Message::new("user", user));
        let (ids, dropped_turns) = match self.fitted_prompt() {
            Ok(v) => v,
            Err(e) => {
                self.history.pop();
                return Err(e);
            }
        };
        // ANCHOR: reuse
        // Reuse the cached prefix; at least one token must be read to get logits.
        let mut common = self
            .cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count();
        if self.model.model.cache_len() != self.cached.len() {
            common = 0;
        }
        common = common.min(ids.len() - 1);
        self.model.model.truncate_cache(common);
        // ANCHOR_END: reuse
        let tokenizer = self.model.tokenizer()?.clone();
        let mut stream = tokenizer.output_stream();
        let mut piece_err = None;
        let generation = generate(&mut self.model.model, &ids[common..], &self.options, |id| {
            match stream.next_token(id) {
                Ok(Some(piece)) => on_text(&piece),
                Ok(None) => {}
                Err(e) => piece_err = Some(e),
            }
            Ok(())
        })?;
        if let Some(e) = piece_err {
            return Err(e);
        }
        if let Some(rest) = stream.flush()? {
            on_text(&rest);
        }
        let answer = tokenizer.decode(&generation.tokens, true)?;
        // Every generated token but the last was fed back (all of them when the answer was
        // interrupted between steps), so the cache holds them.
        self.cached = ids.clone();
        let fed = if generation.interrupted {
            generation.tokens.len()
        } else {
            generation.tokens.len().saturating_sub(1)
        };
        self.cached.extend_from_slice(&generation.tokens[..fed]);
        self.history.push(Message::new("assistant", answer.trim()));
        let stats = TurnStats {
            prompt_tokens: ids.len(),
            prefill_tokens: ids.len() - common,
            answer_tokens: generation.tokens.len(),
            time_to_first_token_s: generation.time_to_first_token_s,
            decode_tokens_per_s: generation.decode_tokens_per_s(),
            dropped_turns,
            interrupted: generation.interrupted,
        };
        self.turns.push(stats.clone());
        Ok(Turn { answer, stats })
    }
}

/// Asks every session every prompt, each prompt in a fresh conversation, and tabulates the
/// answers with their timings (the chat notebook's comparison).
pub fn answer_table(sessions: &mut [ChatSession], prompts: &[&str]) -> Result<Table> {
    let (mut models, mut asked, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first, mut speed, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for s in sessions.iter_mut() {
        let name = std::path::Path::new(s.name()).file_name().map_or_else(
            || s.name().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        for prompt in prompts {
            s.reset();
            let turn = s.ask(prompt, |_| {})?;
            models.push(name.clone());
            asked.push(prompt.to_string());
            answers.push(turn.answer.trim().to_string());
            first.push(turn.stats.time_to_first_token_s);
            speed.push(turn.stats.decode_tokens_per_s);
            tokens.push(turn.stats.answer_tokens as u64);
        }
        s.reset();
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("model".into(), models),
        Column::new("prompt".into(), asked),
        Column::new("answer".into(), answers),
        Column::new("first token s".into(), first),
        Column::new("decode tok/s".into(), speed),
        Column::new("answer tokens".into(), tokens),
    ])?;
    Ok(Table::new("The same prompts, each in a fresh chat", df)
        .with_note("Timings measured in this run, on this machine."))
}
