//! `billion-llm chat`: the terminal side of [`billion_llm::chat::session::ChatSession`].
//!
//! Interactive on a terminal (line editing and history, `\` at the end of a line continues the
//! message, Ctrl-C stops an answer, Ctrl-D leaves); with piped input, one answer and exit, with
//! only the answer on stdout. `--compare` sends every message to several models and prints the
//! answers side by side.

use crate::args::{LoadArgs, SamplingArgs};
use anyhow::{bail, Result};
use billion_llm::chat::session::{ChatSession, TurnStats};
use billion_llm::model::generation::GenerateOptions;
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use unicode_width::UnicodeWidthStr;

#[derive(Args, Clone)]
#[command(
    mut_arg("temperature", |a| a.default_value("0.7")),
    mut_arg("top_p", |a| a.default_value("0.9")),
    mut_arg("max_new_tokens", |a| a.default_value("256"))
)]
pub struct ChatArgs {
    /// The model to chat with (an alias, hub id, folder or .gguf file).
    #[arg(long, short, required_unless_present = "compare")]
    model: Option<String>,
    /// Send every message to each of these models and show the answers side by side.
    #[arg(long, num_args = 2.., conflicts_with = "model")]
    compare: Vec<String>,
    /// A system prompt (the model's template may add its own default otherwise).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    load: LoadArgs,
}

const HELP: &str = "commands: /reset (forget the conversation), /system TEXT (new system prompt), \
/stats (this session's numbers), /quit; end a line with \\ to continue the message";

pub fn run(args: &ChatArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let options = GenerateOptions {
        max_new_tokens: args.sampling.max_new_tokens,
        sampling: args.sampling.params(),
        ignore_eos: false,
        stop: Some(stop.clone()),
    };
    let names: Vec<String> = match &args.model {
        Some(m) => vec![m.clone()],
        None => args.compare.clone(),
    };
    // Every model is loaded once, before the first prompt, so a bad name fails right away.
    let mut sessions = Vec::new();
    for name in &names {
        let model = args.load.load(name)?;
        sessions.push(ChatSession::new(
            model,
            args.system.clone(),
            options.clone(),
        )?);
    }

    if !std::io::stdin().is_terminal() {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        let input = input.trim();
        if input.is_empty() {
            bail!("no message on standard input");
        }
        return answer_once(&mut sessions, input);
    }

    let mut editor = rustyline::DefaultEditor::new()?;
    // Ctrl-C during an answer stops the answer; at the prompt the line editor reads it as a
    // key. Installed after the editor, which sets a SIGINT handler of its own when created.
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))?;
    }
    eprintln!("chatting with {} ({HELP})", names.join(", "));
    loop {
        let Some(message) = read_message(&mut editor)? else {
            break;
        };
        match message.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                sessions.iter_mut().for_each(ChatSession::reset);
                eprintln!("(conversation forgotten)");
                continue;
            }
            "/stats" => {
                sessions.iter().for_each(print_session_stats);
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            cmd if cmd.starts_with("/system") => {
                let text = cmd.trim_start_matches("/system").trim();
                let system = (!text.is_empty()).then(|| text.to_string());
                sessions
                    .iter_mut()
                    .for_each(|s| s.set_system(system.clone()));
                eprintln!("(new system prompt; conversation restarted)");
                continue;
            }
            cmd if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}; {HELP}");
                continue;
            }
            _ => {}
        }
        stop.store(false, Ordering::Relaxed);
        if sessions.len() == 1 {
            let mut stdout = std::io::stdout();
            let turn = sessions[0].ask(&message, |piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
            });
            println!();
            match turn {
                Ok(t) => eprintln!("{}", stats_line(&t.stats)),
                Err(e) => eprintln!("error: {e:#}"),
            }
        } else if let Err(e) = compare_turn(&mut sessions, &message) {
            eprintln!("error: {e:#}");
        }
    }
    Ok(())
}

