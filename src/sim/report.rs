//! What a simulator scenario reports: tables for the terminal and charts
//! drawn as one SVG file, with no plotting dependency.

use std::fmt::{self, Write as _};

/// A table printed with aligned columns.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Printed above the table.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells, row by row (as many as the header).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with `title` and columns `header`.
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(columns) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        writeln!(f, "{}", self.title)?;
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut out = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if i == 0 {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                }
            }
            writeln!(f, "  {}", out.trim_end())
        };
        line(f, &self.header)?;
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// How a chart draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartKind {
    /// Lines through the points, in x order.
    Lines,
    /// Bars, one per point of each series (a histogram).
    Bars,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// One chart of the plot.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Printed above the chart.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// Lines or bars.
    pub kind: ChartKind,
    /// What is drawn.
    pub series: Vec<Series>,
}

/// A scenario's whole result.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario's name and parameters, one line.
    pub heading: String,
    /// Printed in order.
    pub tables: Vec<Table>,
    /// Drawn in order, one under another.
    pub charts: Vec<Chart>,
    /// Lines printed after the tables.
    pub notes: Vec<String>,
    /// The run's trace hash (see [`crate::sim::Sim::trace_hash`]).
    pub trace_hash: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading)?;
        for t in &self.tables {
            writeln!(f)?;
            write!(f, "{t}")?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        writeln!(f)?;
        writeln!(f, "trace hash {:016x}", self.trace_hash)
    }
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn chart(out: &mut String, c: &Chart, y0: f64) {
    let points = c.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if !x_min.is_finite() {
        (x_min, x_max) = (0.0, 1.0);
    }
    if c.kind == ChartKind::Bars {
        x_min -= 0.5;
        x_max += 0.5;
    } else {
        x_min = x_min.min(0.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_max = nice_max(y_max);
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * w;
    let py = |y: f64| y0 + TOP + h - y / y_max * h;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 22.0,
        escape(&c.title)
    );
    // Axes, grid and tick labels.
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + w,
            LEFT - 6.0,
            y + 4.0,
            label(v)
        );
    }
    // Bars are labelled at each whole x (at most 20 of them), lines at six
    // evenly spaced points.
    let ticks: Vec<f64> = if c.kind == ChartKind::Bars && x_max - x_min <= 21.0 {
        let first = (x_min + 0.5).round() as i64;
        let last = (x_max - 0.5).round() as i64;
        (first..=last).map(|v| v as f64).collect()
    } else {
        (0..=5)
            .map(|i| x_min + (x_max - x_min) * f64::from(i) / 5.0)
            .collect()
    };
    for v in ticks {
        let x = px(v);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            y0 + TOP + h + 16.0,
            label(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="black"/>"#,
        y0 + TOP
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        LEFT + w / 2.0,
        y0 + HEIGHT - 12.0,
        escape(&c.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        y0 + TOP + h / 2.0,
        y0 + TOP + h / 2.0,
        escape(&c.y_label)
    );
    let n = c.series.len().max(1) as f64;
    for (si, s) in c.series.iter().enumerate() {
        let colour = COLOURS[si % COLOURS.len()];
        match c.kind {
            ChartKind::Lines => {
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let path: Vec<String> = pts
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                    .collect();
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    path.join(" ")
                );
            }
            ChartKind::Bars => {
                let slot = w / (x_max - x_min);
                let bw = (slot * 0.8 / n).max(1.0);
                for &(x, y) in &s.points {
                    let left = px(x) - slot * 0.4 + bw * si as f64;
                    let _ = writeln!(
                        out,
                        r#"<rect x="{left:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{colour}"/>"#,
                        py(y),
                        (py(0.0) - py(y)).max(0.0)
                    );
                }
            }
        }
        let ly = y0 + TOP + 14.0 + 18.0 * si as f64;
        let lx = LEFT + w + 12.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{ly:.1}" font-size="12">{}</text>"#,
            ly - 10.0,
            lx + 18.0,
            escape(&s.name)
        );
    }
}

/// Draw `report`'s charts, one under another, as a standalone SVG document.
pub fn svg(report: &Report) -> String {
    let total = HEIGHT * report.charts.len().max(1) as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="12" fill="#555">{}</text>"##,
        escape(&report.heading)
    );
    for (i, c) in report.charts.iter().enumerate() {
        chart(&mut out, c, 30.0 + HEIGHT * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_svg_is_well_formed() {
        let mut t = Table::new("T", &["a", "value"]);
        t.row(vec!["long name".into(), "1".into()]);
        let text = t.to_string();
        assert!(text.contains("  a          value"), "{text}");
        assert!(text.contains("  long name      1"), "{text}");
        let r = Report {
            heading: "h <x>".into(),
            charts: vec![Chart {
                title: "c".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                kind: ChartKind::Bars,
                series: vec![Series {
                    name: "s".into(),
                    points: vec![(1.0, 2.0), (2.0, 5.0)],
                }],
            }],
            ..Report::default()
        };
        let s = svg(&r);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("h &lt;x&gt;"));
        assert_eq!(
            s.matches("<rect x=").count(),
            2 + 1 + 1,
            "2 bars, frame, legend"
        );
    }

    #[test]
    fn axis_bounds_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(11.0), 20.0);
    }
}
