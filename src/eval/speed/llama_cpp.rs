//! llama.cpp beside us, through `llama-cpp-python` in a child process: its timed runs
//! (`scripts/llama_cpp_speed.py`) and its quantizer (`scripts/llama_cpp_quantize.py`), which
//! makes the files a model page offers (`Q4_K_M`, `Q6_K`, ...).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// llama.cpp (`scripts/llama_cpp_speed.py`) in a child process that keeps `gguf` loaded and
/// times one generation each time it is asked, so its runs can alternate with ours.
pub struct LlamaCppPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Collects the child's error output as it comes (a full pipe would stall the child).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl LlamaCppPeer {
    /// Loads `gguf` with `threads` threads; each [`LlamaCppPeer::run`] then feeds `prompt` and
    /// generates `new_tokens`.
    pub fn start(gguf: &Path, prompt: &[u32], threads: usize, new_tokens: usize) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_cpp_speed.py");
        let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--model", gguf.to_str().context("non-UTF-8 path")?])
            .args(["--threads", &threads.to_string()])
            .args(["--prompt-ids", &ids.join(",")])
            .args(["--new-tokens", &new_tokens.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run python3 for the llama.cpp side")?;
        let mut err = child.stderr.take().context("no stderr")?;
        let mut peer = Self {
            stdin: child.stdin.take().context("no stdin")?,
            stdout: BufReader::new(child.stdout.take().context("no stdout")?),
            stderr: Some(std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })),
            child,
        };
        peer.reply()?; // {"version": ...} once the model is loaded
        Ok(peer)
    }

    /// One timed generation: `(prefill, decode)` tokens/s.
    pub fn run(&mut self) -> Result<(f64, f64)> {
        writeln!(self.stdin, "run")
            .and_then(|_| self.stdin.flush())
            .context("the llama.cpp side stopped")?;
        let v = self.reply()?;
        match (
            v["prefill_tokens_per_s"].as_f64(),
            v["decode_tokens_per_s"].as_f64(),
        ) {
            (Some(p), Some(d)) => Ok((p, d)),
            _ => bail!("unexpected answer from the llama.cpp side: {v}"),
        }
    }

    /// The child's next line as JSON; its error output when it ended instead.
    fn reply(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let _ = self.child.wait();
            let err = self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            bail!(
                "the llama.cpp run failed (is llama-cpp-python installed? `pip install llama-cpp-python`): {err}"
            );
        }
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for LlamaCppPeer {
    fn drop(&mut self) {
        // Any line but "run" (or the end of its input) ends the script.
        let _ = writeln!(self.stdin, "stop").and_then(|_| self.stdin.flush());
        let _ = self.child.wait();
    }
}

/// llama.cpp's own quantizer (`scripts/llama_cpp_quantize.py`): `src` to `file_type`
/// (`Q4_K_M`, `Q6_K`, ...) in `dst`, the mix of block types a model page's file of that name
/// holds. A quantized source is dequantized first. `dst` appears only once complete.
pub fn llama_cpp_quantize(src: &Path, file_type: &str, dst: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_cpp_quantize.py");
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let run = Command::new("python3")
        .arg(&script)
        .arg("--model")
        .arg(src)
        .args(["--type", file_type, "--out"])
        .arg(dst)
        .output()
        .context("cannot run python3 for llama.cpp's quantizer")?;
    if !run.status.success() {
        bail!(
            "llama.cpp could not quantize {} to {file_type} (is llama-cpp-python installed? \
             `pip install llama-cpp-python`): {}",
            src.display(),
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    Ok(())
}
