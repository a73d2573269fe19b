//! The sandbox that runs model-written Python (HumanEval completions and their tests).
//!
//! Learners run the workbook as themselves, so the code a model writes must not be able to
//! touch their files, their tokens or their other processes. On Linux the sandbox uses what
//! the kernel offers to unprivileged users, strongest first:
//!
//! - **namespaces** (what bubblewrap does): new user (when not root), mount, PID, network and
//!   IPC namespaces. Every mount is made read-only at once (`mount_setattr` with
//!   `AT_RECURSIVE`), `/tmp`, `/var/tmp` and `/dev/shm` become private, empty, size-limited
//!   tmpfs, the home folders (`$HOME`, `/root`, `/home`) are covered by empty read-only tmpfs,
//!   and the program is PID 1 of its own PID namespace with a fresh `/proc`: it sees and can
//!   signal only itself and its children, and they all die with it.
//! - **Landlock** (Linux ≥ 5.13), where user namespaces are refused (Ubuntu's AppArmor policy,
//!   `kernel.unprivileged_userns_clone=0`): reads only beneath the system folders, writes only
//!   beneath a scratch folder, TCP refused, and (Linux ≥ 6.12) signals scoped to the program's
//!   own processes.
//!
//! Both paths add rlimits (CPU time, address space, file size, process count), a cleared
//! environment, `no_new_privs`, a wall-clock timeout, and, for root, a switch to `nobody`.
//! Where neither mechanism works, [`Sandbox::new`] refuses and says how to enable one;
//! [`Sandbox::unconfined`] is the explicit `--unsafe-no-sandbox` way out. [`Sandbox::probe`]
//! asks a sandboxed program what it can see, so results record what actually held.
//!
//! This file prepares and runs; `confinement` is the child's side between fork and exec (it
//! imports nothing from here).

mod confinement;

pub use confinement::Mechanism;

use anyhow::{bail, Context, Result};
#[cfg(target_os = "linux")]
use confinement::landlock_ruleset;
use confinement::Confinement;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// The last line the program wrote to stderr (the exception, usually), at most
    /// [`MAX_ERROR_CHARS`] characters: results files are shared, and a hostile program should
    /// not be able to fill them.
    pub error: String,
    pub seconds: f64,
}

/// How much of a program's last stderr line is kept.
pub const MAX_ERROR_CHARS: usize = 200;

/// Whose user id the program runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UidPolicy {
    /// Started as root, the program runs as `nobody`.
    RootToNobody,
    /// Started as a normal user, the program keeps that user's id (confined by the mechanism).
    SameUser,
    #[default]
    Unrecorded,
}

/// What held for a run, as a sandboxed program saw it ([`Sandbox::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Isolation {
    pub mechanism: Mechanism,
    /// No network interface but a loopback that is down.
    pub network: bool,
    /// Every file system is read-only but the program's own scratch folders.
    pub filesystem_read_only: bool,
    /// `$HOME`, `/root` and `/home` look empty (or cannot be read).
    pub home_hidden: bool,
    /// `/tmp` is private and empty.
    pub private_tmp: bool,
    /// The program is PID 1 of its own PID namespace.
    pub pid_namespace: bool,
    /// The program cannot signal the benchmark (or any process it did not start).
    pub signals_confined: bool,
    pub uid: UidPolicy,
}

impl Isolation {
    /// The protections that did not hold; empty when the isolation is full. (A PID namespace
    /// is one way to confine signals, Landlock's signal scope another: either counts.)
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (self.network, "no network"),
            (self.filesystem_read_only, "read-only file system"),
            (self.home_hidden, "hidden home"),
            (self.private_tmp, "private /tmp"),
            (self.signals_confined, "confined signals"),
            (self.uid != UidPolicy::Unrecorded, "recorded user id"),
        ]
        .into_iter()
        .filter(|(held, _)| !held)
        .map(|(_, name)| name)
        .collect()
    }

    pub fn is_full(&self) -> bool {
        self.missing().is_empty()
    }
}

