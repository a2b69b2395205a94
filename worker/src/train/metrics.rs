//! Per-step metrics: one JSON object per line in RUN_DIR/metrics.jsonl.

use crate::error::{Result, WorkerError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What one optimiser step reports (averaged over micro-batches and ranks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimiser step, 1-based.
    pub step: u64,
    /// Fractional epoch at the end of the step.
    pub epoch: f64,
    pub loss: f32,
    pub lr: f32,
    pub momentum: f32,
    pub loss_scale: f32,
    /// False when the scaler skipped the step (inf/NaN gradients).
    pub applied: bool,
    /// Images per second over all ranks (each image counted once, both views included).
    pub images_per_sec: f32,
    /// Seconds since training started.
    pub elapsed_s: f64,
    /// Peak memory of this rank in bytes (RSS on the CPU).
    pub memory_bytes: u64,
}

/// Appends metrics lines; each line is flushed so a crash loses at most the line being written.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| WorkerError::io(format!("creating run folder {}", dir.display()), e))?;
        let path = dir.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| WorkerError::io(format!("opening {}", path.display()), e))?;
        Ok(MetricsLog { path, out: BufWriter::new(file) })
    }

    pub fn write(&mut self, m: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| WorkerError::Numeric(format!("metrics: {e}")))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| WorkerError::io(format!("writing {}", self.path.display()), e))
    }
}

/// Drop the rows of `file` (JSON lines with a `step`) after `step`: a run resumed from an
/// older checkpoint redoes those steps, and their rows would otherwise appear twice (plots and
/// summaries read the file as one history). A torn last line of a killed run goes too.
/// Rewritten atomically; a missing file is fine.
pub fn truncate_after(file: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WorkerError::io(format!("reading {}", file.display()), e)),
    };
    let keep = |l: &&str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
            .is_some_and(|s| s <= step)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::checkpoint::atomic::write_text_atomic(file, "the metrics history", &out)
}

/// Peak resident set size of this process in bytes (Linux; 0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
