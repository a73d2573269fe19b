//! Bar, scatter and line charts drawn with plotters into SVG text.
//!
//! SVG keeps charts sharp in the book, diffable in git, and needs no font files: plotters'
//! SVG backend writes `<text>` elements and the browser renders them.

use super::evcxr_print;
use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 440;

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

/// Bars per category: side by side (grouped) or on top of each other (stacked).
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    pub stacked: bool,
    /// A logarithmic value axis, for values that span orders of magnitude (grouped bars only).
    pub log_y: bool,
    /// Horizontal lines with a legend entry, e.g. Chinchilla's 20 tokens per parameter.
    pub reference_lines: Vec<(String, f64)>,
    /// How values are printed on the axis and above the bars.
    pub format: fn(f64) -> String,
    /// A fixed top of the value axis (100 for percentages); otherwise fitted to the data.
    pub y_max: Option<f64>,
}

fn plain(v: f64) -> String {
    format!("{v}")
}

impl BarChart {
    pub fn new(title: impl Into<String>, y_label: impl Into<String>, categories: &[&str]) -> Self {
        BarChart {
            title: title.into(),
            y_label: y_label.into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            series: Vec::new(),
            stacked: false,
            log_y: false,
            reference_lines: Vec::new(),
            format: plain,
            y_max: None,
        }
    }

    pub fn series(mut self, name: impl Into<String>, values: Vec<f64>) -> Self {
        self.series.push(Series::new(name, values));
        self
    }

    pub fn stacked(mut self) -> Self {
        self.stacked = true;
        self
    }

    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    pub fn reference_line(mut self, name: impl Into<String>, value: f64) -> Self {
        self.reference_lines.push((name.into(), value));
        self
    }

    pub fn y_max(mut self, top: f64) -> Self {
        self.y_max = Some(top);
        self
    }

    pub fn format(mut self, format: fn(f64) -> String) -> Self {
        self.format = format;
        self
    }

    /// The bars as (series index, category index, bottom, top).
    fn bars(&self) -> Vec<(usize, usize, f64, f64)> {
        let mut bars = Vec::new();
        let mut stack = vec![0.0; self.categories.len()];
        for (s, series) in self.series.iter().enumerate() {
            for (c, &v) in series.values.iter().enumerate() {
                if self.stacked {
                    bars.push((s, c, stack[c], stack[c] + v));
                    stack[c] += v;
                } else {
                    bars.push((s, c, 0.0, v));
                }
            }
        }
        bars
    }

    fn check(&self) -> Result<()> {
        for s in &self.series {
            if s.values.len() != self.categories.len() {
                anyhow::bail!(
                    "chart {:?}: series {:?} has {} values for {} categories",
                    self.title,
                    s.name,
                    s.values.len(),
                    self.categories.len()
                );
            }
        }
        if self.log_y && self.stacked {
            anyhow::bail!("chart {:?}: stacked bars need a linear axis", self.title);
        }
        Ok(())
    }

    /// Draws the chart.
    pub fn render(&self) -> Result<Chart> {
        self.check()?;
        let bars = self.bars();
        let mut top = bars.iter().map(|b| b.3).fold(0.0, f64::max);
        for (_, v) in &self.reference_lines {
            top = top.max(*v);
        }
        if top <= 0.0 {
            top = 1.0;
        }
        let svg = if self.log_y {
            let positive = bars
                .iter()
                .map(|b| b.3)
                .chain(self.reference_lines.iter().map(|r| r.1))
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let bottom = 10f64.powf(positive.log10().floor());
            self.draw((bottom..top * 4.0).log_scale(), bottom)?
        } else {
            self.draw(0.0..self.y_max.unwrap_or(top * 1.15), 0.0)?
        };
        Ok(Chart {
            title: self.title.clone(),
            svg,
        })
    }

