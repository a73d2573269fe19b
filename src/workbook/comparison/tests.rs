//! Tests of [`super`]: results files made up in code, read back into tables, charts and text.

use super::*;
use crate::eval::results::RunHeader;
use crate::hub::assets::{GEMMA3_GGUF, SMOLLM2_GGUF};

#[test]
fn subject_labels_are_short() {
    assert_eq!(short_subject("high_school_physics"), "HS physics");
    assert_eq!(short_subject("us_foreign_policy"), "us foreign policy");
}

/// A model result with the given decode speed and peak memory, an MMLU score when `mmlu`
/// is `Some((correct, total))` and the given HumanEval result.
fn result(
    source: &str,
    weights: &str,
    tok_s: f64,
    peak_gb: f64,
    mmlu: Option<(usize, usize)>,
    humaneval: serde_json::Value,
) -> ModelResult {
    let speed = crate::eval::speed::Measured::new(vec![tok_s]);
    let mmlu = mmlu.map(|(correct, total)| {
        let acc = crate::eval::mmlu::Accuracy::new(correct, total);
        serde_json::json!({
            "source": "test", "shots_from_test_split": false, "shots": 5,
            "summary": {"per_subject": {}, "micro": acc, "macro_accuracy": acc.accuracy,
                        "macro_ci95": [acc.ci95_low, acc.ci95_high]},
            "prefill_tokens": 0, "prefill_tokens_saved": 0, "truncated_prompts": 0,
            "seconds": 1.0, "seconds_per_question": 1.0, "questions": []
        })
    });
    let result = serde_json::json!({
        "mmlu_accuracy": null, "humaneval_pass_rate": null,
        "tokens_per_second": tok_s, "peak_memory_gb": peak_gb,
        "source": source, "weights": weights, "dtype": "f32", "quantization": "q4_0",
        "load_seconds": 1.0,
        "memory": {"weights_bytes": 1, "peak_rss_bytes": 1},
        "speed": {"prompt_tokens": 64, "new_tokens": 128, "warmup": 1,
                  "prefill_tokens_per_s": speed, "decode_tokens_per_s": speed},
        "mmlu": mmlu, "humaneval": humaneval
    });
    serde_json::from_value(result).unwrap()
}

fn report(timestamp: &str, models: Vec<ModelResult>) -> BenchReport {
    BenchReport {
        header: RunHeader {
            timestamp: timestamp.into(),
            git_commit: None,
            hardware: BenchHardware {
                device: "Cpu".into(),
                gpu_name: None,
                cpu: "Test CPU".into(),
                cores: 2,
                threads: 2,
            },
            instruction_set: String::new(),
        },
        complete: true,
        models: models.into_iter().map(|m| (m.source.clone(), m)).collect(),
        versions: Default::default(),
    }
}

/// The entry of one model measured once.
fn entry(
    source: &str,
    weights: &str,
    tok_s: f64,
    peak_gb: f64,
    mmlu: Option<(usize, usize)>,
) -> Entry {
    let r = result(
        source,
        weights,
        tok_s,
        peak_gb,
        mmlu,
        serde_json::Value::Null,
    );
    let runs = [(
        PathBuf::from("bench-test.json"),
        report("2026-01-01T00:00:00Z", vec![r]),
    )];
    latest_entries(&runs).remove(0)
}

/// HumanEval as a results file written before formats and sampling were recorded.
fn humaneval_without_format(passed: usize) -> serde_json::Value {
    serde_json::json!({
        "source": "HumanEval.jsonl.gz", "subset": "20 fixed problems",
        "samples_per_problem": 1, "passed": passed, "problems": 20,
        "pass_at_1": passed as f64 / 20.0, "isolation": {"network": true},
        "timeout_seconds": 3.0, "seconds": 40.0, "results": []
    })
}

