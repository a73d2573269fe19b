//! Charts on two linear axes: labelled points (scatter) and curves (line).

use super::chart::{draw_legend, plot_error, Chart, HEIGHT, PALETTE, WIDTH};
use anyhow::Result;
use plotters::prelude::*;

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

#[cfg(test)]
mod tests {
    use super::super::chart::svg_text::{count, has_text};
    use super::*;

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
