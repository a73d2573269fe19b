//! What the notebooks show and the book embeds: tables (polars DataFrames) and charts (plotters
//! SVG).
//!
//! Both types render themselves in a Jupyter notebook through evcxr's `evcxr_display` convention
//! (a method that prints a MIME bundle between `EVCXR_BEGIN_CONTENT` and `EVCXR_END_CONTENT`), and
//! both write the files the book includes: a chart as `.svg`, a table as a markdown `.md`. A
//! notebook cell and the book therefore show the same object, made by the same library call.
//!
//! Uses no other part of the crate, so every part above the model can return a `Table` or a
//! `Chart`.

mod bar_chart;
mod chart;
mod table;
mod xy_chart;

pub use bar_chart::BarChart;
pub use chart::{Chart, Series};
pub use table::Table;
pub use xy_chart::{Curve, LineChart, ScatterChart, ScatterPoint};

/// Prints one evcxr MIME bundle (what `evcxr_display` methods emit).
pub fn evcxr_print(mime: &str, content: &str) {
    println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
}

/// Escapes text for HTML and SVG.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Human-readable counts: 1.10B, 262M, 65.5K.
pub fn human_count(n: f64) -> String {
    let (value, unit) = if n >= 1e12 {
        (n / 1e12, "T")
    } else if n >= 1e9 {
        (n / 1e9, "B")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "K")
    } else {
        return format!("{n:.0}");
    };
    if value >= 100.0 {
        format!("{value:.0}{unit}")
    } else if value >= 10.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.2}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_like_model_cards() {
        assert_eq!(human_count(1_100_048_384.0), "1.10B");
        assert_eq!(human_count(262_144_000.0), "262M");
        assert_eq!(human_count(65_536.0), "65.5K");
        assert_eq!(human_count(3e12), "3.00T");
        assert_eq!(human_count(20.0), "20");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
