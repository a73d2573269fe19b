//! The child's side of the sandbox, between fork and exec: rlimits, a process group, and the
//! mechanism's confinement (namespaces with read-only mounts and hidden homes, or Landlock
//! rules). Everything here runs on data prepared before the fork, with plain system calls.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::path::Path;

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

const NOBODY: u32 = 65534;

/// The type `setrlimit` takes for a resource differs between C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) type Resource = libc::c_int;

/// Everything the child needs, prepared before the fork: between fork and exec a child of a
/// multi-threaded process may only make system calls (no allocation, no locks).
pub(super) struct Confinement {
    pub(super) mechanism: Mechanism,
    pub(super) is_root: bool,
    pub(super) limits: Vec<(Resource, u64)>,
    pub(super) workdir: CString,
    pub(super) hidden: Vec<CString>,
    /// `/proc/self/uid_map` and `gid_map` lines: the user keeps its id inside its namespace,
    /// so `exec` drops the namespace's capabilities and the program cannot undo our mounts.
    pub(super) uid_map: Vec<u8>,
    pub(super) gid_map: Vec<u8>,
    #[cfg(target_os = "linux")]
    pub(super) landlock: Option<landlock::RulesetCreated>,
}

impl Confinement {
    // ANCHOR: confine
    /// The child's side of [`super::Sandbox::run`], between fork and exec.
    pub(super) fn enter(&mut self) -> std::io::Result<()> {
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
    ///
    /// # Safety
    /// Only between fork and exec (from [`Confinement::enter`]): it forks again, and the parent
    /// of that fork never returns.
    #[cfg(target_os = "linux")]
    unsafe fn enter_namespaces(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on data prepared before the fork (paths, maps, flags, a
        // stack `mount_attr` and `status`); the caller guarantees that this is the sandbox's
        // child between fork and exec, so the keeper's `_exit` ends only that child.
        unsafe {
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
    }
    // ANCHOR_END: confine
}

/// A tmpfs mounted on `dir`; false (with errno set) when it could not be.
#[cfg(target_os = "linux")]
fn mount_tmpfs(dir: &std::ffi::CStr, flags: libc::c_ulong, options: &std::ffi::CStr) -> bool {
    // SAFETY: mount(2) reads the four NUL-terminated strings, which outlive the call.
    unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | flags,
            options.as_ptr().cast(),
        ) == 0
    }
}

#[cfg(target_os = "linux")]
/// `data` written to the existing file `path` with plain system calls (no allocation, so it
/// may run between fork and exec).
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: open(2) reads the NUL-terminated path; write(2) reads `data.len()` bytes of
    // `data`; the descriptor is ours and closed once.
    let written = unsafe {
        let fd = check(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
        let written = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        written
    };
    if written != data.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A system call's result, or the error it set.
pub(super) fn check<T: Default + PartialOrd>(result: T) -> std::io::Result<T> {
    if result < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The Landlock rules: read and execute beneath the system folders, read and write the null
/// and random devices, everything beneath the scratch folder; TCP refused; signals and
/// abstract Unix sockets scoped to the program. Rights the kernel's Landlock version lacks
/// are dropped (best effort), which [`super::Sandbox::probe`] then reports.
#[cfg(target_os = "linux")]
pub(super) fn landlock_ruleset(workdir: &Path) -> Result<landlock::RulesetCreated> {
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
