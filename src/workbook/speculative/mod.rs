//! Short 6, speculative decoding: what the benchmark on SmolLM2-135M shows (speedup by K
//! schedule, acceptance by draft position, read from `results/speculative-bench-*.json`),
//! what verifying K + 1 tokens costs, and what a 1B draft for a 7B target would give on this
//! machine (modelled from the step costs in `results/speculative-costs-*.json`), and one
//! decoding with the drafted tokens marked.

use super::read_results;
use crate::hub::loader::LoadedModel;
use crate::model::generation::{generate, GenerateOptions, SamplingParams};
use crate::report::{escape_html, evcxr_print, BarChart, Chart, LineChart, Table};
use crate::speculative::bench::{
    add_pair, added_up, model_file_name, short_tasks, BenchRecord, BenchRun,
};
use crate::speculative::{
    expected_speedup, CostsRecord, Drafter, KSchedule, Lead, PromptLookup, SameRun,
    SpeculativeDecoder, VerifyCost,
};
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use std::path::{Path, PathBuf};

/// The model Short 6 measures, as its GGUF file is named.
pub const SHORT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// The 1B → 7B pair whose costs the Short models.
pub const SHORT_PAIR: (&str, &str) = ("TinyLlama 1.1B", "Llama 2 7B");

/// The acceptance rate at which the 1B → 7B speedup is stated.
pub const STATED_ALPHA: f64 = 0.8;

/// A `results/speculative-bench-*.json` file.
#[derive(Debug, Clone)]
pub struct SpeculativeBench {
    pub record: BenchRecord,
    pub file: PathBuf,
}

/// The newest benchmark of Short 6's model on Short 6's requests, if any: a run on another
/// model or other prompts is not the one the Short describes.
pub fn short_bench(results: &Path) -> Result<Option<SpeculativeBench>> {
    let tasks = short_tasks();
    Ok(
        read_results::<BenchRecord>(results, "speculative-bench-", "speculative benchmark")?
            .into_iter()
            .rev()
            .find(|(_, r)| {
                model_file_name(&r.model) == SHORT_MODEL && r.tasks == tasks && !r.runs.is_empty()
            })
            .map(|(file, record)| SpeculativeBench { record, file }),
    )
}

/// The newest step costs whose target is `target` (a zoo name such as "Llama 2 7B", or a
/// GGUF file name without `.gguf`), if any.
pub fn costs_for(results: &Path, target: &str) -> Result<Option<CostsRecord>> {
    Ok(
        read_results::<CostsRecord>(results, "speculative-costs-", "speculative-costs")?
            .into_iter()
            .rev()
            .map(|(_, r)| r)
            .find(|r| r.target.name == target || model_file_name(&r.target.model) == target),
    )
}

/// The 1B → 7B pair's newest costs (TinyLlama drafting for Llama 2 7B).
pub fn pair_costs(results: &Path) -> Result<Option<CostsRecord>> {
    Ok(costs_for(results, SHORT_PAIR.1)?.filter(|r| r.draft.name == SHORT_PAIR.0))
}

/// The drafter without its settings: "prompt lookup", "first 24 layers".
pub fn drafter_name(run: &BenchRun) -> &str {
    let name = run.drafter.split(" (").next().unwrap_or(&run.drafter);
    name.trim_start_matches("the target's ")
}

/// The bar group of the speedup chart.
fn k_category(schedule: KSchedule) -> String {
    match schedule {
        KSchedule::Fixed(k) => format!("K = {k}"),
        KSchedule::Adaptive { .. } => "adaptive K".to_string(),
        KSchedule::Cost { .. } => "K by cost".to_string(),
    }
}

fn k_label(schedule: KSchedule) -> String {
    match schedule {
        KSchedule::Fixed(k) => k.to_string(),
        KSchedule::Adaptive { start, max } => format!("adaptive ({start}, at most {max})"),
        KSchedule::Cost { max } => format!("by cost (at most {max})"),
    }
}

