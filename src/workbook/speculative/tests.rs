//! Tests of [`super`]: results files made up in code, read back into tables, charts and text.

use super::*;
use crate::eval::results::RunHeader;
use crate::eval::speed::Measured;
use crate::speculative::{CostSettings, CostedModel, StepCosts, VerifyCost};

fn run(task: &str, drafter: &str, schedule: &str, speedup: f64) -> String {
    format!(
        r#"{{"task": "{task}", "target": "/x/SmolLM2-135M-Instruct.Q4_1.gguf",
        "drafter": "{drafter}", "schedule": {schedule},
        "summary": {{"acceptance_rate": 0.5, "tokens_per_round": 1.5, "speedup": {speedup},
            "tokens_per_s": 60.0, "baseline_tokens_per_s": 50.0, "target_forwards": 9}},
        "drafted_at": [4, 2], "accepted_at": [3, 1], "rounds": 4,
        "hardware": {{"cpu": "Test CPU", "cores": 2, "threads": 2}},
        "instruction_set": "AVX2", "prompt_tokens": 10}}"#
    )
}

fn synthetic_bench() -> SpeculativeBench {
    let lookup = "prompt lookup (n-grams of 2 to 3)";
    let layers = "the target's first 24 layers";
    let runs = [
        run("edit", lookup, r#"{"fixed": 1}"#, 1.2),
        run("edit", lookup, r#"{"fixed": 2}"#, 1.5),
        run(
            "edit",
            lookup,
            r#"{"adaptive": {"start": 2, "max": 16}}"#,
            1.4,
        ),
        run("edit", layers, r#"{"fixed": 1}"#, 0.4),
        run("open", lookup, r#"{"fixed": 1}"#, 0.9),
    ];
    serde_json::from_str(&format!(r#"{{"runs": [{}]}}"#, runs.join(","))).unwrap()
}

#[test]
fn bench_charts_and_table_come_from_the_runs() {
    let bench = synthetic_bench();
    assert_eq!(bench.runs[3].drafter_name(), "first 24 layers");
    let chart = bench.speedup_chart().unwrap();
    for label in [
        "prompt lookup, edit",
        "prompt lookup, open",
        "first 24 layers, edit",
        "plain decoding",
        "K = 1",
        "adaptive K",
    ] {
        assert!(chart.svg.contains(label), "{label}");
    }
    let acceptance = bench.acceptance_by_position_chart("prompt lookup").unwrap();
    assert!(acceptance.svg.contains("edit") && acceptance.svg.contains("open"));
    assert!(!acceptance.svg.contains("first 24 layers"));
    let table = bench.table().unwrap();
    let rows = table.rows();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[2],
        [
            "edit",
            "prompt lookup (n-grams of 2 to 3)",
            "adaptive (2, at most 16)",
            "50.00",
            "1.50",
            "1.40"
        ]
    );
    assert!(table.note.unwrap().contains("Test CPU, AVX2, 2 threads"));
}

fn synthetic_costs() -> CostsRecord {
    let m = |name: &str| CostedModel {
        model: name.to_string(),
        name: name.to_string(),
        parameters: 1,
        weights: "random".to_string(),
        quantization: Some("q4_0".to_string()),
        weight_bytes: 1,
        f32_bytes: 4,
        load_s: 1.0,
    };
    let s = Measured::new(vec![0.1]);
    CostsRecord {
        header: RunHeader {
            timestamp: "2026-11-24T00:00:00Z".to_string(),
            git_commit: None,
            hardware: Hardware {
                cpu: "Test CPU".to_string(),
                cores: 2,
                threads: 2,
            },
            instruction_set: "AVX2".to_string(),
        },
        target: m("Big"),
        draft: m("Small"),
        settings: CostSettings::default(),
        threads: 2,
        costs: StepCosts {
            target_token_s: s.clone(),
            draft_token_s: s.clone(),
            c: 0.2,
            verify: [(1, 1.3), (4, 2.5)]
                .map(|(k, v)| VerifyCost {
                    k,
                    seconds: s.clone(),
                    v,
                })
                .to_vec(),
        },
        target_load_peak_rss_bytes: 5_000_000_000,
        peak_rss_bytes: 6_000_000_000,
        load_average: Some(1.0),
    }
}

#[test]
fn modelled_curves_start_at_one_round_of_cost() {
    let record = synthetic_costs();
    // At α = 0 every round yields one token and costs K·c + v target steps.
    for v in &record.costs.verify {
        let at_zero = record.costs.modelled_speedup(0.0, v.k).unwrap();
        assert!((at_zero - 1.0 / (v.k as f64 * 0.2 + v.v)).abs() < 1e-12);
    }
    let chart = modelled_speedup_chart(&record).unwrap();
    for label in ["modelled, K=1", "modelled, K=4", "Small drafting for Big"] {
        assert!(chart.svg.contains(label), "{label}");
    }
    let table = costs_table(&record).unwrap();
    assert_eq!(table.rows().len(), 2);
    let note = table.note.unwrap();
    assert!(
        note.contains("c = 0.200") && note.contains("5.0 GB"),
        "{note}"
    );
}

#[test]
fn drafted_pieces_are_highlighted_and_escaped() {
    let run = SameRun {
        speculative: crate::speculative::SpeculativeOutput {
            tokens: vec![1, 2],
            from_draft: vec![false, true],
            prompt_tokens: 3,
            rounds: 1,
            drafted: 1,
            accepted: 1,
            target_forwards: 2,
            drafted_at: vec![1],
            accepted_at: vec![1],
            prefill_s: 0.1,
            decode_s: 0.1,
            stopped_at_eos: false,
        },
        plain: crate::model::generation::Generation {
            tokens: vec![1, 2],
            prompt_tokens: 3,
            prefill_s: 0.1,
            decode_s: 0.2,
            time_to_first_token_s: 0.1,
            stopped_at_eos: false,
            interrupted: false,
        },
    };
    let text = DraftedText {
        drafter: "prompt lookup".to_string(),
        schedule: KSchedule::Fixed(4),
        pieces: vec![("a<b".to_string(), false), (" c".to_string(), true)],
        run,
    };
    let html = text.to_html();
    assert!(html.contains("a&lt;b<span style=\"background: #b5e3ad\"> c</span>"));
    assert!(html.contains("100% of drafted tokens accepted"));
    assert!(html.contains("(2.00×)"), "{html}");
}