/// Runs untrusted Python under a [`Mechanism`], with a wall-clock timeout and limits on CPU
/// time, address space, file size and process count.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub timeout: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    /// For `nobody` when started as root; otherwise added to the user's current process count.
    pub processes: u64,
    python: PathBuf,
    mechanism: Mechanism,
    /// Folders covered by an empty read-only tmpfs (namespaces) or left out of the readable
    /// ones (Landlock): the homes.
    hidden: Vec<PathBuf>,
}

impl Sandbox {
    /// What [`Confinement::enter`] needs, prepared before the fork.
    fn confinement(&self, is_root: bool, workdir: &Path) -> Result<Confinement> {
        let processes = if is_root {
            self.processes
        } else {
            processes_of_current_user() + self.processes
        };
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        Ok(Confinement {
            mechanism: self.mechanism,
            is_root,
            limits: vec![
                (libc::RLIMIT_CPU, self.cpu_seconds),
                (libc::RLIMIT_AS, self.memory_bytes),
                (libc::RLIMIT_FSIZE, self.file_bytes),
                (libc::RLIMIT_NPROC, processes),
                (libc::RLIMIT_CORE, 0),
            ],
            workdir: CString::new(workdir.as_os_str().as_encoded_bytes())?,
            hidden: self
                .hidden
                .iter()
                .map(|h| CString::new(h.as_os_str().as_encoded_bytes()))
                .collect::<Result<_, _>>()?,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            #[cfg(target_os = "linux")]
            landlock: match self.mechanism {
                Mechanism::Landlock => Some(landlock_ruleset(workdir)?),
                _ => None,
            },
        })
    }

    /// The strongest mechanism this system allows, tried with a real program; an error that
    /// says what is missing and how to enable it where none works. Default limits: 10 s CPU,
    /// 1 GiB address space, 16 MiB files, 32 processes.
    pub fn new(timeout: Duration) -> Result<Self> {
        let mut reasons = Vec::new();
        for mechanism in [Mechanism::Namespaces, Mechanism::Landlock] {
            let sandbox = Self::with_mechanism(timeout, mechanism)?;
            match sandbox.works() {
                Ok(()) => return Ok(sandbox),
                Err(e) => reasons.push(format!("{mechanism:?}: {e:#}")),
            }
        }
        bail!(
            "cannot run model-written code confined on this system ({}). Enable unprivileged \
             user namespaces (`sysctl kernel.unprivileged_userns_clone=1` and \
             `user.max_user_namespaces=10000`; on Ubuntu ≥ 23.10 also \
             `sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or boot a kernel ≥ 5.13 \
             with Landlock enabled (`lsm=landlock,...`), or run as root. To run HumanEval \
             anyway, unconfined, pass --unsafe-no-sandbox: the model's code could then read, \
             change or delete your files and kill your processes.",
            reasons.join("; ")
        )
    }