    fn draw<Y>(&self, y_axis: Y, floor: f64) -> Result<String>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let n = self.categories.len();
        let groups = if self.stacked {
            1
        } else {
            self.series.len().max(1)
        };
        let width = 0.8 / groups as f64;
        // Wider for many categories, so that their labels do not collide.
        let chart_width = WIDTH.max(115 * n as u32);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (chart_width, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(34)
                .y_label_area_size(74)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y_axis)
                .map_err(plot_error)?;
            let categories = &self.categories;
            let category_at = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                    categories[i as usize].clone()
                } else {
                    String::new()
                }
            };
            let format = self.format;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&category_at)
                .y_label_formatter(&|y| format(*y))
                .y_desc(self.y_label.as_str())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(plot_error)?;
            let all_bars = self.bars();
            for (s, series) in self.series.iter().enumerate() {
                let color = PALETTE[s % PALETTE.len()];
                let rects = bars_of(&all_bars, s).map(|(c, bottom, top)| {
                    let slot = if self.stacked { 0 } else { s };
                    let left = c as f64 - 0.4 + slot as f64 * width;
                    Rectangle::new(
                        [(left, bottom.max(floor)), (left + width * 0.92, top)],
                        color.filled(),
                    )
                });
                chart
                    .draw_series(rects)
                    .map_err(plot_error)?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                    });
            }
            // Values above the bars (the total, for stacks).
            let label_style = TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            let labels: Vec<(f64, f64)> = if self.stacked {
                (0..n)
                    .map(|c| {
                        let total = self.series.iter().map(|s| s.values[c]).sum();
                        (c as f64, total)
                    })
                    .collect()
            } else {
                self.series
                    .iter()
                    .enumerate()
                    .flat_map(|(s, series)| {
                        series
                            .values
                            .iter()
                            .enumerate()
                            .map(move |(c, &v)| (c as f64 - 0.4 + (s as f64 + 0.46) * width, v))
                    })
                    .collect()
            };
            chart
                .draw_series(
                    labels
                        .into_iter()
                        .filter(|(_, v)| *v > floor)
                        .map(|(x, v)| Text::new(format(v), (x, v), label_style.clone())),
                )
                .map_err(plot_error)?;
            for (name, value) in &self.reference_lines {
                let line = RGBColor(0x33, 0x33, 0x33);
                chart
                    .draw_series(LineSeries::new(
                        vec![(-0.5, *value), (n as f64 - 0.5, *value)],
                        line.stroke_width(2),
                    ))
                    .map_err(plot_error)?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], line));
            }
            if self.series.len() + self.reference_lines.len() > 1 {
                draw_legend(&mut chart)?;
            }
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }
}

/// The bars of one series: (category, bottom, top).
fn bars_of(
    bars: &[(usize, usize, f64, f64)],
    series: usize,
) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
    bars.iter()
        .filter(move |b| b.0 == series)
        .map(|b| (b.1, b.2, b.3))
}

/// One labelled point of a scatter chart.
#[derive(Debug, Clone)]
pub struct ScatterPoint {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// Labelled points on two linear axes, e.g. decode speed against peak memory.
#[derive(Debug, Clone)]
pub struct ScatterChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<ScatterPoint>,
}

impl ScatterChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        ScatterChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            points: Vec::new(),
        }
    }

    pub fn point(mut self, label: impl Into<String>, x: f64, y: f64) -> Self {
        self.points.push(ScatterPoint {
            label: label.into(),
            x,
            y,
        });
        self
    }

    pub fn render(&self) -> Result<Chart> {
        let x_max = self
            .points
            .iter()
            .map(|p| p.x)
            .fold(0.0, f64::max)
            .max(1e-9)
            // Room on the right for the legend.
            * 1.7;
        let y_max = self
            .points
            .iter()
            .map(|p| p.y)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.2;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(74)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(plot_error)?;
            // Names go in a legend, not beside the points: points of similar models sit close
            // together and their labels would overlap.
            for (i, p) in self.points.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series([Circle::new((p.x, p.y), 7, color.filled())])
                    .map_err(plot_error)?
                    .label(p.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
            }
            draw_legend(&mut chart)?;
            root.present().map_err(plot_error)?;
        }
        Ok(Chart {
            title: self.title.clone(),
            svg,
        })
    }
}

/// One named curve of a line chart: `(x, y)` points in order of x.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Curves on two linear axes, e.g. the training loss against the step.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    /// Start the y axis at zero (for quantities such as a speed-up, whose size matters);
    /// otherwise it spans the data (for a loss, whose change matters).
    pub y_from_zero: bool,
    /// A fixed top of the y axis (room for the legend above rising curves); otherwise fitted
    /// to the data.
    pub y_max: Option<f64>,
}

