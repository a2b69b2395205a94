//! What a run trains on, recorded in `RUN/data.json`, so that `--resume RUN_DIR` (or running
//! the same command without `--data`) continues on the same tiles, bands and cache instead of
//! silently switching to the default synthetic tiles. Flags given on the resume override the
//! record, and the run says which it used.

use crate::checkpoint::atomic::write_text_atomic;
use crate::data::folder::DataArgs;
use crate::data::DataSpec;
use crate::error::{Result, WorkerError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RUN_DATA: &str = "data.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunData {
    /// `--data`: `synthetic...` or a folder (absolute, so a resume from elsewhere finds it).
    pub data: String,
    pub bands: Option<String>,
    pub strict_data: bool,
    pub cache_dir: Option<PathBuf>,
}

impl RunData {
    pub fn new(data: &str, flags: &DataArgs) -> RunData {
        let data = match DataSpec::parse(data) {
            Ok(DataSpec::Path(p)) => std::fs::canonicalize(&p).unwrap_or(p).display().to_string(),
            _ => data.to_string(),
        };
        let cache_dir =
            flags.cache_dir.as_ref().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()));
        RunData { data, bands: flags.bands.clone(), strict_data: flags.strict_data, cache_dir }
    }

    /// The record of `run_dir`, if it has one.
    pub fn load(run_dir: &Path) -> Result<Option<RunData>> {
        let path = run_dir.join(RUN_DATA);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| WorkerError::BadFile { path, problem: format!("not a run data record: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WorkerError::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| WorkerError::Numeric(format!("run data record to JSON: {e}")))?;
        write_text_atomic(&run_dir.join(RUN_DATA), "the run data record", &format!("{text}\n"))
    }
}

/// The data of a run that continues in `run_dir`: what the flags give, the rest from the run's
/// record. `data` is `--data` (None: not given). Returns the spec and what to tell the user.
pub fn resolve(run_dir: &Path, data: Option<&str>, flags: &mut DataArgs) -> Result<(String, Vec<String>)> {
    let saved = RunData::load(run_dir)?;
    let mut notes = Vec::new();
    let Some(saved) = saved else {
        let spec = data.unwrap_or("synthetic").to_string();
        if data.is_none() && crate::checkpoint::find_latest(run_dir).ok().flatten().is_some() {
            notes.push(format!(
                "warning: {} records no training data (a run of an older version): continuing on {spec}; pass \
                 --data (and --bands) if the run trained on a folder",
                run_dir.display()
            ));
        }
        return Ok((spec, notes));
    };
    let spec = match data {
        Some(d) => {
            if RunData::new(d, &DataArgs::default()).data != saved.data {
                notes.push(format!("note: --data {d} replaces the run's own data {}", saved.data));
            }
            d.to_string()
        }
        None => {
            notes.push(format!("continuing on the run's data {} (from {RUN_DATA})", saved.data));
            saved.data.clone()
        }
    };
    // Folder flags follow the data: the run's own when it is the run's data and they are not given.
    if spec == saved.data {
        let mut taken = Vec::new();
        if flags.bands.is_none() {
            if let Some(b) = &saved.bands {
                flags.bands = Some(b.clone());
                taken.push(format!("--bands {b}"));
            }
        }
        if flags.cache_dir.is_none() {
            if let Some(c) = &saved.cache_dir {
                flags.cache_dir = Some(c.clone());
                taken.push(format!("--cache-dir {}", c.display()));
            }
        }
        if !flags.strict_data && saved.strict_data {
            flags.strict_data = true;
            taken.push("--strict-data".into());
        }
        if !taken.is_empty() {
            notes.push(format!("with the run's {}", taken.join(" ")));
        }
    }
    Ok((spec, notes))
}
