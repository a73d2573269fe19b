//! Tests of [`super`]: results files made up in code, read back into tables, charts and text.

use super::*;
use crate::eval::results::Hardware;
use crate::eval::results::RunHeader;
use crate::eval::speed::Measured;
use crate::speculative::bench::HindsightRun;
use crate::speculative::{CostSettings, CostedModel, StepCosts, VerifyCost};

fn header() -> RunHeader {
    RunHeader {
        timestamp: "2026-11-24T00:00:00Z".to_string(),
        git_commit: None,
        hardware: Hardware {
            cpu: "Test CPU".to_string(),
            cores: 2,
            threads: 2,
        },
        instruction_set: "AVX2".to_string(),
    }
}

fn run(task: &str, drafter: &str, schedule: KSchedule, speedups: &[f64]) -> BenchRun {
    let m = Measured::new(vec![100.0]);
    BenchRun {
        task: task.to_string(),
        draft: "lookup".to_string(),
        drafter: drafter.to_string(),
        schedule,
        new_tokens: 40,
        acceptance_rate: 0.5,
        tokens_per_round: 1.5,
        rounds: 4,
        rounds_by_k: vec![1, 3],
        drafted_at: vec![4, 2],
        accepted_at: vec![3, 1],
        first_right_by_situation: vec![(10, 9), (0, 0), (4, 1), (20, 1)],
        speculative_tokens_per_s: m.clone(),
        plain_tokens_per_s: m,
        speedup: Measured::new(speedups.to_vec()),
        first_difference: None,
    }
}

fn synthetic_bench() -> SpeculativeBench {
    let lookup = "prompt lookup (n-grams of 2 to 3)";
    let layers = "the target's first 24 layers";
    let cost = KSchedule::Cost { max: 16 };
    let runs = vec![
        run("edit", lookup, KSchedule::Fixed(1), &[1.2]),
        run("edit", lookup, KSchedule::Fixed(2), &[1.5, 1.4, 1.7]),
        run("edit", lookup, cost, &[1.3]),
        run("edit", layers, KSchedule::Fixed(1), &[0.4]),
        run("open", lookup, KSchedule::Fixed(1), &[0.9]),
        run("open", lookup, cost, &[1.0]),
    ];
    SpeculativeBench {
        record: BenchRecord {
            header: header(),
            model: "/x/SmolLM2-135M-Instruct.Q4_1.gguf".to_string(),
            max_new_tokens: 192,
            repetitions: 3,
            tasks: short_tasks(),
            runs,
            forward_s: [1.0, 1.2].map(|s| Measured::new(vec![s])).to_vec(),
            hindsight: vec![HindsightRun {
                task: "edit".to_string(),
                draft: "lookup".to_string(),
                drafter: lookup.to_string(),
                max_k: 1,
                new_tokens: 40,
                rounds_by_kept: vec![10, 15],
                speedup: 40.0 / (10.0 + 15.0 * 1.2),
            }],
        },
        file: PathBuf::from("results/speculative-bench-2026-11-24T00-00-00Z.json"),
    }
}

#[test]
fn bench_charts_and_table_come_from_the_runs() {
    let bench = synthetic_bench();
    assert_eq!(drafter_name(&bench.record.runs[3]), "first 24 layers");
    let chart = bench.speedup_chart("prompt lookup").unwrap();
    for label in ["edit", "open", "plain decoding", "K = 1", "K by cost"] {
        assert!(chart.svg.contains(label), "{label}");
    }
    let acceptance = bench.acceptance_by_position_chart("prompt lookup").unwrap();
    assert!(acceptance.svg.contains("edit") && acceptance.svg.contains("open"));
    let table = bench.table().unwrap();
    let rows = table.rows();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[1],
        [
            "edit",
            "prompt lookup",
            "2",
            "50.00",
            "1.50",
            "25.00",
            "100.00",
            "1.50",
            "1.40–1.70"
        ]
    );
    assert!(table.note.unwrap().contains("Test CPU, AVX2, 2 threads"));
    let summary = bench.summary();
    assert!(
        summary.contains("**edit** request at K 2: **1.50×**"),
        "{summary}"
    );
    assert!(summary.contains("edit 1.30×") && summary.contains("prompt lookup on open 1.00×"));
    // Lookup by cost on edit and open: two runs' counts, leads never taken left out.
    assert!(
        summary.contains(
            "in step with the text it copies 90% (20 rounds), a re-synchronisation after an \
             inserted token 25% (8 rounds), a guess past a substituted token 5% (40 rounds). "
        ),
        "{summary}"
    );
    assert!(
        summary.contains("(up to 1, with this run's") && summary.contains("at most edit 1.43×."),
        "{summary}"
    );
}

/// The Short's file is picked by its model and requests, not by being the newest.
#[test]
fn the_short_bench_is_chosen_by_model_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, record: &BenchRecord| {
        std::fs::write(
            dir.path().join(name),
            serde_json::to_string(record).unwrap(),
        )
        .unwrap()
    };
    let short = synthetic_bench().record;
    write("speculative-bench-2026-12-01T00-00-00Z.json", &short);
    let mut other_model = short.clone();
    other_model.model = "/x/gemma-3-270m-q4_k_m.gguf".to_string();
    write("speculative-bench-2026-12-02T00-00-00Z.json", &other_model);
    let mut other_tasks = short.clone();
    other_tasks.tasks.truncate(1);
    write("speculative-bench-2026-12-03T00-00-00Z.json", &other_tasks);
    let picked = short_bench(dir.path()).unwrap().unwrap();
    assert!(picked
        .file
        .ends_with("speculative-bench-2026-12-01T00-00-00Z.json"));
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
        header: header(),
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
    // α = 0.8: K = 1 gives 0.36 / (0.2 · 1.5) = 1.2, K = 4 gives 0.672 / (0.2 · 3.3) ≈ 1.02.
    let summary = pair_summary(&record);
    assert!(summary.contains("**1.20×** at K = 1"), "{summary}");
    let v = verification_table(&record).unwrap();
    // A free drafter that is always right: (K + 1) / v.
    assert_eq!(v.rows()[1][3], format!("{:.2}", 5.0 / 2.5));
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
            rounds_by_k: vec![0, 1],
            first_right_by_situation: Vec::new(),
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