fn humaneval_chat(samples: usize, temperature: f64, pass_at_1: f64) -> serde_json::Value {
    serde_json::json!({
        "source": "HumanEval.jsonl.gz", "subset": "20 fixed problems", "format": "chat",
        "sampling": {"samples": samples, "temperature": temperature, "top_p": 0.95, "seed": 42},
        "passed": 4, "problems": 20, "pass_at_1": pass_at_1,
        "pass_at_k": {"1": pass_at_1, "10": 0.3},
        "isolation": {"mechanism": "namespaces", "network": true, "filesystem_read_only": true,
                      "home_hidden": true, "private_tmp": true, "pid_namespace": true,
                      "signals_confined": true, "uid": "root_to_nobody"},
        "timeout_seconds": 3.0, "seconds": 40.0, "results": []
    })
}

#[test]
fn a_row_keeps_the_latest_run_of_each_measurement_and_every_humaneval_setting() {
    let m = "/m/smol.gguf";
    let runs = [
        (
            PathBuf::from("bench-1.json"),
            report(
                "2026-01-01T00:00:00Z",
                vec![result(
                    m,
                    "pretrained",
                    40.0,
                    0.6,
                    Some((27, 100)),
                    humaneval_without_format(0),
                )],
            ),
        ),
        (
            PathBuf::from("bench-2.json"),
            report(
                "2026-01-02T00:00:00Z",
                vec![result(
                    m,
                    "pretrained",
                    44.0,
                    0.5,
                    None,
                    humaneval_chat(1, 0.0, 0.15),
                )],
            ),
        ),
        (
            PathBuf::from("bench-3.json"),
            report(
                "2026-01-03T00:00:00Z",
                vec![result(
                    m,
                    "pretrained",
                    45.0,
                    0.5,
                    None,
                    humaneval_chat(10, 0.8, 0.12),
                )],
            ),
        ),
    ];
    let entries = latest_entries(&runs);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.result.tokens_per_second, 45.0);
    assert!(e.mmlu.as_ref().unwrap().file.ends_with("bench-1.json"));
    let settings: Vec<String> = e.humaneval.iter().map(|h| h.value.setting()).collect();
    assert_eq!(
        settings,
        [
            "chat",
            "chat, 10 samples at T 0.8, top-p 0.95",
            "completion"
        ]
    );
    assert_eq!(e.files(), ["bench-3.json", "bench-1.json", "bench-2.json"]);

    let row = &measured_table(&entries).unwrap().rows()[0];
    assert_eq!(row[1], "27.0 (19.3–36.4), 100 q");
    assert_eq!(
        row[2],
        "15.0 (4/20) chat · 12.0 chat, 10 samples at T 0.8, top-p 0.95 · 0.0 (0/20) completion ⚠"
    );
    let detail = humaneval_table(&entries).unwrap().unwrap().rows();
    assert_eq!(detail.len(), 3);
    assert_eq!(
        &detail[1][1..7],
        [
            "chat",
            "10 samples at T 0.8, top-p 0.95",
            "12.0",
            "–",
            "30.0",
            "4/20"
        ]
    );
    assert_eq!(&detail[2][1..4], ["completion", "greedy", "0.0 ⚠"]);
    let advice = advice(&entries).join("\n");
    assert!(
        advice.contains("smol q4_0 has the highest HumanEval pass@1 here: 15.0% (chat; 4/20"),
        "{advice}"
    );
    assert!(advice.contains("completion 0.0%"), "{advice}");
}

#[test]
fn advice_follows_the_numbers_and_names_what_is_missing() {
    let entries = [
        entry(
            "/models/small.gguf",
            "pretrained",
            50.0,
            0.5,
            Some((2800, 10_000)),
        ),
        entry("tinyllama", "random", 20.0, 1.25, None),
    ];
    let text = advice(&entries).join("\n");
    assert!(
        text.contains("small q4_0 is the only model with an MMLU score"),
        "{text}"
    );
    assert!(text.contains("only just above chance"), "{text}");
    assert!(
        text.contains("TinyLlama 1.1B: 20.0 tokens/s decode and 1.25 GB at peak"),
        "{text}"
    );
    assert!(text.contains("billion-llm download pythia-1b"), "{text}");

    let coin_flip = [entry("/m/a.gguf", "pretrained", 1.0, 1.0, Some((26, 100)))];
    assert!(advice(&coin_flip).join("\n").contains("includes chance"));
}

