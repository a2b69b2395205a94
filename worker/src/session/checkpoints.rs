//! The session's side of checkpoints: where a run starts (fresh, resumed, or from another
//! run's weights) and when it saves (every N epochs, at the end, after a stop request).

use super::args::RunArgs;
use crate::checkpoint::{self, Checkpoint, CheckpointPolicy, ResumeTarget, SaveRequest};
use crate::data::{BandStats, SamplerPos};
use crate::error::{Result, WorkerError};
use crate::moco::comm::Comm;
use crate::moco::Moco;
use moco_kernels::Backend;
use std::path::{Path, PathBuf};

/// How this session starts.
#[derive(Debug, Clone)]
pub struct Start {
    /// The loader's start position.
    pub data_position: SamplerPos,
    /// Step the run continues from (0 at a fresh start).
    pub step: u64,
    /// What to tell the user (rank 0 prints them; the report lists them).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Marker file rank 0 writes into the run folder so the other ranks can check they see it.
const GROUP_MARK: &str = ".moco-group";

/// Check that every rank sees the same run folder: checkpoints put every rank's file into one
/// folder, and automatic resume reads it on every rank, so a rank writing elsewhere (a different
/// `--out`, or the same path on a machine that does not share the file system) would fail its
/// first save hours in, or resume while the others start afresh. Every rank calls this at start.
pub fn check_shared_run_folder(out: &Path, comm: &dyn Comm, nonce: i64) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world());
    if world == 1 {
        return Ok(());
    }
    let mark = out.join(GROUP_MARK);
    // 1. Rank 0 writes the marker; the all-reduce is the barrier after which the others read.
    let wrote = if rank == 0 {
        std::fs::create_dir_all(out)
            .map_err(|e| WorkerError::io(format!("creating the run folder {}", out.display()), e))
            .and_then(|()| {
                checkpoint::atomic::write_text_atomic(&mark, "the run-folder marker", &format!("{nonce}\n"))
            })
    } else {
        Ok(())
    };
    let mut failed = [if wrote.is_ok() { 0.0f32 } else { 1.0 }];
    comm.all_reduce_sum(&mut failed)?;
    wrote?;
    if failed[0] > 0.0 {
        return Err(WorkerError::BadFile {
            path: out.to_path_buf(),
            problem: "rank 0 could not write into its run folder (see its error)".into(),
        });
    }
    // 2. Everyone reports what it reads at its own --out.
    let seen = std::fs::read_to_string(&mark).ok().and_then(|t| t.trim().parse::<i64>().ok());
    // Distinct stand-ins for "could not read it", so two unreadable markers never match.
    let mine = [match (seen, rank) {
        (Some(v), 0) if v == nonce => v,
        (_, 0) => i64::MIN,
        (Some(v), _) => v,
        (None, _) => i64::MIN + 1,
    }];
    let mut all = vec![0i64; world];
    comm.all_gather_i64(&mine, &mut all)?;
    let lost: Vec<String> = (1..world).filter(|&r| all[r] != all[0]).map(|r| r.to_string()).collect();
    if lost.is_empty() {
        return Ok(());
    }
    let problem = if rank == 0 {
        format!(
            "rank(s) {} do not see this run folder: checkpoints and resume need one folder that every rank \
             reads and writes. Give every rank the same --out on a file system they all share",
            lost.join(", ")
        )
    } else if all[rank] != all[0] {
        "this rank does not see rank 0's run folder here (a different --out, or a path that is not on a \
         file system shared with rank 0): checkpoints and resume need one folder that every rank reads \
         and writes. Give every rank the same --out on a shared file system"
            .to_string()
    } else {
        format!("rank(s) {} do not see rank 0's run folder (see their errors)", lost.join(", "))
    };
    Err(WorkerError::BadFile { path: out.to_path_buf(), problem })
}

