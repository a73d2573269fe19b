//! HumanEval: complete a Python function from its signature and docstring, then run the
//! problem's unit tests on it. Generated code is untrusted, so it runs in a [`Sandbox`].

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HumanEval problem, as in OpenAI's `HumanEval.jsonl.gz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

/// The default 20-problem subset, chosen to span difficulty: one-liners (strlen, add,
/// concatenate), short loops and string work, and three that small models rarely solve
/// (make_palindrome, find_zero, minPath).
pub const SUBSET: [&str; 20] = [
    "HumanEval/0",
    "HumanEval/2",
    "HumanEval/4",
    "HumanEval/7",
    "HumanEval/10",
    "HumanEval/12",
    "HumanEval/13",
    "HumanEval/15",
    "HumanEval/16",
    "HumanEval/23",
    "HumanEval/28",
    "HumanEval/29",
    "HumanEval/32",
    "HumanEval/34",
    "HumanEval/35",
    "HumanEval/45",
    "HumanEval/53",
    "HumanEval/55",
    "HumanEval/60",
    "HumanEval/129",
];

/// Where a completion ends: the next top-level statement after the function body.
pub const STOP_SEQUENCES: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// Reads `HumanEval.jsonl.gz` (or an uncompressed `.jsonl`).
pub fn load_problems(path: &Path) -> Result<Vec<Problem>> {
    // The hub dataset openai/openai_humaneval stores the same records as Parquet.
    if crate::eval::parquet_rows::is_parquet(path) {
        return crate::eval::parquet_rows::read_rows(path);
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read HumanEval from {}: run `bash scripts/fetch-assets.sh` or pass --humaneval-file",
            path.display()
        )
    })?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("{} is not a valid gzip file", path.display()))?;
        text
    } else {
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?
    };
    let problems = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {}: not a HumanEval problem", path.display(), i + 1)
            })
        })
        .collect::<Result<Vec<Problem>>>()?;
    if problems.is_empty() {
        bail!("{} holds no problems", path.display());
    }
    Ok(problems)
}

/// The problems with the given ids, in that order; an unknown id is an error.
pub fn select<'a>(problems: &'a [Problem], ids: &[&str]) -> Result<Vec<&'a Problem>> {
    ids.iter()
        .map(|id| {
            problems
                .iter()
                .find(|p| p.task_id == *id)
                .with_context(|| format!("HumanEval has no problem {id}"))
        })
        .collect()
}

/// Cuts a completion at the first stop sequence.
pub fn truncate_at_stop(completion: &str) -> &str {
    let end = STOP_SEQUENCES
        .iter()
        .filter_map(|s| completion.find(s))
        .min()
        .unwrap_or(completion.len());
    &completion[..end]
}

/// The program that is run: the prompt, the completion, the tests, and the call of `check`.
pub fn program(problem: &Problem, completion: &str) -> String {
    format!(
        "{}{}\n\n{}\n\ncheck({})\n",
        problem.prompt, completion, problem.test, problem.entry_point
    )
}

/// The unbiased pass@k estimator of Chen et al. (2021): `1 - C(n-c, k) / C(n, k)`, computed as
/// a product to stay exact for large `n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || n == 0 {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// What running a program gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    pub outcome: Outcome,
    /// The last line the program wrote to stderr (the exception, usually).
    pub error: String,
    pub seconds: f64,
}

/// Which protections the operating system granted (probed once per sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// A new network namespace: no interface but a loopback that is down.
    pub network: bool,
    /// A private, empty /tmp (and /var/tmp, /dev/shm) in a new mount namespace.
    pub private_tmp: bool,
    /// Dropped from root to the unprivileged user `nobody`.
    pub unprivileged: bool,
}

/// Runs untrusted Python: its own process group (killed as a whole at the end), a wall-clock
/// timeout, limits on CPU time, address space, file size and process count, an empty working
/// directory, no network and a private /tmp where the OS allows it, and no root.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub timeout: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    /// For `nobody` when started as root; otherwise added to the user's current process count.
    pub processes: u64,
    python: PathBuf,
}

const NOBODY: u32 = 65534;

/// The type `setrlimit` takes for a resource differs between C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

