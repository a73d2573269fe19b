//! A finished chart as SVG text, and what every kind of chart draws with: the canvas size, the
//! palette, named series, the legend. The kinds are [`super::bar_chart`] and [`super::xy_chart`].
//!
//! SVG keeps charts sharp in the book, diffable in git, and needs no font files: plotters'
//! SVG backend writes `<text>` elements and the browser renders them.

use super::evcxr_print;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

pub(super) const WIDTH: u32 = 760;
pub(super) const HEIGHT: u32 = 440;

/// The Tableau 10 colours: distinct, and readable by most colour-blind readers.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
];

/// A finished chart: its title and its SVG text.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub svg: String,
}

impl Chart {
    /// Writes the SVG file the book embeds.
    pub fn save_svg(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.svg).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Shows the chart in a Jupyter notebook (evcxr calls this for a cell's final value).
    pub fn evcxr_display(&self) {
        evcxr_print("image/svg+xml", &self.svg);
    }
}

/// One named series of values, one per category.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Self {
        Series {
            name: name.into(),
            values,
        }
    }
}

/// The legend every chart draws: upper right, on a translucent white box.
pub(super) fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_error)
}

pub(super) fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart failed: {e}")
}

/// What the chart tests look for in an SVG.
#[cfg(test)]
pub(super) mod svg_text {
    pub fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    /// plotters writes each text on a line of its own inside `<text>`.
    pub fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }
}
