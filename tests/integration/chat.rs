//! `billion-llm chat` with the real SmolLM2-135M GGUF: piped, and interactive through a
//! pseudo-terminal (two turns, /reset, Ctrl-C during an answer, compare mode).

use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn gguf() -> String {
    asset(SMOLLM2_GGUF).unwrap().to_str().unwrap().to_string()
}

fn piped(args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_billion-llm"))
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A program that fails before reading its input closes the pipe first: that is fine.
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_input_gets_one_answer_on_stdout() {
    let (ok, stdout, stderr) = piped(
        &["--model", &gguf(), "--temperature", "0"],
        "What is 2+2?\n",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains('4'), "{stdout}");
    // Only the answer on stdout; the numbers go to stderr.
    assert!(!stdout.contains("first token"), "{stdout}");
    assert!(stderr.contains("first token"), "{stderr}");
}

#[test]
fn piped_compare_prints_columns() {
    let g = gguf();
    let (ok, stdout, stderr) = piped(
        &[
            "--compare",
            &g,
            &g,
            "--temperature",
            "0",
            "--max-new-tokens",
            "24",
        ],
        "Name three colors.\n",
    );
    assert!(ok, "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first.matches("SmolLM2-135M-Instruct.Q4_1.gguf").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains('│'), "{stdout}");
}

#[test]
fn bad_models_fail_before_the_prompt() {
    let (ok, _, stderr) = piped(&["--model", "tinylama"], "hi\n");
    assert!(!ok);
    assert!(stderr.contains("did you mean \"tinyllama\""), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    let bytes = std::fs::read(asset(SMOLLM2_GGUF).unwrap()).unwrap();
    std::fs::write(&broken, &bytes[..4096]).unwrap();
    let (ok, _, stderr) = piped(&["--model", broken.to_str().unwrap()], "hi\n");
    assert!(!ok);
    assert!(stderr.contains("broken.gguf"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The interactive chat in a pseudo-terminal.
#[test]
fn interactive_two_turns_reset_ctrl_c_and_quit() {
    use expectrl::{ControlCode, Regex};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billion-llm"));
    cmd.args([
        "chat",
        "--model",
        &gguf(),
        "--temperature",
        "0",
        "--max-new-tokens",
        "400",
    ]);
    let mut p = expectrl::Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    p.expect("chatting with").unwrap();
    p.expect("> ").unwrap();
    p.send_line("What is 2+2?").unwrap();
    p.expect(Regex("first token .* answer \\d+ tokens"))
        .unwrap();
    p.expect("> ").unwrap();
    // The second turn reuses the first turn's KV cache: fewer tokens read than the prompt.
    p.send_line("And what is 3+3?").unwrap();
    let turn = p
        .expect(Regex("prompt (\\d+) tokens \\((\\d+) read\\)"))
        .unwrap();
    let caps: Vec<usize> = turn
        .matches()
        .skip(1)
        .map(|m| String::from_utf8_lossy(m).parse().unwrap())
        .collect();
    assert!(
        caps[1] < caps[0],
        "second turn read {} of {} tokens",
        caps[1],
        caps[0]
    );
    p.expect("> ").unwrap();
    p.send_line("/reset").unwrap();
    p.expect("forgotten").unwrap();
    p.expect("> ").unwrap();
    // A long answer, stopped with Ctrl-C: the program stays, the answer is marked stopped.
    // (This model counts to 20 here; we stop it as soon as it reaches 5.)
    p.send_line("Count from 1 to 500, separated by commas.")
        .unwrap();
    p.expect("5. 5").unwrap();
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("(stopped)").unwrap();
    p.expect("> ").unwrap();
    p.send_line("/stats").unwrap();
    p.expect(Regex("3 turns, \\d+ answer tokens, mean decode"))
        .unwrap();
    p.expect("> ").unwrap();
    p.send_line("/quit").unwrap();
    p.expect(expectrl::Eof).unwrap();
}

#[test]
fn interactive_compare_mode() {
    use expectrl::Regex;
    let g = gguf();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billion-llm"));
    cmd.args([
        "chat",
        "--compare",
        &g,
        &g,
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
    ])
    .env("COLUMNS", "90");
    let mut p = expectrl::Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    p.expect("> ").unwrap();
    p.send_line("Name three colors.").unwrap();
    p.expect(Regex(
        "SmolLM2-135M-Instruct.Q4_1.gguf +│ SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap();
    p.expect(Regex("tokens\\] *│")).unwrap();
    // End of input (Ctrl-D) at the next prompt leaves cleanly. (Sent earlier, the tty
    // would still be in cooked mode and the line editor would never see it.)
    p.expect("> ").unwrap();
    p.send(expectrl::ControlCode::EndOfTransmission).unwrap();
    p.expect(expectrl::Eof).unwrap();
}

#[test]
fn the_oldest_turns_are_dropped_when_the_context_fills() {
    use billion_llm::chat::session::ChatSession;
    use billion_llm::hub::loader::{load, LoadOptions};
    use billion_llm::model::generation::GenerateOptions;
    let model = load(&gguf(), &LoadOptions::default()).unwrap();
    let context = model.model.config().max_position_embeddings;
    // Reserve almost the whole context for the answer: one turn fits, two do not.
    let options = GenerateOptions {
        max_new_tokens: context - 60,
        ..Default::default()
    };
    let mut chat = ChatSession::new(model, None, options).unwrap();
    let first = chat.ask("What is 2+2?", |_| {}).unwrap();
    assert_eq!(first.stats.dropped_turns, 0);
    let second = chat.ask("And what is 3+3?", |_| {}).unwrap();
    assert_eq!(second.stats.dropped_turns, 1);
    assert!(second.stats.prompt_tokens + context - 60 <= context);
    // A single message that cannot fit is an error that says what to do.
    let err = chat
        .ask(&"word ".repeat(100), |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shorten the message"), "{err}");
}
