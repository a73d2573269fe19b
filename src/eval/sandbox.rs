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

use anyhow::{bail, Context, Result};
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

/// How the program is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Linux namespaces: read-only mounts, hidden homes, private /tmp, own PID and network
    /// namespaces.
    Namespaces,
    /// Landlock: file access limited to the system folders and a scratch folder, TCP and
    /// signals to other processes refused (as far as the kernel's Landlock version allows).
    Landlock,
    /// `--unsafe-no-sandbox`: only rlimits, a process group and a cleared environment.
    Unconfined,
    /// A results file written before the sandbox recorded its mechanism.
    #[default]
    Unrecorded,
}

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

const NOBODY: u32 = 65534;

/// The type `setrlimit` takes for a resource differs between C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

impl Sandbox {
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
        hidden.extend(passwd_home(unsafe { libc::getuid() }));
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
        let is_root = unsafe { libc::geteuid() } == 0;
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
        let mut confinement = Confinement::prepare(self, is_root, &workdir)?;
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
        let is_root = unsafe { libc::geteuid() } == 0;
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

/// Everything the child needs, prepared before the fork: between fork and exec a child of a
/// multi-threaded process may only make system calls (no allocation, no locks).
struct Confinement {
    mechanism: Mechanism,
    is_root: bool,
    limits: Vec<(Resource, u64)>,
    workdir: CString,
    hidden: Vec<CString>,
    /// `/proc/self/uid_map` and `gid_map` lines: the user keeps its id inside its namespace,
    /// so `exec` drops the namespace's capabilities and the program cannot undo our mounts.
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    #[cfg(target_os = "linux")]
    landlock: Option<landlock::RulesetCreated>,
}

impl Confinement {
    fn prepare(sandbox: &Sandbox, is_root: bool, workdir: &Path) -> Result<Self> {
        let processes = if is_root {
            sandbox.processes
        } else {
            processes_of_current_user() + sandbox.processes
        };
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Confinement {
            mechanism: sandbox.mechanism,
            is_root,
            limits: vec![
                (libc::RLIMIT_CPU, sandbox.cpu_seconds),
                (libc::RLIMIT_AS, sandbox.memory_bytes),
                (libc::RLIMIT_FSIZE, sandbox.file_bytes),
                (libc::RLIMIT_NPROC, processes),
                (libc::RLIMIT_CORE, 0),
            ],
            workdir: CString::new(workdir.as_os_str().as_encoded_bytes())?,
            hidden: sandbox
                .hidden
                .iter()
                .map(|h| CString::new(h.as_os_str().as_encoded_bytes()))
                .collect::<Result<_, _>>()?,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            #[cfg(target_os = "linux")]
            landlock: match sandbox.mechanism {
                Mechanism::Landlock => Some(landlock_ruleset(workdir)?),
                _ => None,
            },
        })
    }

    // ANCHOR: confine
    /// The child's side of [`Sandbox::run`], between fork and exec.
    fn enter(&mut self) -> std::io::Result<()> {
        // SAFETY: plain system calls on data prepared before the fork.
        unsafe {
            check(libc::setpgid(0, 0))?;
            #[cfg(target_os = "linux")]
            {
                // Die with the benchmark, and never gain privileges through exec.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                if self.mechanism == Mechanism::Namespaces {
                    // Returns in the program's process, PID 1 of its namespace.
                    self.enter_namespaces()?;
                }
            }
            check(libc::chdir(self.workdir.as_ptr()))?;
            for &(resource, value) in &self.limits {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                check(libc::setrlimit(resource, &limit))?;
            }
            if self.is_root {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(NOBODY))?;
                check(libc::setuid(NOBODY))?;
            }
            #[cfg(target_os = "linux")]
            if let Some(ruleset) = self.landlock.take() {
                match ruleset.restrict_self() {
                    Ok(s) if s.ruleset != landlock::RulesetStatus::NotEnforced => {}
                    _ => return Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
                }
            }
        }
        Ok(())
    }

    /// New namespaces, read-only mounts with private scratch folders and hidden homes, then a
    /// fork: the parent stays outside as the init's keeper and exits with its status; the
    /// child returns as PID 1 of the new PID namespace, with a /proc of its own.
    #[cfg(target_os = "linux")]
    unsafe fn enter_namespaces(&self) -> std::io::Result<()> {
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
        if !self.is_root {
            flags |= libc::CLONE_NEWUSER;
        }
        check(libc::unshare(flags))?;
        if !self.is_root {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", &self.uid_map)?;
            write_file(c"/proc/self/gid_map", &self.gid_map)?;
        }
        // Our mounts stay ours, then every inherited mount becomes read-only at once.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        check(libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) as libc::c_int)?;
        for dir in [c"/tmp", c"/var/tmp", c"/dev/shm"] {
            let ok = mount_tmpfs(dir, 0, c"size=16m,mode=1777");
            if !ok && dir == c"/tmp" {
                return Err(std::io::Error::last_os_error());
            }
        }
        for dir in &self.hidden {
            // A home inside another hidden folder is already gone (ENOENT): fine.
            if !mount_tmpfs(dir, libc::MS_RDONLY | libc::MS_NOEXEC, c"size=4k,mode=755")
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let pid = check(libc::fork())?;
        if pid > 0 {
            // The keeper: hold no file of the program's (so the benchmark sees EOF and the
            // spawn's error pipe closes), wait, and pass the status on.
            libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            libc::_exit(128 + libc::WTERMSIG(status));
        }
        // PID 1 of the namespace: die with the keeper, lead a session of its own (so that
        // `kill(0, ...)` reaches nobody else), and see only this namespace in /proc.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        check(libc::setsid())?;
        let proc_flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            proc_flags,
            std::ptr::null(),
        ) != 0
            && !mount_tmpfs(c"/proc", proc_flags, c"size=4k,mode=555")
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    // ANCHOR_END: confine
}

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

