//! HumanEval's tests, run in the sandbox: the canonical solutions pass and wrong ones fail
//! (hostile programs: sandbox.rs); the chat format's code extraction, pass@k, and a
//! chat-format run on the real SmolLM2 GGUF.

use billion_llm::eval::bench::{humaneval_format, run_humaneval, BenchSettings, HumanEvalSetup};
use billion_llm::eval::humaneval::{
    load_problems, pass_at_k, program, select, Format, Outcome, Problem, Sampling, Sandbox, SUBSET,
};
use billion_llm::eval::humaneval_chat;
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::chat_template::ChatTemplate;
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::hub::zoo::ChatFormat;
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

/// The code of an answer, as `bench` takes it in chat format.
fn code(answer: &str) -> String {
    humaneval_chat::extract_code(answer)
}

#[test]
fn code_is_taken_from_real_looking_chat_answers() {
    let strlen = "def strlen(string: str) -> int:\n    return len(string)\n";
    // A fence with a language tag, prose before and after.
    let tagged = format!(
        "Here's a Python function that returns the length of a string:\n\n```python\n{strlen}```\n\n\
         This function uses the built-in `len()` function to count the characters.\n"
    );
    assert_eq!(code(&tagged), strlen);
    // A fence without a language tag.
    assert_eq!(code(&format!("Sure!\n```\n{strlen}```\n")), strlen);
    // Several blocks: the first is the solution, the second an example of its use.
    let several = format!(
        "```python\n{strlen}```\n\nExample usage:\n\n```python\nprint(strlen(\"abc\"))  # 3\n```\n"
    );
    assert_eq!(code(&several), strlen);
    // No fence: the code after the prose, up to the prose that follows it.
    let unfenced = format!(
        "Sure! Here is the function:\n\n{strlen}\nThis function returns the length of the \
         string.\n1. It calls `len`.\n"
    );
    assert_eq!(code(&unfenced), strlen);
    // No fence, only a body, as a chat model continuing the prompt sometimes writes.
    assert_eq!(
        code("    return len(string)\n\nExplanation: `len` counts the characters.\n"),
        "    return len(string)\n"
    );
    // Prose only: nothing to run.
    assert_eq!(code("I'm sorry, I can't help with that."), "");
    // A block cut off by the token limit runs to the end of the answer.
    assert_eq!(
        humaneval_chat::first_fenced_block("```python\ndef f():\n    return 1"),
        Some(("def f():\n    return 1", false))
    );
    assert_eq!(
        humaneval_chat::first_fenced_block("Text.\n```py\nx = 1\n```\nMore."),
        Some(("x = 1\n", true))
    );
}

#[test]
fn an_answer_after_the_response_prefix_is_the_code_block_it_opened() {
    let template = ChatTemplate::builtin(ChatFormat::ChatMl, "", "<|im_end|>");
    let prompter = humaneval_chat::ChatPrompter::new(template);
    let generated = "def add(a, b):\n    return a + b\n```\n\nThe function adds `a` and `b`.\n";
    let answer = prompter.answer(generated);
    assert!(answer.starts_with(humaneval_chat::RESPONSE_PREFIX));
    assert_eq!(code(&answer), "def add(a, b):\n    return a + b\n");
}

#[test]
fn pass_at_k_matches_hand_computed_values() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    // c = 0: no sample passed, whatever k.
    for k in [1, 5, 10] {
        assert_eq!(pass_at_k(10, 0, k), 0.0);
    }
    // c = n: every sample passed.
    for k in [1, 5, 10] {
        assert_eq!(pass_at_k(10, 10, k), 1.0);
    }
    // n = 10, c = 1: pass@1 = 1/10; pass@5 = 1 - C(9,5)/C(10,5) = 1 - 126/252; pass@10 = 1.
    assert!(close(pass_at_k(10, 1, 1), 0.1));
    assert!(close(pass_at_k(10, 1, 5), 0.5));
    assert_eq!(pass_at_k(10, 1, 10), 1.0);
    // n = 10, c = 3, k = 5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
    assert!(close(pass_at_k(10, 3, 5), 1.0 - 21.0 / 252.0));
    // n = 20, c = 2, k = 10: 1 - C(18,10)/C(20,10) = 1 - (10·9)/(20·19).
    assert!(close(pass_at_k(20, 2, 10), 1.0 - 90.0 / 380.0));
    // A large n, where C(200, 100) ≈ 9e58 would lose every digit in floats:
    // 1 - C(195,100)/C(200,100) = 1 - (100·99·98·97·96)/(200·199·198·197·196).
    let ratio = (100.0 * 99.0 * 98.0 * 97.0 * 96.0) / (200.0 * 199.0 * 198.0 * 197.0 * 196.0);
    assert!(close(pass_at_k(200, 5, 100), 1.0 - ratio));
    // k above n is not estimable.
    assert!(pass_at_k(5, 1, 10).is_nan());
}

