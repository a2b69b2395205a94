//! Saving a checkpoint from every rank of a group, crash-safe:
//!
//! 1. rank 0 makes `checkpoints/step-NNNNNN/` and removes a `meta.json` left there by an older
//!    history (so the folder reads as incomplete until this save commits); all ranks wait;
//! 2. every rank writes `rank-R.safetensors` atomically (temp file, fsync, rename, fsync folder);
//! 3. the ranks exchange (ok, length, checksum); if every rank succeeded, rank 0 writes
//!    `meta.json` atomically (the commit point), then the `checkpoints/latest` pointer, then
//!    removes stale temporary files and incomplete folders and prunes to the last K;
//! 4. rank 0 tells everyone whether the commit happened.
//!
//! Any failure before the commit (ENOSPC, a kill, a dead rank) leaves the previous checkpoint
//! and the `latest` pointer as they were; the next save cleans the debris.

use super::atomic::{clean_temps, io_error, sync_dir, write_atomic, write_text_atomic};
use super::meta::{BandStatsJson, CheckpointMeta, RankFile, TopologySummary, FORMAT, LAYOUT, VERSION};
use super::snapshot::Snapshot;
use super::tensors::write_safetensors;
use crate::data::{BandStats, SamplerPos};
use crate::error::{Result, WorkerError};
use crate::moco::comm::Comm;
use crate::moco::Moco;
use moco_kernels::Backend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Folder of all checkpoints inside a run folder.
pub const CHECKPOINTS: &str = "checkpoints";
/// Pointer file (inside `checkpoints/`) naming the newest committed step folder.
pub const LATEST: &str = "latest";
pub const META: &str = "meta.json";

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// The step number of a folder named by `step_dir_name`.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    name.strip_prefix("step-")
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty())?
        .parse()
        .ok()
}

pub fn rank_file_name(rank: usize) -> String {
    format!("rank-{rank}.safetensors")
}

/// What the trainer knows besides the `Moco` state.
#[derive(Debug, Clone)]
pub struct SaveRequest<'a> {
    pub run_dir: &'a Path,
    pub run_id: &'a str,
    /// Fractional epoch at the current step.
    pub epoch: f64,
    /// The next micro-batch the loader would hand out (`Loader::position`).
    pub data_position: SamplerPos,
    /// Normalisation statistics of the training data (embed/eval reuse them).
    pub band_stats: Option<&'a BandStats>,
    /// Complete checkpoints to keep (the newest ones); 0 keeps all.
    pub keep_last: usize,
}

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub dir: PathBuf,
    pub step: u64,
    /// Older checkpoint folders removed by the keep-last rule.
    pub pruned: Vec<PathBuf>,
}

/// When to save: every `every_epochs` epochs (0 = only at the end and on signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_epochs: u64,
    pub keep_last: usize,
}

impl CheckpointPolicy {
    /// Save after optimiser step `step` (1-based count of steps done)? True at every
    /// `every_epochs`-th epoch boundary and at `end_step`. Signals are the caller's to handle.
    pub fn due(&self, step: u64, steps_per_epoch: u64, end_step: u64) -> bool {
        if step == end_step {
            return true;
        }
        let every = self.every_epochs.saturating_mul(steps_per_epoch.max(1));
        every > 0 && step > 0 && step.is_multiple_of(every)
    }
}

/// Save `moco` (every rank calls this at the same step with the same request) and return the
/// committed checkpoint. `comm` must be the group's collective (`Solo` for one rank).
pub fn save<B: Backend>(moco: &Moco<B>, comm: &dyn Comm, req: &SaveRequest<'_>) -> Result<Saved> {
    let (rank, world) = (comm.rank(), comm.world());
    let root = req.run_dir.join(CHECKPOINTS);
    let dir = root.join(step_dir_name(moco.steps));

    // 1. Prepare the folder (rank 0), then everyone waits for it.
    let prepared = if rank == 0 { prepare(&root, &dir) } else { Ok(()) };
    let mut flag = [if prepared.is_ok() { 0.0f32 } else { 1.0 }];
    comm.all_reduce_sum(&mut flag)?;
    prepared?;
    if flag[0] > 0.0 {
        return Err(group_error(&dir, "rank 0 could not create the checkpoint folder"));
    }

    // 2. This rank's file.
    let written = Snapshot::of(moco).and_then(|snap| write_rank_file(moco, &snap, &dir, rank, world));

    // 3. Everyone learns everyone's outcome.
    let mine = match &written {
        Ok(w) => [1i64, w.bytes as i64, w.xxh3 as i64],
        Err(_) => [0, 0, 0],
    };
    let mut all = vec![0i64; 3 * world];
    comm.all_gather_i64(&mine, &mut all)?;
    written?;
    if let Some(r) = (0..world).find(|&r| all[3 * r] != 1) {
        return Err(group_error(&dir, &format!("rank {r} could not write its file (see its error)")));
    }
    let files: Vec<RankFile> = (0..world)
        .map(|r| RankFile {
            rank: r,
            file: rank_file_name(r),
            bytes: all[3 * r + 1] as u64,
            xxh3: format!("{:016x}", all[3 * r + 2] as u64),
        })
        .collect();

    // 4. Rank 0 commits; everyone learns whether it did.
    let committed = if rank == 0 { commit(moco, req, &root, &dir, files) } else { Ok(Vec::new()) };
    let mut ok = [if rank == 0 && committed.is_ok() { 1.0f32 } else { 0.0 }];
    comm.all_reduce_sum(&mut ok)?;
    let pruned = committed?;
    if ok[0] < 1.0 {
        return Err(group_error(&dir, "rank 0 could not commit the checkpoint (see its error)"));
    }
    Ok(Saved { dir, step: moco.steps, pruned })
}

