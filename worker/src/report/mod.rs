//! The run folder's report: plots (PNG) and summary.md, from metrics.jsonl and evals.jsonl.
//!
//! - `records`: reading metrics.jsonl (`StepMetrics`), writing and reading evals.jsonl
//!   (`EvalRecord`: kNN accuracy during training, the collapse monitor).
//! - `plots`: loss, lr and momentum, loss scale, throughput, kNN, collapse (plotters, bitmap).
//! - `font`: the bundled font plotters draws text with (no system fonts needed).
//! - `summary`: summary.md.
//! - `tensorboard`: TensorBoard events files (scalars per step and per evaluation).
//!
//! Entry point for the end of training (rank 0) and for `launcher eval`: `write_report`.

pub mod font;
pub mod plots;
pub mod records;
pub mod session;
pub mod summary;
pub mod tensorboard;

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
/// At the end of training (`input.summary` given) the session's summary and warnings are kept
/// in session.json; a later call without them (`launcher eval`) takes them from there.
pub fn write_report(run_dir: &Path, input: &ReportInput<'_>) -> Result<ReportFiles> {
    let records = RunRecords::read(run_dir)?;
    let plots = plots::write_plots(run_dir, &records)?;
    let saved;
    let mut input = input.clone();
    match input.summary {
        Some(sm) => session::save(
            run_dir,
            &session::SessionRecord { summary: sm.clone(), warnings: input.warnings.clone() },
        )?,
        None => {
            saved = session::load(run_dir);
            if let Some(rec) = &saved {
                input.summary = Some(&rec.summary);
                if input.warnings.is_empty() {
                    input.warnings = rec.warnings.clone();
                }
            }
        }
    }
    let text = summary::render(run_dir, &records, &input, &plots);
    let summary = summary::write_summary(run_dir, &text)?;
    Ok(ReportFiles { summary, plots })
}
