//! What the report reads: `metrics.jsonl` (one `StepMetrics` per optimiser step, written by the
//! training loop) and `evals.jsonl` (one `EvalRecord` per evaluation: kNN accuracy with
//! `--eval-data`, the collapse monitor's numbers), both in the run folder.

use crate::error::{Result, WorkerError};
use crate::eval::CollapseStats;
use crate::train::StepMetrics;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const EVALS_FILE: &str = "evals.jsonl";

/// One evaluation during training (per epoch, or every N epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: f64,
    /// kNN top-1 on `--eval-data` (absent when no labelled data was given).
    pub knn_top1: Option<f32>,
    /// Collapse monitor over the queue's keys (absent without a queue).
    pub collapse: Option<CollapseStats>,
    /// The collapse warning shown at the time, if any.
    pub warning: Option<String>,
}

/// Appends `EvalRecord` lines, flushed one by one (a crash loses at most the current line).
pub struct EvalLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EvalLog {
    pub fn open(run_dir: &Path) -> Result<EvalLog> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| WorkerError::io(format!("creating run folder {}", run_dir.display()), e))?;
        let path = run_dir.join(EVALS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| WorkerError::io(format!("opening {}", path.display()), e))?;
        Ok(EvalLog { path, out: BufWriter::new(file) })
    }

    pub fn write(&mut self, r: &EvalRecord) -> Result<()> {
        let line = serde_json::to_string(r).map_err(|e| WorkerError::Numeric(format!("eval record: {e}")))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| WorkerError::io(format!("writing {}", self.path.display()), e))
    }
}

/// Parse a JSON-lines file; a missing file is empty. A torn last line (the writer was killed
/// mid-line) is skipped; any other bad line is an error naming it.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WorkerError::io(format!("reading {}", path.display()), e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(WorkerError::BadFile {
                    path: path.to_path_buf(),
                    problem: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// Everything the report draws from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecords {
    pub steps: Vec<StepMetrics>,
    pub evals: Vec<EvalRecord>,
}

impl RunRecords {
    /// Read both files of `run_dir`. A resumed run appends to metrics.jsonl, so a step can
    /// appear twice (logged, then redone after the restart): the later line wins.
    pub fn read(run_dir: &Path) -> Result<RunRecords> {
        let mut steps: Vec<StepMetrics> = read_jsonl(&run_dir.join(METRICS_FILE))?;
        let mut evals: Vec<EvalRecord> = read_jsonl(&run_dir.join(EVALS_FILE))?;
        steps = dedup_by_step(steps, |m| m.step);
        evals = dedup_by_step(evals, |e| e.step);
        Ok(RunRecords { steps, evals })
    }
}

fn dedup_by_step<T>(v: Vec<T>, step: impl Fn(&T) -> u64) -> Vec<T> {
    let mut map = std::collections::BTreeMap::new();
    for x in v {
        map.insert(step(&x), x);
    }
    map.into_values().collect()
}
