//! The comparison's two charts, drawn with `plotters` as SVG: per-operation bars (in-process
//! per call, and worker CPU per request over the bus) and the scaling curves (throughput and
//! p99 against requests in flight, per plugin kind and number of workers).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Bar colours, one per implementation (native, Rhai, WASM, Python).
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x2b, 0x6c, 0xb0),
    RGBColor(0xdd, 0x8a, 0x2e),
    RGBColor(0x3a, 0x9d, 0x5d),
    RGBColor(0x9b, 0x4d, 0xca),
];

/// Line colours for 1, 2 and 3 workers.
const WORKER_COLOURS: [RGBColor; 3] = [
    RGBColor(0x2b, 0x6c, 0xb0),
    RGBColor(0xdd, 0x8a, 0x2e),
    RGBColor(0x3a, 0x9d, 0x5d),
];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One panel of bars: for each group (an operation), one value per implementation, in µs, and
/// optionally a claimed value per implementation drawn as a black mark.
pub struct Bars<'a> {
    pub title: &'a str,
    pub groups: &'a [&'a str],
    pub series: &'a [&'a str],
    /// `values[group][series]`, µs.
    pub values: Vec<Vec<f64>>,
    /// `claims[group][series]`, µs.
    pub claims: Option<Vec<Vec<f64>>>,
}

/// Draws `panels` side by side into an SVG at `path`.
pub fn bars(path: &Path, caption: &str, panels: &[Bars]) -> Result<()> {
    let root = SVGBackend::new(path, (560 * panels.len() as u32, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 20))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        bar_panel(area, panel)?;
    }
    root.present()?;
    Ok(())
}

fn bar_panel(area: &DrawingArea<SVGBackend, Shift>, panel: &Bars) -> Result<()> {
    let all = panel
        .values
        .iter()
        .flatten()
        .chain(panel.claims.iter().flatten().flatten())
        .copied()
        .filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = 10f64.powf((lo / 2.0).log10().floor());
    let hi = 10f64.powf((hi * 2.0).log10().ceil());
    let groups = panel.groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups as f64, (lo..hi).log_scale())?;
    let names = panel.groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Labels every half unit (0, 0.5, 1, …): a group's name at its centre, none between.
        .x_labels(2 * groups + 1)
        .x_label_formatter(&|x| {
            if x.fract() == 0.5 {
                names
                    .get(x.floor() as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs (log scale)")
        .y_label_formatter(&|y| format_us(*y))
        .draw()?;
    let n = panel.series.len() as f64;
    let width = 0.8 / n;
    for (s, name) in panel.series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let x0 = |g: usize| g as f64 + 0.1 + s as f64 * width;
        chart
            .draw_series(panel.values.iter().enumerate().map(|(g, row)| {
                Rectangle::new(
                    [(x0(g), lo), (x0(g) + width * 0.9, row[s].max(lo))],
                    colour.filled(),
                )
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        if let Some(claims) = &panel.claims {
            chart.draw_series(claims.iter().enumerate().map(|(g, row)| {
                PathElement::new(
                    vec![(x0(g), row[s]), (x0(g) + width * 0.9, row[s])],
                    BLACK.stroke_width(3),
                )
            }))?;
        }
    }
    if panel.claims.is_some() {
        chart
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label("the docs' claim")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], BLACK.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// One measured curve: a kind of plugin on some number of workers (`workers == 0`: the bare
/// echo), `(in flight, throughput per second, p99 in µs)` per point.
pub struct Curve {
    pub kind: String,
    pub workers: usize,
    pub points: Vec<(usize, f64, f64)>,
}

/// Draws the scaling curves: a column per kind, throughput above and p99 below, a line per
/// number of workers, the bare echo in grey in every panel.
pub fn scaling(path: &Path, caption: &str, kinds: &[&str], curves: &[Curve]) -> Result<()> {
    let root = SVGBackend::new(path, (420 * kinds.len() as u32, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 20))?;
    let rows = root.split_evenly((2, kinds.len()));
    let max_inflight = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1) as f64;
    let max_tp = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let (lo_p99, hi_p99) = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.2))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_p99 = 10f64.powf((lo_p99 / 1.5).log10().floor());
    let hi_p99 = 10f64.powf((hi_p99 * 1.5).log10().ceil());
    for (column, kind) in kinds.iter().enumerate() {
        let shown: Vec<&Curve> = curves
            .iter()
            .filter(|c| c.workers == 0 || c.kind == *kind)
            .collect();
        for (row, metric) in ["throughput (requests/s)", "p99 latency (µs, log)"]
            .iter()
            .enumerate()
        {
            let area = &rows[row * kinds.len() + column];
            let title = format!("{kind}: {metric}");
            let mut builder = ChartBuilder::on(area);
            builder
                .caption(&title, ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(62);
            let x = (1f64..max_inflight).log_scale();
            if row == 0 {
                let mut chart = builder.build_cartesian_2d(x, 0f64..max_tp * 1.1)?;
                chart
                    .configure_mesh()
                    .x_desc("requests in flight")
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
                    .draw()?;
                draw_lines(&mut chart, &shown, |p| p.1)?;
            } else {
                let mut chart = builder.build_cartesian_2d(x, (lo_p99..hi_p99).log_scale())?;
                chart
                    .configure_mesh()
                    .x_desc("requests in flight")
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .y_label_formatter(&|v| format_us(*v))
                    .draw()?;
                draw_lines(&mut chart, &shown, |p| p.2)?;
            }
        }
    }
    root.present()?;
    Ok(())
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    curves: &[&Curve],
    value: impl Fn(&(usize, f64, f64)) -> f64,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for curve in curves {
        let (colour, label) = if curve.workers == 0 {
            (RGBColor(0x99, 0x99, 0x99), "bare echo".to_string())
        } else {
            (
                WORKER_COLOURS[(curve.workers - 1) % WORKER_COLOURS.len()],
                format!(
                    "{} worker{}",
                    curve.workers,
                    if curve.workers == 1 { "" } else { "s" }
                ),
            )
        };
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .map(|p| (p.0 as f64, value(p)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 12, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// `0.5 µs`, `12 µs`, `1.2 ms`: an axis label in microseconds.
fn format_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", trim(us / 1000.0))
    } else {
        format!("{} µs", trim(us))
    }
}

fn trim(v: f64) -> String {
    if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