/// A tmpfs mounted on `dir`; false (with errno set) when it could not be.
#[cfg(target_os = "linux")]
unsafe fn mount_tmpfs(
    dir: &std::ffi::CStr,
    flags: libc::c_ulong,
    options: &std::ffi::CStr,
) -> bool {
    libc::mount(
        c"tmpfs".as_ptr(),
        dir.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | flags,
        options.as_ptr().cast(),
    ) == 0
}

#[cfg(target_os = "linux")]
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    let fd = check(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
    let written = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if written != data.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A system call's result, or the error it set.
fn check<T: Default + PartialOrd>(result: T) -> std::io::Result<T> {
    if result < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The Landlock rules: read and execute beneath the system folders, read and write the null
/// and random devices, everything beneath the scratch folder; TCP refused; signals and
/// abstract Unix sockets scoped to the program. Rights the kernel's Landlock version lacks
/// are dropped (best effort), which [`Sandbox::probe`] then reports.
#[cfg(target_os = "linux")]
fn landlock_ruleset(workdir: &Path) -> Result<landlock::RulesetCreated> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        Scope, ABI,
    };
    let abi = ABI::V6;
    let system: Vec<&str> = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let devices: Vec<&str> = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    Ok(Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .add_rules(path_beneath_rules(system, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(
            devices,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))?
        .add_rules(path_beneath_rules([workdir], AccessFs::from_all(abi)))?)
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
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn isolation_lists_what_did_not_hold() {
        let full = Isolation {
            mechanism: Mechanism::Namespaces,
            network: true,
            filesystem_read_only: true,
            home_hidden: true,
            private_tmp: true,
            pid_namespace: true,
            signals_confined: true,
            uid: UidPolicy::SameUser,
        };
        assert!(full.is_full());
        let partial = Isolation {
            network: false,
            pid_namespace: false,
            ..full
        };
        assert_eq!(partial.missing(), ["no network"]);
        // A results file from before the sandbox recorded all this reads as not isolated.
        let old: Isolation =
            serde_json::from_str(r#"{"network":true,"private_tmp":true,"unprivileged":true}"#)
                .unwrap();
        assert_eq!(old.mechanism, Mechanism::Unrecorded);
        assert!(!old.is_full());
    }

    /// Whether `pid` is a child of ours not yet reaped (running, or exited and a zombie): only
    /// then is its pid still its own, and a signal to it or its group cannot reach a process
    /// that was given the pid after it.
    fn unreaped_child(pid: libc::pid_t) -> bool {
        // Once reaped, the pid is no child of ours: waitid fails with ECHILD.
        has_exited(pid).is_ok()
    }

    /// A program that exits by itself before the deadline: the kill that follows must reach
    /// its pid while the pid is still its own. Once reaped, the pid is free for the system to
    /// give to any new process, which the kill would then hit.
    #[test]
    fn a_child_that_exits_is_signalled_only_before_it_is_reaped() {
        let mut child = Command::new("sh")
            .args(["-c", "exit 3"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let mut signalled = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = wait_then_kill(&mut child, deadline, &mut |target| {
            signalled.push((target, unreaped_child(pid)));
        })
        .unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        assert_eq!(signalled, [(-pid, true), (pid, true)]);
        assert!(!unreaped_child(pid), "the child is reaped in the end");
    }

    /// A program still running at the deadline is killed and reaped.
    #[test]
    fn a_child_past_its_deadline_is_killed_and_reaped() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = wait_then_kill(&mut child, start + Duration::from_millis(200), &mut |t| {
            // SAFETY: kill(2) only sends a signal, here to our unreaped child and its group.
            unsafe { libc::kill(t, libc::SIGKILL) };
        })
        .unwrap();
        assert!(status.is_none(), "{status:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!unreaped_child(child.id() as libc::pid_t));
    }

    #[test]
    fn homes_are_hidden_but_never_the_python() {
        let sandbox = Sandbox::unconfined(Duration::from_secs(1)).unwrap();
        assert!(sandbox.hidden().contains(&PathBuf::from("/home")));
        assert!(sandbox
            .hidden()
            .iter()
            .all(|h| !sandbox.python.starts_with(h) && h != Path::new("/")));
    }
}
