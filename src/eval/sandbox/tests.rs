//! The sandbox's isolation, checked from inside it, as root and as an unprivileged user.

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
        serde_json::from_str(r#"{"network":true,"private_tmp":true,"unprivileged":true}"#).unwrap();
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
