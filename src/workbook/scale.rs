//! Short 1, "Why one billion?": how big the four models are, what their weights need in memory,
//! and how much text they were trained on. Sizes are computed from the hub configs (no download);
//! training-token counts are published figures ([`crate::workbook::published`]).

use crate::hub::zoo::{self, ZooModel};
use crate::model::config::TransformerConfig;
use crate::report::{human_count, BarChart, Chart, Table};
use crate::workbook::published::{
    self, CHINCHILLA_TOKENS_PER_PARAMETER, PUBLISHED_SCORES, TRAINING_TOKENS,
};
use anyhow::{Context, Result};
use candle_core::quantized::GgmlDType;
use polars::prelude::{Column, DataFrame};

/// The four compared models with their configs, in the zoo's order.
pub fn compared_models() -> Result<Vec<(&'static ZooModel, TransformerConfig)>> {
    zoo::compared().map(|m| Ok((m, m.config()?))).collect()
}

/// A way to store weights, and what one weight costs in it.
#[derive(Debug, Clone, Copy)]
pub struct WeightFormat {
    pub name: &'static str,
    pub bytes_per_weight: f64,
}

/// Bytes per weight of a GGML block format: the block's bytes (scales included) over its
/// weights, e.g. q4_0 stores 32 weights in 18 bytes, 4.5 bits each.
fn ggml_bytes_per_weight(dtype: GgmlDType) -> f64 {
    dtype.type_size() as f64 / dtype.block_size() as f64
}

/// The formats the memory chart compares.
pub fn weight_formats() -> Vec<WeightFormat> {
    vec![
        WeightFormat {
            name: "f32",
            bytes_per_weight: 4.0,
        },
        WeightFormat {
            name: "bf16",
            bytes_per_weight: 2.0,
        },
        WeightFormat {
            name: "q8_0",
            bytes_per_weight: ggml_bytes_per_weight(GgmlDType::Q8_0),
        },
        WeightFormat {
            name: "q4_0",
            bytes_per_weight: ggml_bytes_per_weight(GgmlDType::Q4_0),
        },
    ]
}

const GIB: f64 = (1u64 << 30) as f64;

fn frame(columns: Vec<Column>) -> Result<DataFrame> {
    DataFrame::new_infer_height(columns).context("building a table")
}

fn names(models: &[(&ZooModel, TransformerConfig)]) -> Vec<&'static str> {
    models.iter().map(|(m, _)| m.name).collect()
}

/// Parameters by kind: embeddings (with an untied output matrix), attention, MLP, norms.
pub fn parameter_table() -> Result<Table> {
    let models = compared_models()?;
    let counts: Vec<_> = models.iter().map(|(_, c)| c.parameter_counts()).collect();
    let col = |name: &str, f: &dyn Fn(&crate::model::config::ParameterCounts) -> u64| {
        Column::new(name.into(), counts.iter().map(f).collect::<Vec<u64>>())
    };
    let share = counts
        .iter()
        .map(|c| 100.0 * c.embeddings as f64 / c.total() as f64)
        .collect::<Vec<f64>>();
    let df = frame(vec![
        Column::new("model".into(), names(&models)),
        col("embeddings", &|c| c.embeddings as u64),
        col("attention", &|c| c.attention as u64),
        col("mlp", &|c| c.mlp as u64),
        col("norms", &|c| c.norms as u64),
        col("total", &|c| c.total() as u64),
        Column::new("embeddings %".into(), share),
    ])?;
    Ok(Table::new("Parameters by kind, from each model's config.json", df)
        .with_decimals(1)
        .with_note("Embeddings include the output projection when it is not tied to the input embeddings."))
}

/// The same split as a stacked bar chart, in billions.
pub fn parameter_chart() -> Result<Chart> {
    let models = compared_models()?;
    let counts: Vec<_> = models.iter().map(|(_, c)| c.parameter_counts()).collect();
    let billions = |f: fn(&crate::model::config::ParameterCounts) -> usize| {
        counts.iter().map(|c| f(c) as f64 / 1e9).collect::<Vec<_>>()
    };
    BarChart::new(
        "Where the parameters are",
        "parameters (billions)",
        &names(&models),
    )
    .series("embeddings", billions(|c| c.embeddings))
    .series("attention", billions(|c| c.attention))
    .series("MLP", billions(|c| c.mlp))
    .series("norms", billions(|c| c.norms))
    .stacked()
    .format(|v| format!("{v:.2}"))
    .render()
}

/// Memory for the weights alone in each format, and the KV cache a 2,048-token context adds.
pub fn memory_table() -> Result<Table> {
    let models = compared_models()?;
    let mut columns = vec![Column::new("model".into(), names(&models))];
    for f in weight_formats() {
        let gib: Vec<f64> = models
            .iter()
            .map(|(_, c)| c.parameter_counts().total() as f64 * f.bytes_per_weight / GIB)
            .collect();
        columns.push(Column::new(format!("{} GiB", f.name).into(), gib));
    }
    let kv: Vec<f64> = models
        .iter()
        .map(|(_, c)| (c.kv_cache_bytes_per_token(2) * 2048) as f64 / (1u64 << 20) as f64)
        .collect();
    columns.push(Column::new("KV cache, 2048 tokens f16 (MiB)".into(), kv));
    Ok(
        Table::new("Memory for the weights, by format", frame(columns)?).with_note(
            "Weights only, every tensor in that format. q8_0 and q4_0 are GGML block formats \
         (8.5 and 4.5 bits per weight with their scales). The KV cache grows with the context; \
         grouped-query attention (fewer KV heads) keeps it small.",
        ),
    )
}

