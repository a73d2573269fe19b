//! The HumanEval sandbox against hostile programs, with every mechanism this system allows,
//! as the user running the tests and, when that is root (CI), also as an ordinary user: the
//! test binary re-runs itself under an unprivileged uid, so the path learners take is covered.
//!
//! Each hostile program stands for a model's completion: it attacks, then returns a wrong
//! answer. It must be contained (the home untouched and unread, the test process alive, no
//! connection made, nothing left running) and counted as a failure, and the next program
//! must still run.

use billion_llm::eval::humaneval::{load_problems, program, Problem};
use billion_llm::eval::sandbox::{Mechanism, Outcome, Sandbox, UidPolicy};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set in the re-run child: the home folder it was given.
const CHILD_HOME: &str = "BILLION_LLM_SANDBOX_TEST_HOME";
/// Set in the re-run child: a readable copy of HumanEval, for the canonical solutions.
const CHILD_HUMANEVAL: &str = "BILLION_LLM_SANDBOX_TEST_HUMANEVAL";
/// The ordinary user the child runs as (no passwd entry needed).
const TEST_UID: u32 = 61_234;
const TOKEN: &str = "hf_billionllmsandboxtestsecret";
const TIMEOUT: Duration = Duration::from_secs(2);

fn strlen() -> Problem {
    Problem {
        task_id: "strlen".into(),
        prompt: "def strlen(string: str) -> int:\n".into(),
        canonical_solution: "    return len(string)\n".into(),
        test: "def check(candidate):\n    assert candidate('abc') == 3\n".into(),
        entry_point: "strlen".into(),
    }
}

/// A home worth protecting: notes and a hub token.
fn plant(home: &Path) {
    std::fs::write(home.join("notes.txt"), "precious").unwrap();
    std::fs::create_dir_all(home.join(".cache/huggingface")).unwrap();
    std::fs::write(home.join(".cache/huggingface/token"), TOKEN).unwrap();
}

/// Completions that attack, then answer wrongly.
fn hostile(home: &Path, port: u16) -> Vec<(&'static str, String)> {
    let h = home.display();
    let body = |attack: &str| {
        let lines: String = attack.lines().map(|l| format!("    {l}\n")).collect();
        format!("{lines}    return None\n")
    };
    vec![
        ("delete a file in the home", body(&format!("import os\nos.remove('{h}/notes.txt')"))),
        ("write into the home", body(&format!("open('{h}/planted.txt', 'w').write('x')"))),
        (
            "read the hub token",
            body(&format!(
                "import sys\nsys.stderr.write(open('{h}/.cache/huggingface/token').read() + '\\n')\nsys.exit(1)"
            )),
        ),
        ("kill the parent", body("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")),
        ("kill every process", body("import os, signal\nos.kill(-1, signal.SIGKILL)")),
        ("fork bomb", body("import os\nwhile True:\n    os.fork()")),
        ("infinite loop", body("while True:\n    pass")),
        ("8 GB allocation", body("x = bytearray(8 * 1024**3)")),
        ("write a large file", body("open('big', 'wb').write(b'x' * (256 << 20))")),
        (
            "open a socket",
            body(&format!(
                "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
            )),
        ),
    ]
}

/// Python processes started by a sandbox (`python3 -I -`) that are still alive.
fn sandboxed_pythons() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.ends_with(b"python3\0-I\0-\0"))
                .unwrap_or(false)
        })
        .count()
}

/// Every hostile program under one mechanism, with `home` as the home to protect.
fn contain(mechanism: Mechanism, home: &Path, problems: &[Problem]) {
    let sandbox = Sandbox::with_mechanism(TIMEOUT, mechanism).unwrap();
    let isolation = sandbox.probe().unwrap();
    eprintln!(
        "{mechanism:?} as uid {}: {isolation:?}",
        rustix::process::getuid().as_raw()
    );
    assert!(isolation.filesystem_read_only, "{isolation:?}");
    assert!(isolation.home_hidden, "{isolation:?}");
    assert!(isolation.private_tmp, "{isolation:?}");
    assert!(isolation.signals_confined, "{isolation:?}");
    let root = rustix::process::geteuid().is_root();
    assert_eq!(
        isolation.uid,
        if root {
            UidPolicy::RootToNobody
        } else {
            UidPolicy::SameUser
        }
    );
    if mechanism == Mechanism::Namespaces {
        assert!(
            isolation.network && isolation.pid_namespace,
            "{isolation:?}"
        );
        assert!(isolation.is_full(), "{:?}", isolation.missing());
    }

    plant(home);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = strlen();
    for (name, completion) in hostile(home, port) {
        let run = sandbox.run(&program(&p, &completion)).unwrap();
        assert_ne!(
            run.outcome,
            Outcome::Passed,
            "{mechanism:?} {name}: {run:?}"
        );
        assert!(
            run.seconds < TIMEOUT.as_secs_f64() + 3.0,
            "{mechanism:?} {name} took {} s",
            run.seconds
        );
        assert!(
            !run.error.contains(TOKEN),
            "{mechanism:?} {name} leaked the token"
        );
    }
    assert_eq!(
        std::fs::read_to_string(home.join("notes.txt")).unwrap(),
        "precious",
        "{mechanism:?}: a program deleted or changed a file in the home"
    );
    assert!(
        !home.join("planted.txt").exists(),
        "{mechanism:?}: a program wrote into the home"
    );
    assert!(
        listener.accept().is_err(),
        "{mechanism:?}: a program connected to a local server"
    );
    // Nothing survived, and a correct program still passes.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sandboxed_pythons(),
        0,
        "{mechanism:?}: sandboxed processes survived"
    );
    let ok = sandbox.run(&program(&p, &p.canonical_solution)).unwrap();
    assert_eq!(ok.outcome, Outcome::Passed, "{mechanism:?}: {ok:?}");
    // Real problems: python starts, imports the standard library and runs the tests.
    let failures: Vec<String> = problems
        .iter()
        .filter_map(|p| {
            let run = sandbox.run(&program(p, &p.canonical_solution)).unwrap();
            (run.outcome != Outcome::Passed).then(|| format!("{}: {}", p.task_id, run.error))
        })
        .collect();
    assert!(failures.is_empty(), "{mechanism:?}: {failures:?}");
}

