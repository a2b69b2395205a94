//! The run folder's report: plots (PNG) and summary.md, from metrics.jsonl and evals.jsonl.
//!
//! - `records`: reading metrics.jsonl (`StepMetrics`), writing and reading evals.jsonl
//!   (`EvalRecord`: kNN accuracy during training, the collapse monitor).
//! - `plots`: loss, lr and momentum, loss scale, throughput, kNN, collapse (plotters, bitmap).
//! - `font`: the bundled font plotters draws text with (no system fonts needed).
//! - `summary`: summary.md.
//!
//! Entry point for the end of training (rank 0) and for `launcher eval`: `write_report`.

pub mod font;
pub mod plots;
pub mod records;
pub mod summary;

pub use records::{EvalLog, EvalRecord, RunRecords};
pub use summary::ReportInput;

use crate::error::Result;
use std::path::{Path, PathBuf};

/// What `write_report` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    pub summary: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Read the run's records, draw the plots into `run_dir/plots/` and write `run_dir/summary.md`.
pub fn write_report(run_dir: &Path, input: &ReportInput<'_>) -> Result<ReportFiles> {
    let records = RunRecords::read(run_dir)?;
    let plots = plots::write_plots(run_dir, &records)?;
    let text = summary::render(run_dir, &records, input, &plots);
    let summary = summary::write_summary(run_dir, &text)?;
    Ok(ReportFiles { summary, plots })
}