impl Sandbox {
    /// The default limits: 3 s wall clock, 10 s CPU, 1 GiB address space, 16 MiB files, 32
    /// processes.
    pub fn new(timeout: Duration) -> Result<Self> {
        // As `nobody` we cannot run a Python under /root: prefer the system one.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context(
                "python3 is needed to run HumanEval tests: install it (apt-get install python3)",
            )?;
        Ok(Sandbox {
            timeout,
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            processes: 32,
            python,
        })
    }

    /// Runs `source` with `python3 -` (the program comes on stdin, so nothing is written to
    /// disk outside the sandbox).
    pub fn run(&self, source: &str) -> Result<Execution> {
        let workdir = tempfile::tempdir().context("cannot create a temporary folder")?;
        let is_root = unsafe { libc::geteuid() } == 0;
        if is_root {
            // `nobody` must be able to enter and use its working folder.
            std::fs::set_permissions(
                workdir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )?;
        }
        let processes = if is_root {
            self.processes
        } else {
            processes_of_current_user() + self.processes
        };
        let limits = [
            (libc::RLIMIT_CPU, self.cpu_seconds),
            (libc::RLIMIT_AS, self.memory_bytes),
            (libc::RLIMIT_FSIZE, self.file_bytes),
            (libc::RLIMIT_NPROC, processes),
            (libc::RLIMIT_CORE, 0),
        ];
        let mut command = Command::new(&self.python);
        command
            .args(["-I", "-"])
            .current_dir(workdir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let dir = std::ffi::CString::new(workdir.path().as_os_str().as_encoded_bytes())?;
        // SAFETY: runs in the child between fork and exec; it only makes system calls with
        // data prepared before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                confine(&limits, &dir, is_root)
            });
        }
        let start = Instant::now();
        let mut child = command.spawn().context("cannot start python3")?;
        let pgid = child.id() as libc::pid_t;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits early closes its stdin: not our error.
            let _ = stdin.write_all(source.as_bytes());
        }
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
            buf
        });
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if start.elapsed() >= self.timeout {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Whatever happened, nothing the program started survives it.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = child.wait();
        let seconds = start.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        let error = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string();
        let outcome = match status {
            None => Outcome::TimedOut,
            Some(s) if s.success() => Outcome::Passed,
            Some(_) => Outcome::Failed,
        };
        Ok(Execution {
            outcome,
            error: if outcome == Outcome::TimedOut {
                format!("timed out after {:.1} s", self.timeout.as_secs_f64())
            } else {
                error
            },
            seconds,
        })
    }

    /// Asks a sandboxed program what it can see, to report which protections are in force.
    pub fn probe(&self) -> Result<Isolation> {
        let check = |code: &str| -> Result<bool> { Ok(self.run(code)?.outcome == Outcome::Passed) };
        Ok(Isolation {
            network: check(
                "import socket\nassert [n for _, n in socket.if_nameindex()] == ['lo']\n",
            )?,
            private_tmp: check("import os\nassert os.listdir('/tmp') == []\n")?,
            unprivileged: check("import os\nassert os.getuid() != 0\n")?,
        })
    }
}

/// Runs of labelled programs as a table (what happened, how long, the last error line).
pub fn executions_table(runs: &[(&str, &Execution)]) -> Result<crate::report::Table> {
    use polars::prelude::{Column, DataFrame};
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "program".into(),
            runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        ),
        Column::new(
            "outcome".into(),
            runs.iter()
                .map(|r| format!("{:?}", r.1.outcome))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "seconds".into(),
            runs.iter().map(|r| r.1.seconds).collect::<Vec<_>>(),
        ),
        Column::new(
            "error".into(),
            runs.iter().map(|r| r.1.error.clone()).collect::<Vec<_>>(),
        ),
    ])?;
    Ok(crate::report::Table::new("Programs run in the sandbox", df))
}

fn processes_of_current_user() -> u64 {
    let uid = unsafe { libc::getuid() };
    let mut count = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Ok(meta) = std::fs::metadata(e.path()) {
                if std::os::unix::fs::MetadataExt::uid(&meta) == uid
                    && e.file_name().to_string_lossy().parse::<u32>().is_ok()
                {
                    count += 1;
                }
            }
        }
    }
    count
}

// ANCHOR: confine
/// The child's side of [`Sandbox::run`], between fork and exec.
fn confine(
    limits: &[(Resource, u64)],
    workdir: &std::ffi::CStr,
    is_root: bool,
) -> std::io::Result<()> {
    use std::io::Error;
    // SAFETY: plain system calls on valid, NUL-terminated strings prepared before the fork.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(Error::last_os_error());
        }
        // New network and mount namespaces (Linux): directly as root, else inside a new user
        // namespace. Where neither is allowed the other limits still hold (the probe says so).
        #[cfg(target_os = "linux")]
        let namespaces = libc::CLONE_NEWNET | libc::CLONE_NEWNS;
        #[cfg(target_os = "linux")]
        let isolated = libc::unshare(namespaces) == 0
            || (!is_root && libc::unshare(libc::CLONE_NEWUSER | namespaces) == 0);
        #[cfg(target_os = "linux")]
        if isolated {
            let none = c"none".as_ptr();
            // Keep our mounts private, then give the program empty scratch folders.
            if libc::mount(
                none,
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            {
                for dir in [c"/tmp", c"/var/tmp", c"/dev/shm"] {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        dir.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        c"size=16m,mode=1777".as_ptr().cast(),
                    );
                }
            }
        }
        // The working folder may now be hidden under the new /tmp: fall back to the new /tmp.
        if libc::chdir(workdir.as_ptr()) != 0 && libc::chdir(c"/tmp".as_ptr()) != 0 {
            return Err(Error::last_os_error());
        }
        for &(resource, value) in limits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(Error::last_os_error());
            }
        }
        if is_root
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0)
        {
            return Err(Error::last_os_error());
        }
    }
    Ok(())
}
// ANCHOR_END: confine

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_stop_at_the_next_top_level_statement() {
        let c = "    return x + 1\n\n\ndef other():\n    pass\n";
        assert_eq!(truncate_at_stop(c), "    return x + 1\n\n");
        assert_eq!(
            truncate_at_stop("    return 1\nif __name__"),
            "    return 1"
        );
        assert_eq!(truncate_at_stop("    return 1"), "    return 1");
    }

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
        assert_eq!(pass_at_k(1, 0, 1), 0.0);
        // n=10, c=3, k=1: 3/10.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(10, 8, 5), 1.0);
    }
}