/// Names in the order the file first gives them.
fn in_order_of_appearance<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// `[min–max]` of a spread.
fn range(runs: &[f64]) -> (f64, f64) {
    let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

impl SpeculativeBench {
    fn runs(&self) -> &[BenchRun] {
        &self.record.runs
    }

    /// The target's file name without `.gguf`.
    pub fn model_name(&self) -> String {
        model_file_name(&self.record.model)
    }

    fn machine(&self) -> String {
        let h = &self.record.header;
        format!(
            "{}, {}, {} threads",
            h.hardware.cpu, h.instruction_set, h.hardware.threads
        )
    }

    fn file_name(&self) -> String {
        self.file
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    }

    /// Median speedup over plain decoding per K schedule, one bar per task, for one drafter
    /// (its name, as in [`drafter_name`]). Each bar is the median of same-run ratios.
    pub fn speedup_chart(&self, drafter: &str) -> Result<Chart> {
        let runs: Vec<&BenchRun> = self
            .runs()
            .iter()
            .filter(|r| drafter_name(r) == drafter)
            .collect();
        let categories = in_order_of_appearance(
            runs.iter()
                .map(|r| k_category(r.schedule))
                .collect::<Vec<_>>()
                .iter()
                .map(|s| s.as_str()),
        )
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        let category_names: Vec<&str> = categories.iter().map(String::as_str).collect();
        let mut chart = BarChart::new(
            format!(
                "{}: {} over plain decoding (median speedup)",
                self.model_name(),
                drafter
            ),
            "speedup (same-run ratio)",
            &category_names,
        )
        .format(|v| format!("{v:.2}"))
        .reference_line("plain decoding", 1.0);
        let mut top: f64 = 1.0;
        for task in in_order_of_appearance(runs.iter().map(|r| r.task.as_str())) {
            let values: Vec<f64> = categories
                .iter()
                .map(|c| {
                    runs.iter()
                        .find(|r| r.task == task && k_category(r.schedule) == *c)
                        .map_or(0.0, |r| r.speedup.median)
                })
                .collect();
            top = values.iter().copied().fold(top, f64::max);
            chart = chart.series(task, values);
        }
        // Head room above the tallest bar keeps the legend off the bars.
        chart.y_max(1.6 * top).render()
    }

    /// For one drafter: of the rounds that drafted a token at position i, the share whose
    /// drafts were accepted up to and including i, per task, pooled over every schedule.
    pub fn acceptance_by_position_chart(&self, drafter: &str) -> Result<Chart> {
        let mut chart = LineChart::new(
            format!("{}: acceptance by draft position", capitalized(drafter)),
            "draft position in the round",
            "accepted (% of rounds drafting there)",
        )
        .y_from_zero();
        for task in in_order_of_appearance(self.runs().iter().map(|r| r.task.as_str())) {
            let mut drafted: Vec<usize> = Vec::new();
            let mut accepted: Vec<usize> = Vec::new();
            for r in self
                .runs()
                .iter()
                .filter(|r| drafter_name(r) == drafter && r.task == task)
            {
                for (i, (&d, &a)) in r.drafted_at.iter().zip(&r.accepted_at).enumerate() {
                    if drafted.len() <= i {
                        drafted.push(0);
                        accepted.push(0);
                    }
                    drafted[i] += d;
                    accepted[i] += a;
                }
            }
            let points: Vec<(f64, f64)> = drafted
                .iter()
                .zip(&accepted)
                .enumerate()
                .filter(|(_, (&d, _))| d > 0)
                .map(|(i, (&d, &a))| ((i + 1) as f64, 100.0 * a as f64 / d as f64))
                .collect();
            if !points.is_empty() {
                chart = chart.curve(task, points);
            }
        }
        chart.render()
    }

    /// Every run of the benchmark.
    pub fn table(&self) -> Result<Table> {
        let runs = self.runs();
        let col = |name: &str, values: Vec<f64>| Column::new(name.into(), values);
        let frame = DataFrame::new_infer_height(vec![
            Column::new(
                "task".into(),
                runs.iter().map(|r| r.task.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "drafter".into(),
                runs.iter()
                    .map(|r| drafter_name(r).to_string())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "K".into(),
                runs.iter().map(|r| k_label(r.schedule)).collect::<Vec<_>>(),
            ),
            col(
                "acceptance %",
                runs.iter().map(|r| 100.0 * r.acceptance_rate).collect(),
            ),
            col(
                "tokens per round",
                runs.iter().map(|r| r.tokens_per_round).collect(),
            ),
            col(
                "rounds without drafts %",
                runs.iter()
                    .map(|r| {
                        100.0 * r.rounds_by_k.first().copied().unwrap_or(0) as f64
                            / r.rounds.max(1) as f64
                    })
                    .collect(),
            ),
            col(
                "plain tok/s",
                runs.iter().map(|r| r.plain_tokens_per_s.median).collect(),
            ),
            col("speedup", runs.iter().map(|r| r.speedup.median).collect()),
            Column::new(
                "speedup spread".into(),
                runs.iter()
                    .map(|r| {
                        let (lo, hi) = range(&r.speedup.runs);
                        format!("{lo:.2}–{hi:.2}")
                    })
                    .collect::<Vec<_>>(),
            ),
        ])?;
        Ok(Table::new(
            format!("Speculative decoding on {}, greedy", self.model_name()),
            frame,
        )
        .with_note(format!(
            "Speedup: the median over {} pairs of turns of decode speed with the drafter over \
             plain decoding of the same prompt{}, the two taking turns in one process (greedy, \
             so both write the same tokens), with the lowest and highest ratio. Up to {} new \
             tokens per prompt. Measured on {}; {}.",
            self.record.repetitions,
            self.pooling(),
            self.record.max_new_tokens,
            self.machine(),
            self.file_name()
        ))
        .with_decimals(2))
    }

    /// How a task's prompts are pooled, for the table's note: nothing when each has one.
    fn pooling(&self) -> String {
        let most = self.record.tasks.iter().map(|t| 1 + t.variants.len()).max();
        match most {
            Some(n) if n > 1 => {
                format!("s (each task's {n} prompts together: their tokens over their seconds)")
            }
            _ => String::new(),
        }
    }

    /// The runs of one drafter with the schedule `by cost` on tasks that are (or are not)
    /// grounded in the prompt.
    fn by_cost(&self, drafter: &str, grounded: bool) -> Vec<&BenchRun> {
        self.runs()
            .iter()
            .filter(|r| {
                drafter_name(r) == drafter
                    && matches!(r.schedule, KSchedule::Cost { .. })
                    && self
                        .record
                        .tasks
                        .iter()
                        .any(|t| t.name == r.task && t.grounded == grounded)
            })
            .collect()
    }

    /// The figures the chapter's text refers to, as a short generated paragraph.
    pub fn summary(&self) -> String {
        let lookup = "prompt lookup";
        let best = self
            .runs()
            .iter()
            .filter(|r| drafter_name(r) == lookup)
            .max_by(|a, b| a.speedup.median.total_cmp(&b.speedup.median));
        let mut out = String::new();
        if let Some(b) = best {
            out.push_str(&format!(
                "The fastest prompt-lookup run was the **{}** request at K {}: **{:.2}×** plain \
                 decoding (median; {:.0}% of drafts accepted, {:.2} tokens per target forward). ",
                b.task,
                k_label(b.schedule),
                b.speedup.median,
                100.0 * b.acceptance_rate,
                b.tokens_per_round
            ));
        }
        let grounded = self.by_cost(lookup, true);
        if !grounded.is_empty() {
            let list: Vec<String> = grounded
                .iter()
                .map(|r| format!("{} {:.2}×", r.task, r.speedup.median))
                .collect();
            out.push_str(&format!(
                "With K chosen by measured cost, prompt lookup gave {} on the requests that copy \
                 the prompt",
                list.join(", ")
            ));
        }
        let open: Vec<String> = self
            .by_cost(lookup, false)
            .iter()
            .chain(self.by_cost("first 24 layers", false).iter())
            .chain(self.by_cost("first 24 layers", true).iter())
            .map(|r| {
                format!(
                    "{} on {} {:.2}× ({:.0}% of rounds plain steps)",
                    drafter_name(r),
                    r.task,
                    r.speedup.median,
                    100.0 * r.rounds_by_k.first().copied().unwrap_or(0) as f64
                        / r.rounds.max(1) as f64
                )
            })
            .collect();
        if !open.is_empty() {
            out.push_str(&format!(
                "; where drafting does not pay it falls back to plain steps: {}. ",
                open.join(", ")
            ));
        }
        out.push_str(&self.leads_sentence());
        out.push_str(&self.ceiling_sentence());
        out.push_str(&format!(
            "Measured on {} ({}).\n",
            self.machine(),
            self.file_name()
        ));
        out
    }

    /// How often prompt lookup's first proposal was right by its [`Lead`], K by cost, all
    /// requests together; nothing for a file without these counts.
    fn leads_sentence(&self) -> String {
        let runs = [true, false].map(|grounded| self.by_cost("prompt lookup", grounded));
        let total = added_up(
            runs.iter()
                .flatten()
                .map(|r| r.first_right_by_situation.as_slice()),
            add_pair,
        );
        let parts: Vec<String> = Lead::ALL
            .iter()
            .zip(&total)
            .filter(|(_, &(checked, _))| checked > 0)
            .map(|(lead, &(checked, right))| {
                format!(
                    "{} {:.0}% ({checked} rounds)",
                    lead.describe(),
                    100.0 * right as f64 / checked as f64
                )
            })
            .collect();
        if parts.is_empty() {
            return String::new();
        }
        format!(
            "How often prompt lookup's first proposal was right, by how it was found (K by cost, \
             all requests together): {}. ",
            parts.join(", ")
        )
    }

    /// Prompt lookup's ceiling per request, K chosen in hindsight; nothing for a file without
    /// it.
    fn ceiling_sentence(&self) -> String {
        let lookup: Vec<_> = self
            .record
            .hindsight
            .iter()
            .filter(|h| h.draft == "lookup")
            .collect();
        let Some(max_k) = lookup.iter().map(|h| h.max_k).max() else {
            return String::new();
        };
        let parts: Vec<String> = lookup
            .iter()
            .map(|h| format!("{} {:.2}×", h.task, h.speedup))
            .collect();
        format!(
            "No K schedule can beat K chosen in hindsight, each round drafting exactly the \
             tokens the target keeps (up to {max_k}, with this run's forward times and drafting \
             taken as free): with it prompt lookup would reach at most {}. ",
            parts.join(", ")
        )
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The acceptance rates the modelled curves are drawn at: 0 to 1 in steps of 0.02.
fn alphas() -> Vec<f64> {
    (0..=50).map(|i| i as f64 / 50.0).collect()
}

/// The modelled speedup against the acceptance rate, one curve per timed K, from measured
/// costs (c and the measured v of each K).
pub fn modelled_speedup_chart(record: &CostsRecord) -> Result<Chart> {
    let mut chart = LineChart::new(
        format!(
            "Modelled: {} drafting for {}",
            record.draft.name, record.target.name
        ),
        "acceptance rate α",
        "speedup (modelled from measured costs)",
    )
    .y_from_zero();
    let alphas = alphas();
    let mut top: f64 = 1.0;
    for v in &record.costs.verify {
        let points: Vec<(f64, f64)> = alphas
            .iter()
            .filter_map(|&a| Some((a, record.costs.modelled_speedup(a, v.k)?)))
            .collect();
        top = points.iter().map(|p| p.1).fold(top, f64::max);
        chart = chart.curve(format!("modelled, K={}", v.k), points);
    }
    // Plain decoding is speedup 1 at every α. Head room above the curves, which rise to the
    // right, keeps the legend off them.
    chart
        .curve("plain decoding", alphas.iter().map(|&a| (a, 1.0)).collect())
        .y_max(1.5 * top)
        .render()
}

/// The columns both cost tables open with: K, the verification's time, and v under `v_label`.
fn verify_columns(verify: &[VerifyCost], v_label: &str) -> Vec<Column> {
    vec![
        Column::new(
            "K".into(),
            verify.iter().map(|v| v.k as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "verify K+1 tokens (ms)".into(),
            verify
                .iter()
                .map(|v| 1e3 * v.seconds.median)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            v_label.into(),
            verify.iter().map(|v| v.v).collect::<Vec<_>>(),
        ),
    ]
}

/// The machine a costs file was measured on, for table notes: "CPU (ISA, N threads; load
/// average L)".
fn measured_on(record: &CostsRecord) -> String {
    format!(
        "{} ({}, {} threads; load average {})",
        record.header.hardware.cpu,
        record.header.instruction_set,
        record.threads,
        record
            .load_average
            .map_or_else(|| "not recorded".to_string(), |l| format!("{l:.1}"))
    )
}

/// The measured step costs per K, with what they imply: the break-even acceptance rate and
/// the best case (every draft accepted).
pub fn costs_table(record: &CostsRecord) -> Result<Table> {
    let c = &record.costs;
    let verify = &c.verify;
    let mut columns = verify_columns(verify, "v (target steps)");
    columns.extend([
        Column::new(
            "round K·c + v (target steps)".into(),
            verify
                .iter()
                .map(|v| v.k as f64 * c.c + v.v)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "break-even α".into(),
            verify
                .iter()
                .map(|v| {
                    c.break_even_acceptance(v.k)
                        .map_or_else(|| "none".to_string(), |a| format!("{a:.2}"))
                })
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "speedup at α = 1".into(),
            verify
                .iter()
                .map(|v| c.modelled_speedup(1.0, v.k).unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        ),
    ]);
    let frame = DataFrame::new_infer_height(columns)?;
    let gb = |b: f64| b / 1e9;
    let weights = |m: &crate::speculative::CostedModel| {
        format!(
            "{}{}",
            if m.weights == "random" {
                "random weights"
            } else {
                "trained weights"
            },
            m.quantization
                .as_deref()
                .map_or_else(String::new, |q| format!(", {q}"))
        )
    };
    Ok(Table::new(
        format!(
            "Measured costs: {} ({}) drafting for {} ({})",
            record.draft.name,
            weights(&record.draft),
            record.target.name,
            weights(&record.target)
        ),
        frame,
    )
    .with_note(format!(
        "Measured on {}: one target token {:.1} ms, one draft token {:.1} ms, so c = {:.3}; \
         medians of {} rounds after {} warm-up, {} tokens of context. The speedups are \
         modelled from these costs with (1 − α^(K+1)) / ((1 − α)(K·c + v)) and the measured v, \
         not measured: random weights have no meaningful acceptance rate. Peak resident set \
         after loading the target: {:.1} GB (its weights in f32: {:.1} GB).",
        measured_on(record),
        1e3 * c.target_token_s.median,
        1e3 * c.draft_token_s.median,
        c.c,
        record.settings.runs,
        record.settings.warmup,
        record.settings.context_tokens,
        gb(record.target_load_peak_rss_bytes as f64),
        gb(record.target.f32_bytes as f64),
    ))
    .with_decimals(2))
}

/// What verifying K + 1 tokens costs the target, in plain steps (v), and the ceiling it sets
/// on a free drafter that is always right (prompt lookup copying the whole answer): K + 1
/// tokens per verification, (K + 1) / v times plain decoding.
pub fn verification_table(record: &CostsRecord) -> Result<Table> {
    let verify = &record.costs.verify;
    let mut columns = verify_columns(verify, "v (plain steps)");
    columns.push(Column::new(
        "ceiling: free drafts, all accepted".into(),
        verify
            .iter()
            .map(|v| expected_speedup(1.0, v.k, 0.0, v.v))
            .collect::<Vec<_>>(),
    ));
    let frame = DataFrame::new_infer_height(columns)?;
    Ok(Table::new(
        format!(
            "What verification costs: {} ({})",
            model_file_name(&record.target.model),
            record.target.weights
        ),
        frame,
    )
    .with_note(format!(
        "One plain step {:.1} ms; medians of {} rounds after {} warm-up, {} tokens of context, \
         each verification's logits read back as the decoder reads them. Measured on {}.",
        1e3 * record.costs.target_token_s.median,
        record.settings.runs,
        record.settings.warmup,
        record.settings.context_tokens,
        measured_on(record),
    ))
    .with_decimals(2))
}

/// The 1B → 7B modelled speedup at [`STATED_ALPHA`], at its best measured K, with the
/// measured inputs it comes from.
pub fn pair_summary(record: &CostsRecord) -> String {
    let c = &record.costs;
    let best = c
        .verify
        .iter()
        .map(|v| (v, expected_speedup(STATED_ALPHA, v.k, c.c, v.v)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((v, s)) => format!(
            "Modelled for {} drafting for {} at α = {STATED_ALPHA}: **{s:.2}×** at K = {} \
             (best of the measured K), from c = {:.3} (a draft step {:.1} ms, a target step \
             {:.1} ms) and v = {:.2} (verifying {} tokens {:.1} ms), measured on {} ({}, {} \
             threads).\n",
            record.draft.name,
            record.target.name,
            v.k,
            c.c,
            1e3 * c.draft_token_s.median,
            1e3 * c.target_token_s.median,
            v.v,
            v.k + 1,
            1e3 * v.seconds.median,
            record.header.hardware.cpu,
            record.header.instruction_set,
            record.threads
        ),
        None => "No K was timed.\n".to_string(),
    }
}

/// One speculative generation with the accepted drafted tokens marked, and plain decoding of
/// the same prompt beside it.
#[derive(Debug, Clone)]
pub struct DraftedText {
    pub drafter: String,
    pub schedule: KSchedule,
    /// The answer's text in pieces, each with whether a drafted and accepted token produced it.
    pub pieces: Vec<(String, bool)>,
    pub run: SameRun,
}

impl DraftedText {
    /// The answer as HTML: accepted drafts on a green background, then the run's figures.
    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<div style=\"font-family: monospace; white-space: pre-wrap; line-height: 1.5\">",
        );
        for (piece, drafted) in &self.pieces {
            if *drafted {
                out.push_str(&format!(
                    "<span style=\"background: #b5e3ad\">{}</span>",
                    escape_html(piece)
                ));
            } else {
                out.push_str(&escape_html(piece));
            }
        }
        out.push_str("</div>\n");
        out.push_str(&format!("<p>{}</p>\n", escape_html(&self.summary())));
        out
    }

    /// The run's figures in one line.
    pub fn summary(&self) -> String {
        let s = &self.run.speculative;
        let k = match self.schedule {
            KSchedule::Fixed(k) => format!("K = {k}"),
            KSchedule::Adaptive { start, max } => format!("adaptive K from {start}, at most {max}"),
            KSchedule::Cost { max } => format!("K by measured cost, at most {max}"),
        };
        format!(
            "{}, {k}: {:.0}% of drafted tokens accepted (highlighted), {:.2} tokens per target \
             forward; {:.1} tok/s against {:.1} tok/s for plain decoding in the same run ({:.2}×)",
            self.drafter,
            100.0 * s.acceptance_rate(),
            s.tokens_per_round(),
            s.decode_tokens_per_s(),
            self.run.plain.decode_tokens_per_s(),
            self.run.speedup()
        )
    }

    /// Shows the coloured answer in a Jupyter notebook.
    pub fn evcxr_display(&self) {
        evcxr_print("text/html", &self.to_html());
    }
}

/// Sends `request` through the model's chat template and decodes the answer greedily with
/// prompt lookup (K per round from `schedule`), then plainly, in the same run, after an
/// untimed warm-up.
pub fn prompt_lookup_demo(
    model: &mut LoadedModel,
    request: &str,
    schedule: KSchedule,
    max_new_tokens: usize,
) -> Result<DraftedText> {
    let prompt = model.chat_prompt(request)?;
    // An untimed warm-up, so that neither timed run pays for first touches of the weights.
    model.model.reset_cache();
    let warm_up = GenerateOptions {
        max_new_tokens: 16,
        sampling: SamplingParams::default(),
        ignore_eos: true,
        stop: None,
    };
    generate(&mut model.model, &prompt, &warm_up, |_| Ok(()))?;
    let mut stream = model.tokenizer()?.output_stream();
    let mut drafter = PromptLookup::default();
    let mut pieces: Vec<(String, bool)> = Vec::new();
    let run = SpeculativeDecoder {
        target: &mut model.model,
        drafter: &mut drafter,
        schedule,
        sampling: SamplingParams::default(),
    }
    .generate_beside_plain(&prompt, max_new_tokens, |token, drafted| {
        if let Some(piece) = stream.next_token(token)? {
            pieces.push((piece, drafted));
        }
        Ok(())
    })?;
    if let Some(rest) = stream.flush()? {
        pieces.push((rest, false));
    }
    Ok(DraftedText {
        drafter: drafter.describe(),
        schedule,
        pieces,
        run,
    })
}

#[cfg(test)]
mod tests;
