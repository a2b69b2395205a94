//! `summary.md`: the run at a glance, written at the end of training (and by `launcher eval`
//! when it is given the run): run id, config, steps, loss, throughput, kNN numbers, the
//! collapse monitor, warnings, and the plots.

use super::records::RunRecords;
use crate::error::{Result, WorkerError};
use crate::eval::EvalReport;
use crate::train::Summary;
use moco_proto::TrainConfig;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const SUMMARY_FILE: &str = "summary.md";

/// What the trainer knows at the end that the records do not hold.
#[derive(Debug, Clone, Default)]
pub struct ReportInput<'a> {
    pub run_id: &'a str,
    pub config: Option<&'a TrainConfig>,
    /// Ranks of the run.
    pub world: usize,
    /// The training loop's summary of this (last) session.
    pub summary: Option<&'a Summary>,
    /// `launcher eval`'s comparison with a random network, when it was run.
    pub eval: Option<&'a EvalReport>,
    /// Warnings of the run (config warnings, --init-from, collapse).
    pub warnings: Vec<String>,
    /// Newest checkpoint folder, if any.
    pub checkpoint: Option<PathBuf>,
}

fn rel(run_dir: &Path, p: &Path) -> String {
    p.strip_prefix(run_dir).unwrap_or(p).display().to_string()
}

/// Render summary.md from the records and `input`; `plots` are linked from it.
pub fn render(run_dir: &Path, r: &RunRecords, input: &ReportInput<'_>, plots: &[PathBuf]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# moco-rs run `{}`\n", input.run_id);
    if let (Some(first), Some(last)) = (r.steps.first(), r.steps.last()) {
        let n = r.steps.len();
        let tail = &r.steps[n - (n / 10).max(1)..];
        let tail_loss = tail.iter().map(|m| m.loss as f64).sum::<f64>() / tail.len() as f64;
        let skipped = r.steps.iter().filter(|m| !m.applied).count();
        let ips: Vec<f64> = r.steps.iter().skip(1).map(|m| m.images_per_sec as f64).collect();
        let mean_ips = if ips.is_empty() {
            last.images_per_sec as f64
        } else {
            ips.iter().sum::<f64>() / ips.len() as f64
        };
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| steps | {} (epoch {:.2}) |", last.step, last.epoch);
        let _ = writeln!(
            s,
            "| loss | {:.4} at step {} -> {:.4} (mean of the last 10%: {:.4}) |",
            first.loss, first.step, last.loss, tail_loss
        );
        let _ = writeln!(s, "| throughput | {mean_ips:.1} images/s (mean over steps) |");
        let _ = writeln!(
            s,
            "| final lr / momentum / loss scale | {:.3e} / {:.4} / {} |",
            last.lr, last.momentum, last.loss_scale
        );
        let _ = writeln!(s, "| skipped steps (inf/NaN) | {skipped} |");
        let _ = writeln!(
            s,
            "| peak memory (rank 0) | {:.2} GiB |",
            last.memory_bytes as f64 / (1u64 << 30) as f64
        );
        if input.world > 0 {
            let _ = writeln!(s, "| ranks | {} |", input.world);
        }
        if let Some(sm) = input.summary {
            let _ = writeln!(
                s,
                "| this session | {} steps in {:.1} s{} |",
                sm.steps,
                sm.elapsed_s,
                if sm.interrupted { ", stopped early on request" } else { "" }
            );
        }
        if let Some(c) = &input.checkpoint {
            let _ = writeln!(s, "| last checkpoint | `{}` |", rel(run_dir, c));
        }
        s.push('\n');
    } else {
        let _ = writeln!(s, "No training steps recorded (metrics.jsonl is empty or missing).\n");
    }
    if let Some(e) = input.eval {
        let _ = writeln!(s, "## Evaluation\n\n{}", e.table());
    }
    let knn: Vec<_> = r.evals.iter().filter_map(|e| e.knn_top1.map(|a| (e.epoch, a))).collect();
    if let Some((epoch, acc)) = knn.last() {
        let best = knn.iter().map(|k| k.1).fold(0.0f32, f32::max);
        let _ = writeln!(
            s,
            "kNN top-1 during training: {:.1}% at epoch {epoch:.1} (best {:.1}%).\n",
            100.0 * acc,
            100.0 * best
        );
    }
    let col: Vec<_> = r.evals.iter().filter_map(|e| e.collapse.map(|c| (e.epoch, c))).collect();
    if !col.is_empty() {
        let _ =
            writeln!(s, "## Collapse monitor\n\n| epoch | embedding std | effective rank |\n|---|---|---|");
        let every = (col.len() / 12).max(1);
        for (i, (epoch, c)) in col.iter().enumerate() {
            if i % every == 0 || i + 1 == col.len() {
                let _ = writeln!(
                    s,
                    "| {epoch:.1} | {:.4} | {:.1} of {} |",
                    c.std,
                    c.effective_rank,
                    c.dim.min(c.samples)
                );
            }
        }
        let _ = writeln!(
            s,
            "\nHealthy: std near 1/sqrt(d) = {:.4}, effective rank a large fraction of d.\n",
            1.0 / (col[0].1.dim.max(1) as f32).sqrt()
        );
    }
    let mut warnings = input.warnings.clone();
    warnings.extend(r.evals.iter().filter_map(|e| e.warning.clone()));
    if !warnings.is_empty() {
        let _ = writeln!(s, "## Warnings\n");
        for w in &warnings {
            let _ = writeln!(s, "- {w}");
        }
        s.push('\n');
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for p in plots {
            let name = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = writeln!(s, "![{name}]({})", rel(run_dir, p));
        }
        s.push('\n');
    }
    if let Some(cfg) = input.config {
        let json = serde_json::to_string_pretty(cfg).unwrap_or_default();
        let _ = writeln!(s, "## Config\n\n```json\n{json}\n```");
    }
    s
}

/// Write summary.md (atomically) into `run_dir`.
pub fn write_summary(run_dir: &Path, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir)
        .map_err(|e| WorkerError::io(format!("creating {}", run_dir.display()), e))?;
    let path = run_dir.join(SUMMARY_FILE);
    crate::checkpoint::atomic::write_text_atomic(&path, "run summary", text)?;
    Ok(path)
}