fn group_error(dir: &Path, why: &str) -> WorkerError {
    WorkerError::BadFile {
        path: dir.to_path_buf(),
        problem: format!("checkpoint not saved: {why}; the previous checkpoint is untouched"),
    }
}

fn prepare(root: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating checkpoint folder", dir, e))?;
    let meta = dir.join(META);
    if meta.exists() {
        // A checkpoint of this step from an abandoned history (the run resumed from an older
        // one): un-commit it before its files are replaced.
        std::fs::remove_file(&meta).map_err(|e| io_error("removing stale", &meta, e))?;
        sync_dir(dir)?;
    }
    sync_dir(root)
}

fn write_rank_file<B: Backend>(
    moco: &Moco<B>,
    snap: &Snapshot,
    dir: &Path,
    rank: usize,
    world: usize,
) -> Result<super::tensors::Written> {
    let t = &moco.topo;
    let opt_steps = [snap.opt_steps as i64];
    let ptr = [snap.queue.as_ref().map(|q| q.ptr as i64).unwrap_or(0)];
    let mut entries = if rank == 0 { snap.shared_entries(t, &opt_steps) } else { Vec::new() };
    entries.extend(snap.local_entries(t, &ptr));
    // Never commit a diverged state: resume, eval and export would take it for a good one.
    for e in &entries {
        if let super::tensors::Data::F32(d) = e.data {
            let bad = d.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                return Err(WorkerError::Numeric(format!(
                    "checkpoint of step {} not written: tensor {} holds {bad} non-finite value(s) (NaN/inf); \
                     the run diverged, and the previous checkpoint is kept as the newest",
                    moco.steps, e.name
                )));
            }
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("version".to_string(), VERSION.to_string());
    meta.insert("rank".to_string(), rank.to_string());
    meta.insert("world".to_string(), world.to_string());
    meta.insert("step".to_string(), moco.steps.to_string());
    meta.insert("layout".to_string(), LAYOUT.to_string());
    let path = dir.join(rank_file_name(rank));
    write_atomic(&path, "checkpoint file", |w| write_safetensors(w, &entries, &meta))
}

/// Rank 0, after every rank wrote its file: meta.json, the pointer, cleaning and pruning.
fn commit<B: Backend>(
    moco: &Moco<B>,
    req: &SaveRequest<'_>,
    root: &Path,
    dir: &Path,
    files: Vec<RankFile>,
) -> Result<Vec<PathBuf>> {
    let meta = CheckpointMeta {
        format: FORMAT.into(),
        version: VERSION,
        run_id: req.run_id.into(),
        world: files.len(),
        step: moco.steps,
        epoch: req.epoch,
        micro_total: moco.micro_total,
        data_position: req.data_position,
        scaler: moco.scaler,
        config: moco.cfg.clone(),
        topology: TopologySummary::of(&moco.topo),
        band_stats: req.band_stats.map(BandStatsJson::from),
        files,
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        writer: format!("moco-rs {}", env!("CARGO_PKG_VERSION")),
    };
    write_text_atomic(&dir.join(META), "checkpoint description", &meta.to_json())?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    write_text_atomic(&root.join(LATEST), "checkpoint pointer", &format!("{name}\n"))?;
    Ok(tidy(root, moco.steps, req.keep_last))
}

/// Remove temporary files, folders without a `meta.json` (saves that never committed) other
/// than `current`'s, and complete checkpoints older than the `keep_last` newest at or below
/// `current` (newer ones belong to an abandoned history and are left for the user). Best
/// effort: a folder that cannot be removed is skipped. Returns the removed folders.
pub fn tidy(root: &Path, current: u64, keep_last: usize) -> Vec<PathBuf> {
    clean_temps(root);
    let mut complete = Vec::new();
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(step) = parse_step_dir(&name) else { continue };
        let path = e.path();
        clean_temps(&path);
        if path.join(META).is_file() {
            complete.push((step, path));
        } else if step != current && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    complete.retain(|(s, _)| *s <= current);
    complete.sort_by_key(|b| std::cmp::Reverse(b.0));
    if keep_last > 0 {
        for (_, path) in complete.into_iter().skip(keep_last) {
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    let _ = sync_dir(root);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_saves_on_epoch_multiples_and_at_the_end() {
        let p = CheckpointPolicy { every_epochs: 2, keep_last: 3 };
        let due: Vec<u64> = (1..=25).filter(|&s| p.due(s, 5, 25)).collect();
        assert_eq!(due, vec![10, 20, 25]);
        let never = CheckpointPolicy { every_epochs: 0, keep_last: 3 };
        assert_eq!((1..=25).filter(|&s| never.due(s, 5, 25)).count(), 1);
    }

    #[test]
    fn step_folder_names_round_trip() {
        assert_eq!(step_dir_name(123), "step-000123");
        assert_eq!(parse_step_dir("step-000123"), Some(123));
        assert_eq!(parse_step_dir("step-1234567"), Some(1234567));
        assert_eq!(parse_step_dir("step-"), None);
        assert_eq!(parse_step_dir(".step-000123.tmp-1-0"), None);
        assert_eq!(parse_step_dir("step-12a"), None);
    }
}
