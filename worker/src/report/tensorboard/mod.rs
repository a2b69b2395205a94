//! TensorBoard scalars for `tensorboard --logdir runs/`: rank 0 writes
//! `RUN/events.out.tfevents.<unix time>.<host>.<pid>` beside metrics.jsonl, one event per step
//! (the same values as metrics.jsonl) and one per evaluation (kNN, collapse monitor).
//!
//! - `record`: TFRecord framing and its CRC32C.
//! - `event`: the `Event` protobuf fields used, encoded and decoded by hand.
//!
//! A killed run leaves a readable file: each event is framed in memory and handed to the
//! kernel in one `write` call on an unbuffered file, so a kill loses at most the event being
//! written, and a torn last record is what TensorBoard's reader (and `read_events`) tolerates.
//! No fsync: surviving a power cut is the checkpoints' job, and an fsync per step would cost
//! more than the logging is worth.
//!
//! A resumed run starts a new file (TensorBoard reads every events file of a folder) after
//! `truncate_after` has dropped the older files' events past the resumed step, as metrics.jsonl
//! loses its rows, so redone steps appear once.

pub mod event;
pub mod record;
#[cfg(test)]
mod tests;

pub use event::Event;
pub use record::Tail;

use crate::error::{Result, WorkerError};
use crate::report::EvalRecord;
use crate::train::StepMetrics;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What every events file's name starts with (TensorBoard looks for "tfevents").
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// The scalars of one optimiser step, under the tags TensorBoard shows (grouped by prefix).
pub fn step_scalars(m: &StepMetrics) -> Vec<(String, f32)> {
    vec![
        ("train/loss".into(), m.loss),
        ("train/lr".into(), m.lr),
        ("train/momentum".into(), m.momentum),
        ("train/loss_scale".into(), m.loss_scale),
        ("train/epoch".into(), m.epoch as f32),
        ("perf/images_per_sec".into(), m.images_per_sec),
        // MiB: a float32 holds byte counts above 16 MiB only approximately, and MiB read better.
        ("perf/memory_mib".into(), (m.memory_bytes as f64 / (1u64 << 20) as f64) as f32),
    ]
}

/// The scalars of one evaluation: kNN top-1 (a fraction, as in evals.jsonl) and the collapse
/// monitor's embedding std and effective rank, those that were measured.
pub fn eval_scalars(r: &EvalRecord) -> Vec<(String, f32)> {
    let mut v = Vec::new();
    if let Some(k) = r.knn_top1 {
        v.push(("eval/knn_top1".into(), k));
    }
    if let Some(c) = &r.collapse {
        v.push(("collapse/embedding_std".into(), c.std));
        v.push(("collapse/effective_rank".into(), c.effective_rank));
    }
    v
}

/// Rank 0's events file of this session.
pub struct TbLog {
    path: PathBuf,
    file: File,
}

impl TbLog {
    /// A new events file in `run_dir`, starting with the `file_version` event.
    pub fn create(run_dir: &Path) -> Result<TbLog> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| WorkerError::io(format!("creating run folder {}", run_dir.display()), e))?;
        let secs = wall_time() as u64;
        let path = run_dir.join(format!("{FILE_PREFIX}{secs}.{}.{}", hostname(), std::process::id()));
        // create_new: two sessions never share a file (the pid makes the name unique anyway).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WorkerError::io(format!("creating {}", path.display()), e))?;
        let mut log = TbLog { path, file };
        let header = Event {
            wall_time: wall_time(),
            step: 0,
            file_version: Some(event::FILE_VERSION.into()),
            scalars: vec![],
        };
        log.write_event(&header)?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_step(&mut self, m: &StepMetrics) -> Result<()> {
        self.write_scalars(m.step, step_scalars(m))
    }

    pub fn write_eval(&mut self, r: &EvalRecord) -> Result<()> {
        let s = eval_scalars(r);
        if s.is_empty() {
            return Ok(());
        }
        self.write_scalars(r.step, s)
    }

    fn write_scalars(&mut self, step: u64, scalars: Vec<(String, f32)>) -> Result<()> {
        let e = Event { wall_time: wall_time(), step: step as i64, file_version: None, scalars };
        self.write_event(&e)
    }

    fn write_event(&mut self, e: &Event) -> Result<()> {
        // One write call per record (see the module doc); `File` has no buffer to flush.
        self.file
            .write_all(&record::frame(&e.encode()))
            .map_err(|err| WorkerError::io(format!("writing {}", self.path.display()), err))
    }
}

/// The events files of `run_dir`, oldest name first (a missing folder has none).
pub fn event_files(run_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(FILE_PREFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every event of one file, and whether its last record was torn.
pub fn read_events(path: &Path) -> Result<(Vec<Event>, Tail)> {
    let bytes = std::fs::read(path).map_err(|e| WorkerError::io(format!("reading {}", path.display()), e))?;
    let bad = |problem: String| WorkerError::BadFile { path: path.to_path_buf(), problem };
    let (records, tail) = record::unframe(&bytes).map_err(bad)?;
    let events = records.iter().map(|r| Event::decode(r).map_err(bad)).collect::<Result<Vec<_>>>()?;
    Ok((events, tail))
}

/// Drop the events after `step` from every events file of `run_dir` (a resume from `step`
/// redoes them), and a torn last record with them. Files are rewritten atomically; files
/// with nothing to drop are left alone.
pub fn truncate_after(run_dir: &Path, step: u64) -> Result<()> {
    for path in event_files(run_dir) {
        let (events, tail) = read_events(&path)?;
        let keep: Vec<&Event> =
            events.iter().filter(|e| e.file_version.is_some() || e.step as u64 <= step).collect();
        if keep.len() == events.len() && tail == Tail::Clean {
            continue;
        }
        let bytes: Vec<u8> = keep.iter().flat_map(|e| record::frame(&e.encode())).collect();
        crate::checkpoint::atomic::write_atomic(&path, "the TensorBoard events", |w| w.write_all(&bytes))?;
    }
    Ok(())
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// This machine's name for the file name (TensorFlow's writers put it there too), reduced to
/// characters that are safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}