/// Reads one message; a trailing `\` continues it on the next line. `None` at end of input.
fn read_message(editor: &mut rustyline::DefaultEditor) -> Result<Option<String>> {
    use rustyline::error::ReadlineError;
    let mut message = String::new();
    let mut prompt = "> ";
    loop {
        match editor.readline(prompt) {
            Ok(line) => {
                if let Some(head) = line.strip_suffix('\\') {
                    message.push_str(head);
                    message.push('\n');
                    prompt = ". ";
                    continue;
                }
                message.push_str(&line);
                if !message.trim().is_empty() {
                    let _ = editor.add_history_entry(message.as_str());
                }
                return Ok(Some(message));
            }
            // Ctrl-C at the prompt clears the line being typed.
            Err(ReadlineError::Interrupted) => {
                message.clear();
                prompt = "> ";
            }
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

fn answer_once(sessions: &mut [ChatSession], input: &str) -> Result<()> {
    if sessions.len() == 1 {
        let mut stdout = std::io::stdout();
        let turn = sessions[0].ask(input, |piece| {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        })?;
        println!();
        eprintln!("{}", stats_line(&turn.stats));
        return Ok(());
    }
    compare_turn(sessions, input)
}

fn stats_line(s: &TurnStats) -> String {
    let mut line = format!(
        "[first token {:.2} s · {:.1} tok/s · prompt {} tokens ({} read) · answer {} tokens]",
        s.time_to_first_token_s,
        s.decode_tokens_per_s,
        s.prompt_tokens,
        s.prefill_tokens,
        s.answer_tokens
    );
    if s.interrupted {
        line.push_str(" (stopped)");
    }
    if s.dropped_turns > 0 {
        line.push_str(&format!(
            " (dropped the {} oldest turn(s) to fit the context)",
            s.dropped_turns
        ));
    }
    line
}

fn print_session_stats(s: &ChatSession) {
    let (used, context) = s.context_usage();
    let answers: usize = s.turns.iter().map(|t| t.answer_tokens).sum();
    let speeds: Vec<f64> = s
        .turns
        .iter()
        .map(|t| t.decode_tokens_per_s)
        .filter(|v| *v > 0.0)
        .collect();
    let mean = if speeds.is_empty() {
        0.0
    } else {
        speeds.iter().sum::<f64>() / speeds.len() as f64
    };
    eprintln!(
        "{}: {} turns, {answers} answer tokens, mean decode {mean:.1} tok/s, context {used}/{context} tokens",
        s.name(),
        s.turns.len()
    );
}

/// Asks every model, then prints the answers in columns that fit the terminal.
fn compare_turn(sessions: &mut [ChatSession], message: &str) -> Result<()> {
    let mut columns = Vec::new();
    for s in sessions.iter_mut() {
        eprintln!("({} is answering...)", s.name());
        let turn = s.ask(message, |_| {})?;
        // A path is long; its file name says which model it is.
        let title = std::path::Path::new(s.name()).file_name().map_or_else(
            || s.name().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        columns.push((
            title,
            turn.answer.trim().to_string(),
            stats_line(&turn.stats),
        ));
    }
    print!("{}", side_by_side(&columns, terminal_width()));
    Ok(())
}
/// The terminal's width in columns (`$COLUMNS`, else the tty's size, else 100).
fn terminal_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    terminal_size::terminal_size().map_or(100, |(terminal_size::Width(w), _)| w as usize)
}

/// Word-wraps `text` to lines of at most `width` terminal columns: a CJK character or an emoji
/// takes two, and a word longer than a line is broken.
fn wrap(text: &str, width: usize) -> Vec<String> {
    text.lines()
        .flat_map(|paragraph| {
            let lines = textwrap::wrap(paragraph, width);
            if lines.is_empty() {
                vec![String::new()]
            } else {
                lines.into_iter().map(|l| l.into_owned()).collect()
            }
        })
        .collect()
}

/// Columns of (title, answer, stats), separated by ` │ `, within `width` terminal columns.
pub fn side_by_side(columns: &[(String, String, String)], width: usize) -> String {
    let n = columns.len().max(1);
    let col = ((width.saturating_sub(3 * (n - 1))) / n).max(12);
    let blocks: Vec<Vec<String>> = columns
        .iter()
        .map(|(title, answer, stats)| {
            let mut b = wrap(title, col);
            b.push("─".repeat(col));
            b.extend(wrap(answer, col));
            b.push(String::new());
            b.extend(wrap(stats, col));
            b
        })
        .collect();
    let rows = blocks.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::new();
    for r in 0..rows {
        let cells: Vec<String> = blocks
            .iter()
            .map(|b| {
                let cell = b.get(r).cloned().unwrap_or_default();
                let pad = col.saturating_sub(cell.width());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        out.push_str(cells.join(" │ ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_width() {
        let cols = vec![
            ("a".to_string(), "word ".repeat(40), "stats".to_string()),
            ("b".to_string(), "short".to_string(), "stats".to_string()),
        ];
        let out = side_by_side(&cols, 60);
        assert!(out.lines().all(|l| l.chars().count() <= 60), "{out}");
        assert!(out.lines().next().unwrap().contains('│'));
        assert!(out.contains("short"));
    }

    #[test]
    fn wrap_breaks_long_words() {
        let lines = wrap("abcdefghijklmnop qr", 5);
        assert!(lines.iter().all(|l| l.chars().count() <= 5), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), "abcdefghijklmnopqr");
    }

    /// A CJK character or an emoji takes two columns of a terminal: counted as one, a column of
    /// Chinese text would be twice as wide as its neighbours and push the separator out of line.
    #[test]
    fn wide_characters_count_two_columns() {
        let out = side_by_side(
            &[
                (
                    "中文模型".into(),
                    "北京是中国的首都。🙂 它很大。".repeat(3),
                    "s".into(),
                ),
                (
                    "English".into(),
                    "Paris is the capital of France.".into(),
                    "s".into(),
                ),
            ],
            40,
        );
        let separators: Vec<usize> = out
            .lines()
            .filter_map(|l| l.find('│').map(|at| l[..at].width()))
            .collect();
        assert!(separators.iter().all(|&c| c == separators[0]), "{out}");
        assert!(out.lines().all(|l| l.width() <= 40), "{out}");
    }
}