#[test]
fn no_results_still_make_a_page() {
    let md = comparison_markdown(&[], None).unwrap();
    assert!(md.contains("No benchmark results yet"));
    assert!(md.contains("Published (not measured here)"));
    assert!(md.contains("billion-llm download tinyllama"));
}

/// A real model's result as the Short's run leaves it: MMLU on the ten subjects, `per_subject`
/// questions each, and greedy HumanEval.
fn short_result(file: &str, tok_s: f64, per_subject: usize) -> ModelResult {
    let source = format!("/assets/{file}");
    let n = DEFAULT_SUBJECTS.len() * per_subject;
    let mut r = result(
        &source,
        "pretrained",
        tok_s,
        0.3,
        Some((n / 4, n)),
        humaneval_chat(1, 0.0, 0.1),
    );
    r.mmlu.as_mut().unwrap().summary.per_subject = DEFAULT_SUBJECTS
        .iter()
        .map(|s| {
            let acc = crate::eval::mmlu::Accuracy::new(per_subject / 4, per_subject);
            (s.to_string(), acc)
        })
        .collect();
    r
}

#[test]
fn the_short_reads_its_own_run_not_the_newest() {
    let random = result(
        "tinyllama",
        "random",
        50.0,
        0.6,
        None,
        serde_json::Value::Null,
    );
    let run = |stamp: &str, models: Vec<ModelResult>| {
        (
            PathBuf::from(format!("bench-{stamp}.json")),
            report(stamp, models),
        )
    };
    let runs = vec![
        run("2026-01-01", vec![random.clone()]),
        run(
            "2026-01-02",
            vec![
                short_result(SMOLLM2_GGUF, 180.0, 100),
                short_result(GEMMA3_GGUF, 60.0, 100),
            ],
        ),
        // Newer, but not the Short's run: one model alone, or both with --limit 3.
        run("2026-01-03", vec![short_result(SMOLLM2_GGUF, 999.0, 100)]),
        run(
            "2026-01-04",
            vec![
                short_result(SMOLLM2_GGUF, 999.0, 3),
                short_result(GEMMA3_GGUF, 999.0, 3),
            ],
        ),
    ];
    assert!(is_short_run(&runs[1].1));
    assert!(!is_short_run(&runs[2].1) && !is_short_run(&runs[3].1));
    let entries = short_entries(&runs);
    let speeds: Vec<(String, f64)> = entries
        .iter()
        .map(|e| (e.name.clone(), e.result.tokens_per_second))
        .collect();
    assert_eq!(speeds.len(), 3, "{speeds:?}");
    assert_eq!(speeds[0].1, 180.0);
    assert_eq!(speeds[1].1, 60.0);
    assert_eq!(speeds[2].1, 50.0);
    assert!(entries[..2]
        .iter()
        .all(|e| e.files() == ["bench-2026-01-02.json"]));
    // A later speed-only run of both models gives their speed; the rest stays the Short run's.
    let speed_only = |file: &str, tok_s: f64| {
        let mut r = short_result(file, tok_s, 100);
        (r.mmlu, r.humaneval) = (None, None);
        r
    };
    let mut with_rerun = runs.clone();
    with_rerun.push(run(
        "2026-01-05",
        vec![
            speed_only(SMOLLM2_GGUF, 170.0),
            speed_only(GEMMA3_GGUF, 70.0),
        ],
    ));
    let entries = short_entries(&with_rerun);
    assert_eq!(entries[0].result.tokens_per_second, 170.0);
    assert_eq!(entries[1].result.speed.decode_tokens_per_s.mean, 70.0);
    assert_eq!(
        entries[0].files(),
        ["bench-2026-01-02.json", "bench-2026-01-05.json"]
    );
    assert!(entries[0].mmlu.is_some() && !entries[0].humaneval.is_empty());
    // Without the Short's run only the random-weight rows remain.
    assert_eq!(short_entries(&runs[2..]).len(), 0);
    assert_eq!(short_entries(&[runs[0].clone(), runs[3].clone()]).len(), 1);
}