impl LineChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            curves: Vec::new(),
            y_from_zero: false,
            y_max: None,
        }
    }

    pub fn curve(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.curves.push(Curve {
            name: name.into(),
            points,
        });
        self
    }

    pub fn y_from_zero(mut self) -> Self {
        self.y_from_zero = true;
        self
    }

    pub fn y_max(mut self, top: f64) -> Self {
        self.y_max = Some(top);
        self
    }

    pub fn render(&self) -> Result<Chart> {
        let all = || self.curves.iter().flat_map(|c| c.points.iter());
        if all().next().is_none() {
            anyhow::bail!("the chart {:?} has no points", self.title);
        }
        let (x_min, x_max) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y_min, y_max) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let x_span = (x_max - x_min).max(1e-9);
        let y_pad = 0.08 * (y_max - y_min).max(1e-9);
        let y_low = if self.y_from_zero { 0.0 } else { y_min - y_pad };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(74)
                .build_cartesian_2d(
                    x_min..x_min + x_span,
                    y_low..self.y_max.unwrap_or(y_max + y_pad),
                )
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(plot_error)?;
            for (i, c) in self.curves.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        c.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_error)?
                    .label(c.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                // Markers only where the points are few enough to tell apart.
                if c.points.len() <= 40 {
                    chart
                        .draw_series(c.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(plot_error)?;
                }
            }
            draw_legend(&mut chart)?;
            root.present().map_err(plot_error)?;
        }
        Ok(Chart {
            title: self.title.clone(),
            svg,
        })
    }
}

/// The legend every chart draws: upper right, on a translucent white box.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
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

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart failed: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    /// plotters writes each text on a line of its own inside `<text>`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn line_chart_draws_each_curve_and_its_legend() {
        let chart = LineChart::new("Loss", "step", "loss")
            .curve("train", vec![(1.0, 2.0), (2.0, 1.5), (3.0, 1.2)])
            .curve("held out", vec![(1.0, 2.1), (3.0, 1.4)])
            .render()
            .unwrap();
        // Per curve: its line and its legend mark in its colour, and a marker per point.
        let hex = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        for (color, points) in [(PALETTE[0], 3), (PALETTE[1], 2)] {
            let strokes = count(&chart.svg, &format!("stroke=\"{}\"", hex(color)));
            let fills = count(&chart.svg, &format!("fill=\"{}\"", hex(color)));
            assert_eq!((strokes, fills), (2, points), "{}", chart.svg);
        }
        for label in ["Loss", "train", "held out", "step"] {
            assert!(has_text(&chart.svg, label), "{label}");
        }
        assert!(LineChart::new("empty", "x", "y").render().is_err());
    }

    #[test]
    fn grouped_bars_draw_one_rect_per_value_and_the_labels() {
        let chart = BarChart::new("T", "y", &["a", "b", "c"])
            .series("one", vec![1.0, 2.0, 3.0])
            .series("two", vec![2.0, 1.0, 0.5])
            .render()
            .unwrap();
        let fill = |c: RGBColor| format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        // Three bars and one legend swatch per series.
        assert_eq!(count(&chart.svg, &fill(PALETTE[0])), 4, "{}", chart.svg);
        assert_eq!(count(&chart.svg, &fill(PALETTE[1])), 4);
        for label in ["a", "b", "c", "one", "two"] {
            assert!(has_text(&chart.svg, label), "{label}");
        }
    }

    #[test]
    fn stacks_add_up_and_log_axes_reject_stacks() {
        let chart = BarChart::new("T", "y", &["a"])
            .series("x", vec![1.0])
            .series("y", vec![2.0])
            .stacked();
        assert_eq!(chart.bars(), vec![(0, 0, 0.0, 1.0), (1, 0, 1.0, 3.0)]);
        assert!(chart.clone().log_y().render().is_err());
        let bad = BarChart::new("T", "y", &["a", "b"]).series("x", vec![1.0]);
        assert!(bad
            .render()
            .unwrap_err()
            .to_string()
            .contains("1 values for 2"));
    }

    #[test]
    fn log_axis_and_reference_line() {
        let chart = BarChart::new("T", "tokens per parameter", &["a", "b"])
            .series("ratio", vec![300.0, 7000.0])
            .log_y()
            .reference_line("Chinchilla", 20.0)
            .render()
            .unwrap();
        assert!(has_text(&chart.svg, "Chinchilla"), "{}", chart.svg);
        assert!(chart.svg.starts_with("<svg"));
    }

    #[test]
    fn scatter_labels_points_in_a_legend() {
        let chart = ScatterChart::new("S", "GB", "tok/s")
            .point("model <a>", 1.0, 10.0)
            .point("model b", 1.1, 10.5)
            .render()
            .unwrap();
        // One circle per point and one marker per legend entry.
        assert_eq!(count(&chart.svg, "<circle"), 4);
        // plotters escapes text for SVG itself.
        assert!(has_text(&chart.svg, "model &lt;a&gt;"), "{}", chart.svg);
        assert!(has_text(&chart.svg, "model b"), "{}", chart.svg);
    }
}
