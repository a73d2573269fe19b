//! A titled polars DataFrame that renders as HTML in a notebook and as markdown in the book.

use super::{escape_html, evcxr_print};
use anyhow::{Context, Result};
use polars::prelude::{AnyValue, DataFrame};
use std::path::Path;

/// A table: a DataFrame, a title, and a note saying where its numbers come from.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub frame: DataFrame,
    /// Shown under the table: sources, settings, caveats.
    pub note: Option<String>,
    /// Digits after the decimal point for floating-point cells.
    pub decimals: usize,
}

impl Table {
    pub fn new(title: impl Into<String>, frame: DataFrame) -> Self {
        Table {
            title: title.into(),
            frame,
            note: None,
            decimals: 2,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn with_decimals(mut self, decimals: usize) -> Self {
        self.decimals = decimals;
        self
    }

    /// The column names, in order.
    pub fn header(&self) -> Vec<String> {
        self.frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// Every cell as display text, row by row.
    pub fn rows(&self) -> Vec<Vec<String>> {
        let columns = self.frame.columns();
        (0..self.frame.height())
            .map(|r| {
                columns
                    .iter()
                    .map(|c| c.get(r).map_or_else(|_| String::new(), |v| self.cell(&v)))
                    .collect()
            })
            .collect()
    }

    fn cell(&self, value: &AnyValue) -> String {
        match value {
            AnyValue::Null => String::new(),
            AnyValue::Float64(v) => format!("{v:.*}", self.decimals),
            AnyValue::Float32(v) => format!("{v:.*}", self.decimals),
            AnyValue::String(s) => s.to_string(),
            AnyValue::StringOwned(s) => s.to_string(),
            other => other.to_string(),
        }
    }

    /// A GitHub-flavoured markdown table, with the title as a bold line above it and the note
    /// in italics below. Pipes inside cells are escaped.
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let header = self.header();
        let mut out = format!("**{}**\n\n", self.title);
        out.push_str(&format!(
            "| {} |\n",
            header
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
        for row in self.rows() {
            out.push_str(&format!(
                "| {} |\n",
                row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        if let Some(note) = &self.note {
            out.push_str(&format!("\n*{}*\n", note.trim()));
        }
        out
    }

    /// An HTML table with a caption (what a notebook shows).
    pub fn to_html(&self) -> String {
        let mut out = String::from("<table>\n");
        out.push_str(&format!(
            "<caption style=\"caption-side: top; text-align: left; font-weight: bold\">{}</caption>\n<thead><tr>",
            escape_html(&self.title)
        ));
        for h in self.header() {
            out.push_str(&format!("<th>{}</th>", escape_html(&h)));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in self.rows() {
            out.push_str("<tr>");
            for c in row {
                out.push_str(&format!("<td>{}</td>", escape_html(&c)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
        if let Some(note) = &self.note {
            out.push_str(&format!("<p><em>{}</em></p>\n", escape_html(note.trim())));
        }
        out
    }

    /// Writes the markdown form (what the book includes).
    pub fn save_markdown(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_markdown())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Shows the table in a Jupyter notebook (evcxr calls this for a cell's final value).
    pub fn evcxr_display(&self) {
        evcxr_print("text/html", &self.to_html());
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_markdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::Column;

    fn sample() -> Table {
        let frame = DataFrame::new_infer_height(vec![
            Column::new("model".into(), &["a|b", "c"]),
            Column::new("score".into(), &[0.5f64, 0.25]),
            Column::new("n".into(), &[3u64, 4]),
        ])
        .unwrap();
        Table::new("Scores", frame).with_note("from a test")
    }

    #[test]
    fn markdown_has_header_rows_and_note() {
        let md = sample().to_markdown();
        assert_eq!(
            md,
            "**Scores**\n\n| model | score | n |\n| --- | --- | --- |\n| a\\|b | 0.50 | 3 |\n| c | 0.25 | 4 |\n\n*from a test*\n"
        );
    }

    #[test]
    fn html_escapes_cells() {
        let html = sample().with_decimals(1).to_html();
        assert!(
            html.contains("<td>a|b</td><td>0.5</td><td>3</td>"),
            "{html}"
        );
        assert!(html.contains("<caption"), "{html}");
    }
}