    /// A sandbox with the given mechanism, not checked (tests pick the mechanism they cover).
    pub fn with_mechanism(timeout: Duration, mechanism: Mechanism) -> Result<Self> {
        // The homes are hidden, so the Python must live outside them: the system one.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context(
                "python3 is needed to run HumanEval tests: install it (apt-get install python3)",
            )?;
        let mut hidden: Vec<PathBuf> = ["/root", "/home"].iter().map(PathBuf::from).collect();
        hidden.extend(std::env::var_os("HOME").map(PathBuf::from));
        hidden.extend(passwd_home(rustix::process::getuid().as_raw()));
        hidden.retain(|h| h.is_absolute() && h.parent().is_some() && !python.starts_with(h));
        hidden.sort();
        hidden.dedup();
        Ok(Sandbox {
            timeout,
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            processes: 32,
            python,
            mechanism,
            hidden,
        })
    }

    /// No confinement beyond rlimits, a process group and a cleared environment: what
    /// `--unsafe-no-sandbox` asks for.
    pub fn unconfined(timeout: Duration) -> Result<Self> {
        Self::with_mechanism(timeout, Mechanism::Unconfined)
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The folders the program cannot see.
    pub fn hidden(&self) -> &[PathBuf] {
        &self.hidden
    }

    /// Whether the mechanism can start a program here.
    fn works(&self) -> Result<()> {
        let (run, _) = self.execute("pass\n")?;
        if run.outcome != Outcome::Passed {
            bail!("a confined `pass` did not run: {}", run.error);
        }
        Ok(())
    }

    /// Runs `source` with `python3 -I -` (the program comes on stdin, so nothing is written to
    /// disk outside the sandbox).
    pub fn run(&self, source: &str) -> Result<Execution> {
        Ok(self.execute(source)?.0)
    }

    /// Runs `source` and also returns everything it wrote to stderr (up to 64 KiB).
    fn execute(&self, source: &str) -> Result<(Execution, String)> {
        let is_root = rustix::process::geteuid().is_root();
        // Namespaces give the program a private /tmp to work in; the other mechanisms need a
        // scratch folder on the host.
        let scratch = match self.mechanism {
            Mechanism::Namespaces => None,
            _ => Some(tempfile::tempdir().context("cannot create a temporary folder")?),
        };
        let workdir = scratch
            .as_ref()
            .map_or_else(|| PathBuf::from("/tmp"), |s| s.path().to_path_buf());
        if is_root && scratch.is_some() {
            // `nobody` must be able to enter and use its working folder.
            std::fs::set_permissions(
                &workdir,
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )?;
        }
        let mut confinement = self.confinement(is_root, &workdir)?;
        let mut command = Command::new(&self.python);
        command
            .args(["-I", "-"])
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: runs in the child between fork and exec; it only makes system calls with
        // data prepared before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || confinement.enter());
        }
        let start = Instant::now();
        let mut child = command
            .spawn()
            .context("cannot start python3 in the sandbox")?;
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
        // Whatever happened, nothing the program started survives it: the process group,
        // and (namespaces) the PID namespace, whose init dies with our child.
        let status = wait_then_kill(&mut child, start + self.timeout, &mut |target| {
            // SAFETY: kill(2) only sends a signal; `target` is our child's pid or its group,
            // which `wait_then_kill` passes only while the child is not yet reaped.
            unsafe { libc::kill(target, libc::SIGKILL) };
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        let outcome = match status {
            None => Outcome::TimedOut,
            Some(s) if s.success() => Outcome::Passed,
            Some(_) => Outcome::Failed,
        };
        let error = if outcome == Outcome::TimedOut {
            format!("timed out after {:.1} s", self.timeout.as_secs_f64())
        } else {
            let last = err.lines().rev().find(|l| !l.trim().is_empty());
            last.unwrap_or_default()
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect()
        };
        Ok((
            Execution {
                outcome,
                error,
                seconds,
            },
            err,
        ))
    }

    /// Asks a sandboxed program what it can see and do, so results say what held.
    pub fn probe(&self) -> Result<Isolation> {
        let hidden: Vec<String> = self
            .hidden
            .iter()
            .map(|h| h.display().to_string())
            .collect();
        let source = PROBE.replace("HIDDEN", &serde_json::to_string(&hidden)?);
        let (run, stderr) = self.execute(&source)?;
        let line = stderr.lines().rev().find(|l| l.starts_with('{'));
        let seen: ProbeAnswer = line
            .and_then(|l| serde_json::from_str(l).ok())
            .with_context(|| {
                format!(
                    "the sandbox probe gave no answer ({:?}: {})",
                    run.outcome, run.error
                )
            })?;
        let is_root = rustix::process::geteuid().is_root();
        if is_root && seen.uid == 0 {
            bail!("the sandboxed program ran as root");
        }
        Ok(Isolation {
            mechanism: self.mechanism,
            network: seen.network,
            filesystem_read_only: seen.filesystem_read_only,
            home_hidden: seen.home_hidden,
            private_tmp: seen.private_tmp,
            pid_namespace: seen.pid_namespace,
            signals_confined: seen.signals_confined,
            uid: if is_root {
                UidPolicy::RootToNobody
            } else {
                UidPolicy::SameUser
            },
        })
    }
}

/// What the probe program reports, as one JSON line on stderr.
#[derive(Deserialize)]
struct ProbeAnswer {
    network: bool,
    filesystem_read_only: bool,
    home_hidden: bool,
    private_tmp: bool,
    pid_namespace: bool,
    signals_confined: bool,
    uid: u32,
}

/// Looks around from inside: which mounts are writable, what the homes and /tmp show, which
/// interfaces exist, whether the parent can be signalled.
const PROBE: &str = r#"
import json, os, socket, sys

def can_create(folder):
    path = os.path.join(folder, ".billion-llm-probe")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        return False
    os.unlink(path)
    return True

def listing(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []

try:
    mounts = [line.split() for line in open("/proc/self/mountinfo")]
    scratch = {"/tmp", "/var/tmp", "/dev/shm"}
    read_only = all("ro" in m[5].split(",") for m in mounts if m[4] not in scratch)
except OSError:
    # Landlock hides /proc: try the folder above the scratch folder, writable outside.
    read_only = not can_create(os.path.dirname(os.getcwd())) and not can_create("/")
try:
    os.kill(os.getppid(), 0)
    signals = os.getppid() == 0
except OSError:
    signals = True
print(json.dumps({
    "network": [name for _, name in socket.if_nameindex()] == ["lo"],
    "filesystem_read_only": read_only,
    "home_hidden": all(listing(h) == [] for h in HIDDEN),
    "private_tmp": listing("/tmp") == [],
    "pid_namespace": os.getpid() == 1,
    "signals_confined": signals,
    "uid": os.getuid(),
}), file=sys.stderr)
"#;

/// Waits until `child` exits or `deadline` passes, then kills its process group and the child
/// itself (through `kill`, given `-pid` and `pid`), then reaps it. Returns the exit status, or
/// `None` when the deadline passed first.
///
/// The kill comes before the reaping. Until a child is reaped its pid stays its own (an exited
/// child is a zombie that holds it), so the signal reaches the child and its group and nobody
/// else; once reaped, the system may give the pid to any new process, which a kill would then
/// hit. So the loop only asks whether the child has exited, leaving it unreaped, and
/// `Child::wait` reaps it after the kill.
fn wait_then_kill(
    child: &mut std::process::Child,
    deadline: Instant,
    kill: &mut dyn FnMut(libc::pid_t),
) -> Result<Option<std::process::ExitStatus>> {
    let pid = child.id() as libc::pid_t;
    let exited = loop {
        if has_exited(pid)? {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    kill(-pid);
    kill(pid);
    let status = child.wait()?;
    Ok(exited.then_some(status))
}

/// Whether our child `pid` has exited, without reaping it (`WNOWAIT`): it stays a zombie, its
/// pid still its own, until `wait`.
fn has_exited(pid: libc::pid_t) -> std::io::Result<bool> {
    // SAFETY: waitid writes only into `info`, a zeroed siginfo_t that outlives the call; with
    // WNOHANG it does not block, and with WNOWAIT it leaves the child as it is.
    let info = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        info
    };
    // SAFETY: waitid filled `info` (or left it zeroed); si_pid reads its pid field.
    // With WNOHANG a child that has not exited leaves it zero.
    Ok(unsafe { info.si_pid() } != 0)
}

/// The home folder the password database gives `uid`, if any.
fn passwd_home(uid: libc::uid_t) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| PathBuf::from(fields[5]))
    })
}

fn processes_of_current_user() -> u64 {
    let uid = rustix::process::getuid().as_raw();
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

#[cfg(test)]
mod tests;