#[test]
fn sampling_settings_that_cannot_estimate_pass_at_k_are_refused() {
    let err = |s: Sampling| format!("{:#}", s.validate().unwrap_err());
    assert!(err(Sampling {
        samples: 0,
        ..Sampling::default()
    })
    .contains("--samples 0"));
    let greedy_ten = err(Sampling {
        samples: 10,
        ..Sampling::default()
    });
    assert!(greedy_ten.contains("identical"), "{greedy_ten}");
    assert!(greedy_ten.contains("--temperature"), "{greedy_ten}");
    let chen = Sampling {
        samples: 10,
        temperature: 0.8,
        top_p: 0.95,
        seed: 1,
    };
    chen.validate().unwrap();
    assert_eq!(chen.ks(), [1, 5, 10]);
    assert_eq!(Sampling::default().ks(), [1]);
    assert_eq!(chen.params(3).seed, 4);
}

/// SmolLM2-135M-Instruct's own chat template (from its GGUF) on the first two problems: the
/// run completes and records the chat format, the response prefix and each sample's code.
#[test]
fn a_chat_format_run_on_the_real_smollm2() {
    let gguf = asset(SMOLLM2_GGUF).unwrap();
    let mut model = load(gguf.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let settings = BenchSettings {
        subjects: Vec::new(),
        limit: Some(2),
        skip_mmlu: true,
        skip_humaneval: false,
        humaneval_all: false,
        mmlu_file: Default::default(),
        mmlu_dev_file: None,
        humaneval_file: asset("HumanEval.jsonl.gz").unwrap(),
        humaneval_timeout: Duration::from_secs(3),
        // auto: the GGUF ships a chat template, so chat.
        humaneval_format: None,
        humaneval_sampling: Sampling::default(),
        unsafe_no_sandbox: false,
        speed: Default::default(),
        progress: false,
    };
    let setup = HumanEvalSetup::new(&settings).unwrap();
    let start = std::time::Instant::now();
    // Two threads, as `bench --threads 2` gives it, on a pool of this test's own: setting
    // RAYON_NUM_THREADS here would race with the other tests of this process reading it.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let result = pool
        .install(|| run_humaneval(&mut model, &setup, &settings))
        .unwrap();
    eprintln!(
        "two chat-format problems in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(result.format, Format::Chat);
    assert_eq!(
        result.response_prefix.as_deref(),
        Some(humaneval_chat::RESPONSE_PREFIX)
    );
    assert_eq!(result.problems, 2);
    assert_eq!(result.results.len(), 2);
    assert_eq!(result.per_problem[0].n, 1);
    assert!(result
        .results
        .iter()
        .all(|r| r.code.is_some() && r.tokens > 0));
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["format"], "chat");
    assert_eq!(json["sampling"]["temperature"], 0.0);
    assert!(json["pass_at_k"]["1"].is_f64());

    // Without a chat template, chat is refused with the fix, and auto means completion.
    model.chat_template = None;
    let err = format!(
        "{:#}",
        humaneval_format(&model, Some(Format::Chat)).unwrap_err()
    );
    assert!(err.contains("--humaneval-format completion"), "{err}");
    assert_eq!(humaneval_format(&model, None).unwrap(), Format::Completion);
}