/// Weight memory per format as grouped bars.
pub fn memory_chart() -> Result<Chart> {
    let models = compared_models()?;
    let mut chart = BarChart::new("Weight memory by format", "GiB", &names(&models))
        .format(|v| format!("{v:.1}"));
    for f in weight_formats() {
        chart = chart.series(
            f.name,
            models
                .iter()
                .map(|(_, c)| c.parameter_counts().total() as f64 * f.bytes_per_weight / GIB)
                .collect(),
        );
    }
    chart.render()
}

/// Training tokens per parameter against Chinchilla's compute-optimal 20.
pub fn tokens_per_parameter(
) -> Result<Vec<(&'static ZooModel, f64, &'static published::TrainingTokens)>> {
    compared_models()?
        .into_iter()
        .map(|(m, c)| {
            let t = TRAINING_TOKENS
                .iter()
                .find(|t| t.alias == m.alias)
                .with_context(|| format!("no published training-token count for {}", m.alias))?;
            Ok((m, t.tokens / c.parameter_counts().total() as f64, t))
        })
        .collect()
}

pub fn tokens_per_parameter_table() -> Result<Table> {
    let rows = tokens_per_parameter()?;
    let df = frame(vec![
        Column::new(
            "model".into(),
            rows.iter().map(|r| r.0.name).collect::<Vec<_>>(),
        ),
        Column::new(
            "training tokens (published)".into(),
            rows.iter()
                .map(|r| human_count(r.2.tokens))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "tokens per parameter".into(),
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        ),
        Column::new(
            "× Chinchilla".into(),
            rows.iter()
                .map(|r| r.1 / CHINCHILLA_TOKENS_PER_PARAMETER)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "source".into(),
            rows.iter()
                .map(|r| format!("{} ({})", r.2.source, r.2.detail))
                .collect::<Vec<_>>(),
        ),
    ])?;
    Ok(Table::new("Training tokens per parameter", df)
        .with_decimals(0)
        .with_note("Token counts are published figures; parameters are counted from the configs. Chinchilla (Hoffmann et al. 2022, arXiv:2203.15556): about 20 tokens per parameter is compute-optimal."))
}

pub fn tokens_per_parameter_chart() -> Result<Chart> {
    let rows = tokens_per_parameter()?;
    let names: Vec<&str> = rows.iter().map(|r| r.0.name).collect();
    BarChart::new(
        "Training tokens per parameter (published token counts)",
        "tokens per parameter (log scale)",
        &names,
    )
    .series("tokens per parameter", rows.iter().map(|r| r.1).collect())
    .reference_line("Chinchilla optimum, 20", CHINCHILLA_TOKENS_PER_PARAMETER)
    .log_y()
    .format(|v| format!("{v:.0}"))
    .render()
}

/// What the papers and model cards report, with source and setting: not comparable with each
/// other, nor with our measurements.
pub fn published_scores_table() -> Result<Table> {
    let model_name =
        |alias: &str| zoo::lookup(alias).map_or(alias.to_string(), |m| m.name.to_string());
    let s = PUBLISHED_SCORES;
    let df = frame(vec![
        Column::new(
            "model".into(),
            s.iter().map(|p| model_name(p.alias)).collect::<Vec<_>>(),
        ),
        Column::new(
            "checkpoint".into(),
            s.iter().map(|p| p.checkpoint).collect::<Vec<_>>(),
        ),
        Column::new(
            "benchmark".into(),
            s.iter().map(|p| p.benchmark).collect::<Vec<_>>(),
        ),
        Column::new(
            "setting".into(),
            s.iter().map(|p| p.setting).collect::<Vec<_>>(),
        ),
        Column::new(
            "published score %".into(),
            s.iter().map(|p| p.score).collect::<Vec<_>>(),
        ),
        Column::new(
            "source".into(),
            s.iter().map(|p| p.source).collect::<Vec<_>>(),
        ),
    ])?;
    Ok(Table::new("Published scores (not measured here)", df).with_note(
        "Copied from the sources named; different harnesses, prompts and checkpoints, so rows are not \
         comparable with each other. No StableLM 2 score is listed: none was checked against its \
         source yet. Measured scores come from `billion-llm bench`.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_formats_cost_what_ggml_says() {
        assert_eq!(ggml_bytes_per_weight(GgmlDType::Q8_0), 34.0 / 32.0);
        assert_eq!(ggml_bytes_per_weight(GgmlDType::Q4_0), 18.0 / 32.0);
    }

    #[test]
    fn tables_cover_the_four_models() {
        let params = parameter_table().unwrap();
        assert_eq!(params.rows().len(), 4);
        // TinyLlama: 1,100,048,384 parameters in all.
        assert_eq!(params.rows()[0][5], "1100048384");
        let memory = memory_table().unwrap();
        // TinyLlama in f32: 1.1e9 × 4 bytes = 4.10 GiB.
        assert_eq!(memory.rows()[0][1], "4.10");
        // Its KV cache: 2 (k, v) × 22 layers × 4 KV heads × 64 dims × 2 bytes × 2048 = 44 MiB.
        assert_eq!(memory.rows()[0][5], "44.00");
        let ratio = tokens_per_parameter().unwrap();
        assert!((ratio[0].1 - 3e12 / 1_100_048_384.0).abs() < 1e-6);
        assert_eq!(
            published_scores_table().unwrap().rows().len(),
            PUBLISHED_SCORES.len()
        );
    }

    #[test]
    fn charts_render() {
        for chart in [
            parameter_chart().unwrap(),
            memory_chart().unwrap(),
            tokens_per_parameter_chart().unwrap(),
        ] {
            assert!(chart.svg.contains("TinyLlama 1.1B"), "{}", chart.title);
        }
    }
}
