//! HumanEval's tests, run in the sandbox: the canonical solutions pass and wrong ones fail
//! (hostile programs: tests/sandbox.rs).

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