/// Restore `moco` as the flags say: `--resume RUN/checkpoints/step-N` resumes exactly that
/// step (not after a restart: the group then continues from its own newest checkpoint); else
/// the newest intact checkpoint already in the run folder `out` (automatic resume, also how
/// `--max-restarts` continues), then the one of `--resume RUN_DIR`, then `--init-from
/// CHECKPOINT` (weights only), else a fresh start. A damaged newest checkpoint is skipped with
/// a warning.
pub fn start<B: Backend>(
    run: &RunArgs,
    out: &Path,
    moco: &mut Moco<B>,
    (rank, world): (usize, usize),
    restarted: bool,
) -> Result<Start> {
    let target = run.resume.as_deref().map(ResumeTarget::parse);
    let step_dir = target.as_ref().and_then(|t| t.step_dir.as_deref()).filter(|_| !restarted);
    let picked = checkpoint::pick(out, step_dir, target.as_ref().map(|t| t.run_dir.as_path()))?;
    if let Some(ck) = picked.checkpoint {
        let from_out = ck.dir.starts_with(out);
        let r = checkpoint::resume(moco, &ck, rank, world)?;
        let mut notes =
            vec![format!("resuming from {} (step {}, epoch {:.2})", ck.dir.display(), r.step, r.epoch)];
        if let (Some(init), true) = (&run.init_from, from_out) {
            notes.push(format!(
                "--init-from {} is ignored: the run folder {} already has a checkpoint, and the run continues \
                 from it (give a new --out to start another run from those weights)",
                init.display(),
                out.display()
            ));
        }
        let mut warnings = picked.warnings;
        warnings.extend(r.warnings);
        if step_dir.is_some() && from_out && rank == 0 {
            // The named step is the run's head now: a restart of this group, or the next plain
            // resume, continues from it (or from what this session saves), not from the newer
            // checkpoints of the abandoned history, which stay on disk.
            let name = ck.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let pointer = out.join(checkpoint::CHECKPOINTS).join(checkpoint::LATEST);
            checkpoint::atomic::write_text_atomic(&pointer, "checkpoint pointer", &format!("{name}\n"))?;
        }
        return Ok(Start { data_position: r.data_position, step: r.step, notes, warnings });
    }
    if let Some(path) = &run.init_from {
        let ck = Checkpoint::resolve(path)?;
        let report = checkpoint::init_from(moco, &ck)?;
        return Ok(Start {
            data_position: SamplerPos::default(),
            step: 0,
            notes: Vec::new(),
            warnings: vec![report.warning],
        });
    }
    Ok(Start { data_position: SamplerPos::default(), step: 0, notes: Vec::new(), warnings: Vec::new() })
}

/// Saves on the policy's steps, and once more at the end unless the last step was saved.
pub struct Saver<'a> {
    pub policy: CheckpointPolicy,
    pub run_dir: &'a Path,
    pub run_id: &'a str,
    pub band_stats: &'a BandStats,
    pub steps_per_epoch: u64,
    pub end_step: u64,
    /// Step of the newest checkpoint this session wrote or started from.
    pub last_saved: Option<u64>,
    /// Folder of the newest checkpoint this session wrote.
    pub last_dir: Option<PathBuf>,
}

impl Saver<'_> {
    /// Save after the current step if the policy says so (every rank calls this at every step).
    pub fn after_step<B: Backend>(
        &mut self,
        moco: &Moco<B>,
        comm: &dyn Comm,
        pos: SamplerPos,
        epoch: f64,
    ) -> Result<()> {
        if self.policy.due(moco.steps, self.steps_per_epoch, self.end_step) {
            self.save(moco, comm, pos, epoch)?;
        }
        Ok(())
    }

    /// Save unless the current step is already saved (the end of training, a stop request).
    pub fn finish<B: Backend>(
        &mut self,
        moco: &Moco<B>,
        comm: &dyn Comm,
        pos: SamplerPos,
        epoch: f64,
    ) -> Result<()> {
        if self.last_saved != Some(moco.steps) && moco.steps > 0 {
            self.save(moco, comm, pos, epoch)?;
        }
        Ok(())
    }

    fn save<B: Backend>(
        &mut self,
        moco: &Moco<B>,
        comm: &dyn Comm,
        pos: SamplerPos,
        epoch: f64,
    ) -> Result<()> {
        let _span = tracing::info_span!("checkpoint").entered();
        let saved = checkpoint::save(
            moco,
            comm,
            &SaveRequest {
                run_dir: self.run_dir,
                run_id: self.run_id,
                epoch,
                data_position: pos,
                band_stats: Some(self.band_stats),
                keep_last: self.policy.keep_last,
            },
        )?;
        self.last_saved = Some(saved.step);
        self.last_dir = Some(saved.dir);
        Ok(())
    }
}
