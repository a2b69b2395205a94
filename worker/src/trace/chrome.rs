//! The Chrome trace-event format (the JSON array form), as chrome://tracing and Perfetto read
//! it: one complete ("X") event per span interval, times in microseconds, pid = rank,
//! tid = thread, plus metadata events naming the process and its threads.

use crate::error::{Result, WorkerError};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// One span interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub ts_us: f64,
    pub dur_us: f64,
    pub tid: u64,
}

/// Everything a trace file holds.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pid: usize,
    /// (tid, thread name)
    pub threads: Vec<(u64, String)>,
    pub events: Vec<Event>,
}

/// Microseconds with 0.1 µs resolution (enough, and keeps the file small).
fn us(t: f64) -> f64 {
    (t * 10.0).round() / 10.0
}

pub fn to_json(s: &Snapshot) -> Vec<Value> {
    let mut out = Vec::with_capacity(s.events.len() + s.threads.len() + 1);
    out.push(json!({"name": "process_name", "ph": "M", "pid": s.pid, "tid": 0, "args": {"name": format!("rank {}", s.pid)}}));
    for (tid, name) in &s.threads {
        out.push(json!({"name": "thread_name", "ph": "M", "pid": s.pid, "tid": tid, "args": {"name": name}}));
    }
    for e in &s.events {
        out.push(json!({"name": e.name, "ph": "X", "ts": us(e.ts_us), "dur": us(e.dur_us), "pid": s.pid, "tid": e.tid}));
    }
    out
}

/// Write the trace to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a half-written trace where a reader expects a whole one.
pub fn write_atomic(path: &Path, s: &Snapshot) -> Result<()> {
    let io = |what: &str, e: std::io::Error| WorkerError::io(format!("{what} {}", path.display()), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut f, &to_json(s)).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing the trace", e));
    }
    Ok(())
}
