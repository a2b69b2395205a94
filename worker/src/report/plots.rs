//! The run's plots as PNG files in `RUN_DIR/plots/`, drawn with plotters' bitmap backend and
//! the bundled font: loss, lr and momentum, loss scale, throughput, and, when recorded, kNN
//! accuracy and the collapse monitor.

use super::font::{ensure_registered, FAMILY};
use super::records::RunRecords;
use crate::error::{Result, WorkerError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

pub const PLOTS_DIR: &str = "plots";
const SIZE: (u32, u32) = (900, 500);

/// One line of a panel.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One chart: title, axis names, lines.
pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
}

fn bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 * y1.abs().max(1.0) {
        // A constant series (loss scale without AMP): centre it in a visible band.
        (y0, y1) = (y0 - 0.5 * y0.abs().max(1e-3), y1 + 0.5 * y1.abs().max(1e-3));
    }
    let pad = (y1 - y0) * 0.05;
    (x0, x1, y0 - pad, y1 + pad)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
) -> std::result::Result<(), String> {
    let (x0, x1, y0, y1) = bounds(&p.series);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(p.x_desc.as_str())
        .y_desc(p.y_desc.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for s in &p.series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    if p.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draw `panels` stacked vertically into the PNG `path`.
pub fn draw_png(path: &Path, panels: &[Panel]) -> Result<()> {
    ensure_registered();
    let fail = |e: String| WorkerError::BadFile {
        path: path.to_path_buf(),
        problem: format!("drawing the plot: {e}"),
    };
    let h = SIZE.1 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (SIZE.0, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, p) in areas.iter().zip(panels) {
        draw_panel(area, p).map_err(fail)?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(150, 150, 150);

fn series(label: &str, points: Vec<(f64, f64)>, color: RGBColor) -> Series {
    Series { label: label.into(), points, color }
}

fn panel(title: &str, x: &str, y: &str, series: Vec<Series>) -> Panel {
    Panel { title: title.into(), x_desc: x.into(), y_desc: y.into(), series }
}

/// Trailing mean over `w` points.
fn moving_average(p: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(p.len());
    let mut sum = 0.0;
    for i in 0..p.len() {
        sum += p[i].1;
        if i >= w {
            sum -= p[i - w].1;
        }
        out.push((p[i].0, sum / (i + 1).min(w) as f64));
    }
    out
}

/// Draw every plot the records support into `run_dir/plots/`; returns the files written.
pub fn write_plots(run_dir: &Path, r: &RunRecords) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| WorkerError::io(format!("creating {}", dir.display()), e))?;
    let mut figures: Vec<(&str, Vec<Panel>)> = Vec::new();
    let s = &r.steps;
    if !s.is_empty() {
        let pts = |f: &dyn Fn(&crate::train::StepMetrics) -> f64| -> Vec<(f64, f64)> {
            s.iter().map(|m| (m.step as f64, f(m))).collect()
        };
        let loss = pts(&|m| m.loss as f64);
        let smooth = moving_average(&loss, (s.len() / 50).max(1));
        figures.push((
            "loss.png",
            vec![panel(
                "Training loss",
                "optimiser step",
                "loss",
                vec![series("loss", loss, GREY), series("moving average", smooth, BLUE)],
            )],
        ));
        figures.push((
            "lr_momentum.png",
            vec![
                panel(
                    "Learning rate",
                    "optimiser step",
                    "lr",
                    vec![series("lr", pts(&|m| m.lr as f64), BLUE)],
                ),
                panel(
                    "Momentum-encoder momentum",
                    "optimiser step",
                    "m",
                    vec![series("momentum", pts(&|m| m.momentum as f64), ORANGE)],
                ),
            ],
        ));
        figures.push((
            "loss_scale.png",
            vec![panel(
                "Loss scale (AMP)",
                "optimiser step",
                "log2(loss scale)",
                vec![series(
                    "loss scale",
                    pts(&|m| (m.loss_scale as f64).max(f64::MIN_POSITIVE).log2()),
                    GREEN,
                )],
            )],
        ));
        figures.push((
            "throughput.png",
            vec![panel(
                "Throughput",
                "optimiser step",
                "images / s",
                vec![series("images/s", pts(&|m| m.images_per_sec as f64), RED)],
            )],
        ));
    }
    let knn: Vec<(f64, f64)> =
        r.evals.iter().filter_map(|e| e.knn_top1.map(|a| (e.epoch, 100.0 * a as f64))).collect();
    if !knn.is_empty() {
        figures.push((
            "knn.png",
            vec![panel("kNN top-1 accuracy", "epoch", "top-1 (%)", vec![series("kNN", knn, BLUE)])],
        ));
    }
    let col: Vec<_> = r.evals.iter().filter_map(|e| e.collapse.map(|c| (e.epoch, c))).collect();
    if !col.is_empty() {
        let healthy = 1.0 / (col[0].1.dim.max(1) as f64).sqrt();
        figures.push((
            "collapse.png",
            vec![
                panel(
                    "Embedding std (collapse monitor)",
                    "epoch",
                    "mean per-dimension std",
                    vec![
                        series("std", col.iter().map(|(e, c)| (*e, c.std as f64)).collect(), BLUE),
                        series("1/sqrt(d) (healthy)", col.iter().map(|(e, _)| (*e, healthy)).collect(), GREY),
                    ],
                ),
                panel(
                    "Effective rank of the embeddings",
                    "epoch",
                    "effective rank",
                    vec![series(
                        "effective rank",
                        col.iter().map(|(e, c)| (*e, c.effective_rank as f64)).collect(),
                        ORANGE,
                    )],
                ),
            ],
        ));
    }
    let mut written = Vec::new();
    for (name, panels) in figures {
        let path = dir.join(name);
        draw_png(&path, &panels)?;
        written.push(path);
    }
    Ok(written)
}
