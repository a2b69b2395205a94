//! Which checkpoint a run resumes from.
//!
//! `--resume` takes a run folder (its newest intact checkpoint) or one step folder (exactly
//! that step, continued in its run folder). Without an explicit step, a damaged newest
//! checkpoint (truncated or corrupt rank file, unreadable meta.json) must not block the run:
//! the newest intact one is used instead, with a warning naming what was wrong. The launcher
//! and every rank make the same choice from the same files (rank files are checked in full,
//! not only the rank's own), so the ranks of a group always resume from the same step.

use super::load::{complete_checkpoints, Checkpoint};
use super::save::{parse_step_dir, CHECKPOINTS, LATEST, META};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// What `--resume PATH` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeTarget {
    /// The run folder the run continues in (unless `--out` says otherwise).
    pub run_dir: PathBuf,
    /// A step folder to resume exactly, when one was named.
    pub step_dir: Option<PathBuf>,
}

impl ResumeTarget {
    /// A run folder, `RUN/last`, `RUN/checkpoints`, a step folder or a file inside one.
    pub fn parse(path: &Path) -> ResumeTarget {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let step =
            if path.is_file() { path.parent().map(Path::to_path_buf) } else { Some(path.to_path_buf()) }
                .filter(|d| parse_step_dir(&name(d)).is_some() || d.join(META).is_file());
        if let Some(step) = step {
            // RUN/checkpoints/step-N continues in RUN; a step folder kept elsewhere, in its parent.
            let parent = step.parent().map(Path::to_path_buf).unwrap_or_default();
            let run_dir = match parent.parent() {
                Some(run) if name(&parent) == CHECKPOINTS => run.to_path_buf(),
                _ => parent,
            };
            return ResumeTarget { run_dir, step_dir: Some(step) };
        }
        let n = name(path);
        let run_dir = match path.parent() {
            Some(run) if n == CHECKPOINTS || ((n == "last" || n == "latest") && !path.exists()) => {
                run.to_path_buf()
            }
            _ => path.to_path_buf(),
        };
        ResumeTarget { run_dir, step_dir: None }
    }
}

impl Checkpoint {
    /// Every rank file present with the length and checksum meta.json gives it.
    pub fn verify(&self) -> Result<()> {
        for r in 0..self.meta.world {
            self.open_rank(r)?;
        }
        Ok(())
    }
}

/// The checkpoint to resume and the warnings about newer ones that were skipped as damaged.
#[derive(Debug, Default)]
pub struct Pick {
    pub checkpoint: Option<Checkpoint>,
    pub warnings: Vec<String>,
}

/// The newest intact checkpoint of `run_dir` (the one `checkpoints/latest` names first, then
/// step folders newest first). Damaged ones are skipped with a warning; when every checkpoint is
/// damaged, the error of the newest is returned.
pub fn newest_intact(run_dir: &Path) -> Result<Pick> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(name) = std::fs::read_to_string(run_dir.join(CHECKPOINTS).join(LATEST)) {
        if parse_step_dir(name.trim()).is_some() {
            let d = run_dir.join(CHECKPOINTS).join(name.trim());
            if d.join(META).is_file() {
                dirs.push(d);
            }
        }
    }
    for (_, d) in complete_checkpoints(run_dir) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let mut pick = Pick::default();
    let mut first_error = None;
    for d in dirs {
        match Checkpoint::open(&d).and_then(|ck| ck.verify().map(|()| ck)) {
            Ok(ck) => {
                pick.checkpoint = Some(ck);
                return Ok(pick);
            }
            Err(e) => {
                pick.warnings.push(format!(
                    "checkpoint {} is damaged and was skipped ({e}); trying an older one",
                    d.display()
                ));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(pick),
    }
}

/// The checkpoint a run in `out` starts from: exactly `step_dir` when one was named, else the
/// newest intact one in `out`, else in `resume_run` (a `--resume` run folder other than `out`).
pub fn pick(out: &Path, step_dir: Option<&Path>, resume_run: Option<&Path>) -> Result<Pick> {
    if let Some(step) = step_dir {
        let ck = Checkpoint::open(step)?;
        ck.verify()?;
        return Ok(Pick { checkpoint: Some(ck), warnings: Vec::new() });
    }
    let p = newest_intact(out)?;
    if p.checkpoint.is_some() {
        return Ok(p);
    }
    let Some(run) = resume_run else { return Ok(p) };
    let q = if run == out {
        p
    } else {
        let mut q = newest_intact(run)?;
        q.warnings.splice(0..0, p.warnings);
        q
    };
    if q.checkpoint.is_none() {
        let problem = if run.join(CHECKPOINTS).is_dir() {
            "--resume: the run has no complete checkpoint yet"
        } else {
            "--resume: holds no moco-rs checkpoint (expected a run folder with checkpoints/ or a step folder)"
        };
        return Err(crate::error::WorkerError::BadFile { path: run.to_path_buf(), problem: problem.into() });
    }
    Ok(q)
}
