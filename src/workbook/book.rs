//! The companion book's generated files. `billion-llm book-assets` writes every chart (SVG) and
//! table (markdown) the chapters include, from the library and from `results/`; the chapters'
//! prose never repeats a number. The test command regenerates them and fails when the committed
//! files differ, so the book cannot show a stale figure.

use super::sorted_files;
use crate::report::{Chart, Table};
use crate::workbook::anatomy;
use crate::workbook::comparison;
use crate::workbook::engines;
use crate::workbook::finetuning;
use crate::workbook::next_token::NextTokenTable;
use crate::workbook::quantization;
use crate::workbook::quantization_1b;
use crate::workbook::scale;
use crate::workbook::speculative;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The sentence the second Short sends through every tokenizer.
pub const TOKENIZER_SENTENCE: &str =
    "Small models, big brains: a billion parameters on your laptop.";

/// The prompt of the second Short's next-token table.
pub const NEXT_TOKEN_PROMPT: &str = "The capital of France is";

/// Where `billion-llm next --save` writes a next-token table, for the book to show.
pub fn next_token_results_path(results: &Path, model: &str) -> PathBuf {
    let stem = Path::new(model)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(model);
    let slug: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    results.join(format!("next-tokens-{slug}.json"))
}

/// Writes every generated file into `out` (and removes generated files that no longer have a
/// source), and the comparison page to `comparison_md`, returning the paths written.
pub fn write_book_assets(out: &Path, results: &Path, comparison_md: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    let mut table = |name: &str, t: Table| -> Result<()> {
        let path = out.join(format!("{name}.md"));
        t.save_markdown(&path)?;
        written.push(path);
        Ok(())
    };
    // Tables a chapter includes whose source is missing: the file then says how to get it.
    let mut placeholders: Vec<(&str, &str)> = Vec::new();
    // Markdown written as it is: placeholders that name a model, and sentences from the numbers.
    let mut texts: Vec<(String, String)> = Vec::new();
    table("01-parameters", scale::parameter_table()?)?;
    table("01-memory", scale::memory_table()?)?;
    table(
        "01-tokens-per-parameter",
        scale::tokens_per_parameter_table()?,
    )?;
    table("01-published-scores", scale::published_scores_table()?)?;
    table("02-knobs", anatomy::compared_knobs_table()?)?;
    table(
        "02-tokenizers",
        anatomy::tokenization_table(TOKENIZER_SENTENCE, &anatomy::asset_tokenizers()?)?,
    )?;
    let mut charts: Vec<(String, Chart)> = vec![
        ("01-parameters".into(), scale::parameter_chart()?),
        ("01-memory".into(), scale::memory_chart()?),
        (
            "01-tokens-per-parameter".into(),
            scale::tokens_per_parameter_chart()?,
        ),
    ];
    for path in sorted_files(results, "next-tokens-", ".json")? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let next: NextTokenTable = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a next-token table", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("next-tokens");
        table(&format!("02-{stem}"), next.to_table()?)?;
        charts.push((format!("02-{stem}"), next.chart()?));
    }
    let entries = comparison::short_entries(&comparison::load_runs(results)?);
    if !entries.is_empty() {
        table("03-measured", comparison::measured_table(&entries)?)?;
        charts.push((
            "03-speed-memory".into(),
            comparison::speed_memory_chart(&entries)?,
        ));
        if let Some(chart) = comparison::mmlu_subject_chart(&entries)? {
            charts.push(("03-mmlu-subjects".into(), chart));
        }
    } else {
        placeholders.push((
            "03-measured",
            "*No benchmark results in `results/` yet: run `billion-llm bench`, then \
             `billion-llm book-assets`.*\n",
        ));
    }
    let speed_runs = engines::load_runs(results)?;
    let engines_table = engines::latest_comparable(&speed_runs)
        .map(engines::engines_table)
        .transpose()?;
    match &engines_table {
        Some(t) => table("03-engines", t.clone())?,
        None => placeholders.push((
            "03-engines",
            "*No `bench-speed` run with llama.cpp and the K-quant files in `results/` yet: run \
             `bash scripts/bench-speed.sh`, then `billion-llm book-assets`.*\n",
        )),
    }
    match comparison::humaneval_table(&entries)? {
        Some(t) => table("03-humaneval", t)?,
        None => placeholders.push((
            "03-humaneval",
            "*No HumanEval results in `results/` yet: run `billion-llm bench`, then \
             `billion-llm book-assets`.*\n",
        )),
    }
    table(
        "05-adapter-size",
        finetuning::adapter_size_table(&finetuning::short_models()?, 8)?,
    )?;
    let study = finetuning::short_study(results)?;
    let finetune_tables = [
        (
            "05-cost",
            study.as_ref().map(|s| s.cost_table()).transpose()?,
        ),
        (
            "05-results",
            study.as_ref().map(|s| s.results_table()).transpose()?,
        ),
        (
            "05-by-kind",
            study.as_ref().map(|s| s.by_kind_table()).transpose()?,
        ),
        (
            "05-validation",
            study.as_ref().map(|s| s.validation_table()).transpose()?,
        ),
        (
            "05-examples",
            study
                .as_ref()
                .map(|s| s.examples_table(&finetuning::SHORT_EXAMPLE_KINDS))
                .transpose()?,
        ),
    ];
    for (name, t) in finetune_tables {
        match t {
            Some(t) => table(name, t)?,
            None => placeholders.push((
                name,
                "*No fine-tuning study in `results/` yet: run `bash scripts/bench-finetune.sh`, \
                 then `billion-llm book-assets`.*\n",
            )),
        }
    }
    if let Some(study) = &study {
        charts.push(("05-loss".into(), study.loss_chart()?));
        charts.push(("05-prompt-tokens".into(), study.prompt_chart()?));
    }
    match speculative::short_bench(results)? {
        Some(bench) => {
            table("06-bench", bench.table()?)?;
            texts.push(("06-summary".into(), bench.summary()));
            charts.push(("06-speedup".into(), bench.speedup_chart("prompt lookup")?));
            charts.push((
                "06-acceptance-by-position".into(),
                bench.acceptance_by_position_chart("prompt lookup")?,
            ));
        }
        None => {
            for name in ["06-bench", "06-summary"] {
                placeholders.push((
                    name,
                    "*No speculative-decoding benchmark of SmolLM2-135M in `results/` yet: run \
                     `bash scripts/bench-speculative.sh`, then `billion-llm book-assets`.*\n",
                ));
            }
        }
    }
    match speculative::costs_for(results, speculative::SHORT_MODEL)? {
        Some(costs) => table("06-verification", speculative::verification_table(&costs)?)?,
        None => placeholders.push((
            "06-verification",
            "*No verification costs of SmolLM2-135M in `results/` yet: run \
             `bash scripts/bench-speculative.sh`, then `billion-llm book-assets`.*\n",
        )),
    }
    match speculative::pair_costs(results)? {
        Some(costs) => {
            table("06-costs", speculative::costs_table(&costs)?)?;
            texts.push(("06-pair-summary".into(), speculative::pair_summary(&costs)));
            charts.push((
                "06-modelled".into(),
                speculative::modelled_speedup_chart(&costs)?,
            ));
        }
        None => {
            for name in ["06-costs", "06-pair-summary"] {
                placeholders.push((
                    name,
                    "*No step costs in `results/` yet: run `billion-llm speculative-costs \
                     --draft tinyllama --target llama-2-7b-chat --weights random --quantize \
                     q4_0`, then `billion-llm book-assets`.*\n",
                ));
            }
        }
    }
    let short = quantization::load_short_studies(results)?;
    for (model, slug) in quantization::SHORT_MODELS {
        match short.iter().find(|s| s.model == model) {
            Some(s) => {
                table(
                    &format!("07-quality-{slug}"),
                    quantization::quality_table(s)?,
                )?;
                table(
                    &format!("07-answers-{slug}"),
                    quantization::answers_table(s)?,
                )?;
            }
            None => {
                for kind in ["quality", "answers"] {
                    texts.push((
                        format!("07-{kind}-{slug}"),
                        format!(
                            "*No complete quantization study of {model} in `results/` yet: run \
                             `bash scripts/quant-study.sh`, then `billion-llm book-assets`.*\n"
                        ),
                    ));
                }
            }
        }
    }
    if !short.is_empty() {
        charts.push(("07-kl-vs-bits".into(), quantization::kl_chart(&short)?));
        charts.push((
            "07-speed-vs-size".into(),
            quantization::speed_chart(&short)?,
        ));
    }
    let one_b = quantization_1b::short_run(results)?;
    match &one_b {
        Some(run) => {
            table("07-memory", quantization_1b::memory_table(run)?)?;
            table("07-speed-1b", quantization_1b::speed_table(run)?)?;
            charts.push(("07-speed-1b".into(), quantization_1b::speed_chart(run)?));
        }
        None => {
            for name in ["07-memory", "07-speed-1b"] {
                placeholders.push((
                    name,
                    "*No complete `quant-1b` run in `results/` yet: run `bash \
                     scripts/quant-study.sh`, then `billion-llm book-assets`.*\n",
                ));
            }
        }
    }
    let mut takeaway = quantization::takeaway(&short);
    takeaway.extend(
        one_b
            .as_ref()
            .map(quantization_1b::takeaway)
            .unwrap_or_default(),
    );
    let takeaway: String = takeaway.iter().map(|line| format!("- {line}\n")).collect();
    texts.push(("07-takeaway".into(), takeaway));
    for (name, text) in texts {
        let path = out.join(format!("{name}.md"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    for (name, text) in placeholders {
        let path = out.join(format!("{name}.md"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    // What the measurements support, in sentences written from them.
    let advice: String = comparison::advice(&entries)
        .iter()
        .map(|line| format!("- {line}\n"))
        .collect();
    let path = out.join("03-advice.md");
    std::fs::write(&path, advice).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    let comparison = comparison::comparison_markdown(&entries, engines_table.as_ref())?;
    std::fs::write(comparison_md, comparison)
        .with_context(|| format!("cannot write {}", comparison_md.display()))?;
    for (name, chart) in charts {
        let path = out.join(format!("{name}.svg"));
        chart.save_svg(&path)?;
        written.push(path);
    }
    for stale in sorted_files(out, "", "")? {
        if !written.contains(&stale) && stale != comparison_md {
            std::fs::remove_file(&stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    Ok(written)
}
