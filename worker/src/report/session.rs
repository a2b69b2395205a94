//! `session.json`: what the end of training knows that metrics.jsonl and evals.jsonl do not
//! (the last session's summary, the run's warnings), kept so that a later `launcher eval`
//! rewriting summary.md keeps them instead of dropping them.

use crate::error::{Result, WorkerError};
use crate::train::Summary;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SESSION_FILE: &str = "session.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub summary: Summary,
    pub warnings: Vec<String>,
}

/// Write `run_dir/session.json` atomically.
pub fn save(run_dir: &Path, record: &SessionRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| WorkerError::Data(format!("encoding {SESSION_FILE}: {e}")))?;
    crate::checkpoint::atomic::write_text_atomic(&run_dir.join(SESSION_FILE), "run session record", &text)
}

/// The record of the last training session, if the run folder has a readable one. An unreadable
/// file only costs the report two lines, so it is skipped (with a note), not an error.
pub fn load(run_dir: &Path) -> Option<SessionRecord> {
    let path = run_dir.join(SESSION_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("note: {} is not readable ({e}); summary.md is written without it", path.display());
            None
        }
    }
}
