//! Writing results: atomically (a reader never sees half a file), each file opening with a
//! [`RunHeader`]: a UTC timestamp, the git commit, the machine and its kernels.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Writes `path` through `write`, which fills a `<name>.part` sibling that is renamed to `path`
/// only once complete, so an interrupted run never leaves a file that looks complete.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} needs a file name", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_file_name(format!("{}.part", name.to_string_lossy()));
    write(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Writes `value` as pretty JSON to `path` atomically (see [`write_atomic`]).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    write_atomic(path, |tmp| Ok(std::fs::write(tmp, text)?))
}

/// Now, as `2026-11-22T14:03:05Z`.
pub fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = crate::hub::chat_template::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The machine a result was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: String,
    pub cores: usize,
    pub threads: usize,
}

impl Hardware {
    pub fn detect(threads: usize) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads,
        }
    }
}

/// The commit the results were produced with (`git rev-parse HEAD`), with `-dirty` when the
/// work tree had changes; `None` outside a git checkout.
pub fn git_commit() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = run(&["rev-parse", "HEAD"])?;
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// What every results file opens with: when the run was measured, from which commit, on what
/// machine and with which kernels. A results struct flattens it (`#[serde(flatten)]`), so its
/// fields sit at the top level of the JSON beside the run's own. `H` is the machine's
/// description: [`Hardware`], or a richer one (the bench's names its device too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHeader<H = Hardware> {
    /// When the run started, as [`utc_timestamp`] writes it.
    pub timestamp: String,
    /// [`git_commit`]: what the numbers were produced with.
    pub git_commit: Option<String>,
    pub hardware: H,
    /// [`crate::kernels::isa::instruction_set`] (empty in bench files written before it was recorded).
    #[serde(default)]
    pub instruction_set: String,
}

impl RunHeader {
    /// A run starting now on this machine, with `threads` worker threads.
    pub fn now(threads: usize) -> Self {
        Self::now_on(Hardware::detect(threads))
    }
}

impl<H> RunHeader<H> {
    /// A run starting now on the machine `hardware` describes.
    pub fn now_on(hardware: H) -> Self {
        Self {
            timestamp: utc_timestamp(),
            git_commit: git_commit(),
            hardware,
            instruction_set: crate::kernels::isa::instruction_set().to_string(),
        }
    }

    /// The run's results file name: `<kind>-<timestamp>.json`, the timestamp's colons (which
    /// some file systems refuse) written as dashes.
    pub fn file_name(&self, kind: &str) -> String {
        format!("{}.json", self.file_stem(kind))
    }

    /// [`RunHeader::file_name`] without `.json`.
    pub fn file_stem(&self, kind: &str) -> String {
        format!("{kind}-{}", self.timestamp.replace(':', "-"))
    }
}
