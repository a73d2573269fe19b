//! HumanEval's tests, run in the sandbox: the canonical solutions pass, wrong and hostile
//! completions fail, are contained, and the next problem still runs.

use billion_llm::eval::humaneval::{
    load_problems, program, select, Outcome, Problem, Sandbox, SUBSET,
};
use billion_llm::hub::assets::asset;
use std::time::Duration;

fn problems() -> Vec<Problem> {
    load_problems(&asset("HumanEval.jsonl.gz").unwrap()).unwrap()
}

fn sandbox() -> Sandbox {
    Sandbox::new(Duration::from_secs(3)).unwrap()
}

#[test]
fn canonical_solutions_pass_and_wrong_ones_fail() {
    let problems = problems();
    assert_eq!(problems.len(), 164);
    assert_eq!(select(&problems, &SUBSET).unwrap().len(), 20);
    let sandbox = sandbox();
    let failures: Vec<String> = problems
        .iter()
        .filter_map(|p| {
            let run = sandbox.run(&program(p, &p.canonical_solution)).unwrap();
            (run.outcome != Outcome::Passed).then(|| format!("{}: {}", p.task_id, run.error))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    for p in select(&problems, &SUBSET).unwrap() {
        let run = sandbox.run(&program(p, "    return None\n")).unwrap();
        assert_eq!(run.outcome, Outcome::Failed, "{}", p.task_id);
    }
    assert!(select(&problems, &["HumanEval/999"]).is_err());
}

/// Each hostile completion is counted as a failure and leaves nothing behind.
#[test]
fn hostile_completions_are_contained() {
    let problems = problems();
    let p = &select(&problems, &["HumanEval/23"]).unwrap()[0]; // strlen
    let sandbox = sandbox();
    if unsafe { libc::geteuid() } == 0 {
        let isolation = sandbox.probe().unwrap();
        assert!(
            isolation.network && isolation.private_tmp && isolation.unprivileged,
            "{isolation:?}"
        );
    }
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("escaped.txt");
    let cases = [
        ("infinite loop", "    while True:\n        pass\n".to_string()),
        (
            "fork bomb",
            "    import os\n    while True:\n        os.fork()\n".to_string(),
        ),
        ("8 GB allocation", "    x = bytearray(8 * 1024**3)\n    return len(string)\n".to_string()),
        (
            "write outside",
            format!("    open({:?}, 'w').write('x')\n    return len(string)\n", target.to_str().unwrap()),
        ),
        (
            "socket",
            "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    return len(string)\n".to_string(),
        ),
    ];
    for (name, completion) in cases {
        let run = sandbox.run(&program(p, &completion)).unwrap();
        assert_ne!(run.outcome, Outcome::Passed, "{name}: {run:?}");
        assert!(run.seconds < 6.0, "{name} took {} s", run.seconds);
    }
    assert!(!target.exists(), "a program wrote outside its folder");
    // Nothing survived: the sandbox user owns no process, and a normal problem still passes.
    std::thread::sleep(Duration::from_millis(200));
    let ok = sandbox.run(&program(p, &p.canonical_solution)).unwrap();
    assert_eq!(ok.outcome, Outcome::Passed, "{ok:?}");
}
