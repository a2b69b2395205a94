//! The session's side of checkpoints: where a run starts (fresh, resumed, or from another
//! run's weights) and when it saves (every N epochs, at the end, after a stop request).

use super::args::RunArgs;
use crate::checkpoint::{self, Checkpoint, CheckpointPolicy, SaveRequest};
use crate::data::{BandStats, SamplerPos};
use crate::error::Result;
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

/// Restore `moco` as the flags say. The newest checkpoint already in the run folder `out` comes
/// first (automatic resume; it is also how `--max-restarts` continues from the last
/// checkpoint, with the same flags), then `--resume RUN_DIR`, then `--init-from CHECKPOINT`
/// (weights only), else a fresh start.
pub fn start<B: Backend>(
    run: &RunArgs,
    out: &Path,
    moco: &mut Moco<B>,
    rank: usize,
    world: usize,
) -> Result<Start> {
    let (found, from_out) = match checkpoint::find_latest(out)? {
        Some(ck) => (Some(ck), true),
        None => match &run.resume {
            Some(dir) => (Some(Checkpoint::resolve(dir)?), false),
            None => (None, false),
        },
    };
    if let Some(ck) = found {
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
        return Ok(Start { data_position: r.data_position, step: r.step, notes, warnings: r.warnings });
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
