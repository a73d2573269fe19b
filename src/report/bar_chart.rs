//! Bars per category, grouped or stacked, on a linear or logarithmic axis.

use super::chart::{draw_legend, plot_error, Chart, Series, HEIGHT, PALETTE, WIDTH};
use anyhow::Result;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

fn plain(v: f64) -> String {
    format!("{v}")
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

#[cfg(test)]
mod tests {
    use super::super::chart::svg_text::{count, has_text};
    use super::*;

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
}