/// The mechanisms that can start a program on this system; CI must have both.
fn mechanisms() -> Vec<Mechanism> {
    let works = |m| {
        Sandbox::with_mechanism(TIMEOUT, m)
            .unwrap()
            .run("pass\n")
            .is_ok_and(|r| r.outcome == Outcome::Passed)
    };
    let available: Vec<Mechanism> = [Mechanism::Namespaces, Mechanism::Landlock]
        .into_iter()
        .filter(|&m| works(m))
        .collect();
    if std::env::var_os("CI").is_some() {
        assert_eq!(
            available.len(),
            2,
            "CI must test both mechanisms: {available:?}"
        );
    }
    assert!(!available.is_empty(), "no sandbox mechanism works here");
    available
}

#[test]
fn hostile_programs_are_contained() {
    if let Some(home) = std::env::var_os(CHILD_HOME) {
        // The re-run child: an ordinary user, its home as given.
        let problems = std::env::var_os(CHILD_HUMANEVAL)
            .map(|p| load_problems(Path::new(&p)).unwrap())
            .unwrap_or_default();
        for m in mechanisms() {
            contain(m, Path::new(&home), &problems);
        }
        attacks_work_unconfined(Path::new(&home));
        return;
    }
    let humaneval = billion_llm::hub::assets::asset("HumanEval.jsonl.gz").ok();
    let problems: Vec<Problem> = humaneval
        .as_deref()
        .map(|p| load_problems(p).unwrap().into_iter().take(20).collect())
        .unwrap_or_default();
    let home_dir = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    let home = tempfile::tempdir_in(&home_dir).unwrap();
    for m in mechanisms() {
        contain(m, home.path(), &problems);
    }
    if rustix::process::geteuid().is_root() {
        as_ordinary_user(humaneval.as_deref());
    } else {
        attacks_work_unconfined(home.path());
    }
}

/// The same test, re-run by a copy of this binary as an ordinary user whose home is a folder
/// outside /root, /home and /tmp (so that hiding `$HOME` itself is what protects it).
fn as_ordinary_user(humaneval: Option<&Path>) {
    let base = tempfile::Builder::new()
        .prefix("billion-llm-sandbox-test-")
        .tempdir_in("/var/lib")
        .unwrap();
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let exe = base.path().join("sandbox-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, PermissionsExt::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(TEST_UID), Some(TEST_UID)).unwrap();
    std::fs::set_permissions(&home, PermissionsExt::from_mode(0o700)).unwrap();
    let mut command = Command::new(&exe);
    command
        .args([
            "--exact",
            "sandbox::hostile_programs_are_contained",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(base.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env(CHILD_HOME, &home)
        .uid(TEST_UID)
        .gid(TEST_UID);
    if let Some(humaneval) = humaneval {
        let copy = base.path().join("HumanEval.jsonl.gz");
        std::fs::copy(humaneval, &copy).unwrap();
        std::fs::set_permissions(&copy, PermissionsExt::from_mode(0o644)).unwrap();
        command.env(CHILD_HUMANEVAL, &copy);
    }
    if std::env::var_os("CI").is_some() {
        command.env("CI", "true");
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "as uid {TEST_UID}:\n{text}");
    assert!(
        text.contains("1 passed"),
        "as uid {TEST_UID}, no test ran:\n{text}"
    );
    eprintln!("as uid {TEST_UID}:\n{text}");
}

/// The control: without confinement the same user's file attacks succeed, so the test above
/// can fail. (Not as root, where `nobody` could not touch root's home anyway.)
fn attacks_work_unconfined(home: &Path) {
    plant(home);
    let sandbox = Sandbox::unconfined(TIMEOUT).unwrap();
    let p = strlen();
    let attacks = hostile(home, 9);
    let run = |name: &str| {
        let completion = &attacks.iter().find(|a| a.0 == name).unwrap().1;
        sandbox.run(&program(&p, completion)).unwrap()
    };
    run("delete a file in the home");
    assert!(
        !home.join("notes.txt").exists(),
        "unconfined, the delete should work"
    );
    assert!(run("read the hub token").error.contains(TOKEN));
}
