//! Finding and reading checkpoints: `Checkpoint::resolve` (what a user typed), `find_latest`
//! (automatic resume), `load_snapshot` (one rank's full state, verified), `load_weights`
//! (rank 0's weights for export, eval and --init-from), and `resume` / `init_from` on a `Moco`.
//!
//! Loading never writes: a checkpoint folder can be read-only, and debris of a killed save
//! (temporary files, a folder without `meta.json`) is ignored here and removed by the next save.

use super::meta::{check_resume_config, CheckpointMeta, TopologySummary};
use super::save::{parse_step_dir, CHECKPOINTS, LATEST, META};
use super::snapshot::{read_local, read_shared, Snapshot};
use super::tensors::TensorFile;
use crate::data::SamplerPos;
use crate::error::{Result, WorkerError};
use crate::moco::Moco;
use crate::model::params::{init_params, init_stats};
use crate::model::Topology;
use moco_kernels::Backend;
use std::path::{Path, PathBuf};

fn bad(path: &Path, problem: impl Into<String>) -> WorkerError {
    WorkerError::BadFile { path: path.to_path_buf(), problem: problem.into() }
}

/// A complete checkpoint: its step folder and description.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
}

/// Weights of the query and momentum encoders with their BN statistics (rank 0's), for export,
/// evaluation and `--init-from`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub topo: Topology,
    pub params: Vec<f32>,
    pub key_params: Vec<f32>,
    pub q_stats: Vec<f32>,
    pub k_stats: Vec<f32>,
    /// Running-statistics updates each BN layer has seen (torchvision's num_batches_tracked):
    /// two forward passes (one per view) per micro-batch.
    pub bn_updates: u64,
}

impl Weights {
    /// The current weights of a training state (kNN during training, export of a live model).
    pub fn of_moco<B: Backend>(m: &Moco<B>) -> Result<Weights> {
        Ok(Weights {
            topo: m.topo.clone(),
            params: m.be.to_host(&m.params)?,
            key_params: m.be.to_host(&m.key_params)?,
            q_stats: m.be.to_host(&m.q_stats)?,
            k_stats: m.be.to_host(&m.k_stats)?,
            bn_updates: 2 * m.micro_total,
        })
    }

    /// A randomly initialised network of the same shapes (the baseline of `launcher eval`).
    pub fn random(topo: &Topology, seed: u64) -> Weights {
        let params = init_params(topo, seed);
        let stats = init_stats(topo);
        Weights {
            key_params: params[..topo.key_len()].to_vec(),
            params,
            q_stats: stats.clone(),
            k_stats: stats,
            bn_updates: 0,
            topo: topo.clone(),
        }
    }
}

impl Checkpoint {
    /// Open the step folder `dir` (must hold `meta.json`).
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(META);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bad(
                    dir,
                    "no meta.json: this folder is not a complete checkpoint (a save that was interrupted \
                     leaves such a folder; use an older step folder or the run folder)",
                )
            } else {
                WorkerError::io(format!("reading {}", path.display()), e)
            }
        })?;
        let meta = CheckpointMeta::parse(&path, &text)?;
        if meta.files.len() != meta.world || (0..meta.world).any(|r| meta.file_of(r).is_none()) {
            return Err(bad(&path, format!("lists {} files for {} ranks", meta.files.len(), meta.world)));
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), meta })
    }

    /// What a user may pass to `--checkpoint`, `--resume` or `--init-from`: a run folder (its
    /// newest checkpoint), `RUN/last` or `RUN/latest` (the same), its `checkpoints/` folder, a
    /// step folder, or a rank file inside one.
    pub fn resolve(path: &Path) -> Result<Checkpoint> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !path.exists() && (name == "last" || name == "latest") {
            if let Some(run) = path.parent() {
                return Self::latest_or_error(run, path);
            }
        }
        if !path.exists() {
            return Err(bad(path, "no such file or folder"));
        }
        if path.is_file() {
            if name == META || name.ends_with(".safetensors") {
                if let Some(dir) = path.parent().filter(|d| d.join(META).is_file()) {
                    return Self::open(dir);
                }
                if name.ends_with(".safetensors") {
                    return Err(foreign_file(path));
                }
            }
            return Err(bad(path, "not a moco-rs checkpoint: give the run folder or a step folder"));
        }
        if path.join(META).is_file() {
            return Self::open(path);
        }
        if path.join(CHECKPOINTS).is_dir() {
            return Self::latest_or_error(path, path);
        }
        if name == CHECKPOINTS {
            if let Some(run) = path.parent() {
                return Self::latest_or_error(run, path);
            }
        }
        if parse_step_dir(&name).is_some() {
            return Self::open(path);
        }
        Err(bad(
            path,
            "holds no moco-rs checkpoint (expected a run folder with checkpoints/ or a step folder)",
        ))
    }

    fn latest_or_error(run: &Path, shown: &Path) -> Result<Checkpoint> {
        find_latest(run)?.ok_or_else(|| bad(shown, "the run has no complete checkpoint yet"))
    }

    pub fn step(&self) -> u64 {
        self.meta.step
    }

    /// The network this checkpoint was written for.
    pub fn topology(&self) -> Topology {
        Topology::new(self.meta.topology.dims())
    }

    /// Open rank `rank`'s file and check it against the description: length, checksum, and
    /// the file's own metadata (format, rank, step).
    pub fn open_rank(&self, rank: usize) -> Result<TensorFile> {
        let entry = self.meta.file_of(rank).ok_or_else(|| {
            bad(&self.dir, format!("the checkpoint has {} ranks, rank {rank} has no file", self.meta.world))
        })?;
        let path = self.dir.join(&entry.file);
        let len = std::fs::metadata(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    bad(&path, "missing: the checkpoint is incomplete (was the folder copied partially?)")
                } else {
                    WorkerError::io(format!("reading {}", path.display()), e)
                }
            })?
            .len();
        if len != entry.bytes {
            return Err(bad(
                &path,
                format!(
                    "is {len} bytes, meta.json says {}: the file was truncated or replaced after the \
                     checkpoint was written. Resume from an older step folder under {}",
                    entry.bytes,
                    self.dir.parent().map(|p| p.display().to_string()).unwrap_or_default()
                ),
            ));
        }
        let f = TensorFile::open(&path)?;
        let sum = format!("{:016x}", f.xxh3());
        if sum != entry.xxh3 {
            return Err(bad(
                &path,
                "checksum mismatch: the file is corrupt. Resume from an older step folder",
            ));
        }
        let md = f.metadata();
        let expect = [
            ("format", super::meta::FORMAT.to_string()),
            ("rank", rank.to_string()),
            ("step", self.meta.step.to_string()),
        ];
        for (k, v) in expect {
            if md.get(k) != Some(&v) {
                return Err(bad(&path, format!("metadata {k} is {:?}, expected {v:?}", md.get(k))));
            }
        }
        Ok(f)
    }

    /// Check that this checkpoint was written for `topo`.
    pub fn check_topology(&self, topo: &Topology) -> Result<()> {
        let saved = &self.meta.topology;
        let now = TopologySummary::of(topo);
        if *saved == now {
            return Ok(());
        }
        let mut diffs = saved.backbone_mismatch(&now);
        diffs.extend(saved.head_mismatch(&now));
        Err(bad(
            &self.dir,
            format!(
                "the checkpoint was written for another network: {}. Resume only with the same \
                 architecture; to start a new run from its weights use --init-from (the backbone must \
                 match)",
                if diffs.is_empty() { "different parameter layout".to_string() } else { diffs.join(", ") }
            ),
        ))
    }

    /// Rank `rank`'s complete state (shared part from rank 0's file).
    pub fn load_snapshot(&self, rank: usize) -> Result<Snapshot> {
        let t = self.topology();
        let cfg = &self.meta.config;
        let v_len = if cfg.optimizer == moco_proto::config::Optimizer::Adamw { t.param_len() } else { 0 };
        let f0 = self.open_rank(0)?;
        let shared = read_shared(&f0, &t, v_len)?;
        let queue_shape = (cfg.queue_size > 0).then(|| (cfg.queue_size / self.meta.world, cfg.dim));
        let (q_stats, k_stats, queue) = if rank == 0 {
            read_local(&f0, &t, queue_shape)?
        } else {
            read_local(&self.open_rank(rank)?, &t, queue_shape)?
        };
        Ok(Snapshot {
            params: shared.params,
            key_params: shared.key_params,
            q_stats,
            k_stats,
            opt_m: shared.opt_m,
            opt_v: shared.opt_v,
            opt_steps: shared.opt_steps,
            queue,
            scaler: self.meta.scaler,
            micro_total: self.meta.micro_total,
            steps: self.meta.step,
        })
    }

    /// Rank 0's weights and statistics only (no optimiser state, no queue).
    pub fn load_weights(&self) -> Result<Weights> {
        let t = self.topology();
        let f = self.open_rank(0)?;
        let params = super::snapshot::read_params(&f, &t, "param.", t.param_len())?;
        let key_params = super::snapshot::read_params(&f, &t, "key_param.", t.key_len())?;
        let q_stats = super::snapshot::read_stats(&f, &t, "q_stats")?;
        let k_stats = super::snapshot::read_stats(&f, &t, "k_stats")?;
        Ok(Weights { params, key_params, q_stats, k_stats, bn_updates: 2 * self.meta.micro_total, topo: t })
    }
}

fn foreign_file(path: &Path) -> WorkerError {
    let what = match TensorFile::open(path) {
        Err(e) => return e,
        Ok(f) if f.has("conv1.weight") => {
            "a safetensors file with torchvision-style keys (an export?), not a moco-rs checkpoint"
        }
        Ok(_) => "a safetensors file that is not part of a moco-rs checkpoint (no meta.json beside it)",
    };
    bad(path, format!("{what}: give a run folder or a step folder written by moco-rs"))
}

/// Complete step folders of a run, newest first.
pub fn complete_checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v = Vec::new();
    if let Ok(entries) = std::fs::read_dir(run_dir.join(CHECKPOINTS)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(step) = parse_step_dir(&name) {
                if e.path().join(META).is_file() {
                    v.push((step, e.path()));
                }
            }
        }
    }
    v.sort_by_key(|b| std::cmp::Reverse(b.0));
    v
}

/// The checkpoint to resume `run_dir` from: the one `checkpoints/latest` names when it is
/// complete, else the newest complete step folder; None when there is none.
pub fn find_latest(run_dir: &Path) -> Result<Option<Checkpoint>> {
    let root = run_dir.join(CHECKPOINTS);
    if let Ok(name) = std::fs::read_to_string(root.join(LATEST)) {
        let dir = root.join(name.trim());
        if parse_step_dir(name.trim()).is_some() && dir.join(META).is_file() {
            return Checkpoint::open(&dir).map(Some);
        }
    }
    match complete_checkpoints(run_dir).into_iter().next() {
        Some((_, dir)) => Checkpoint::open(&dir).map(Some),
        None => Ok(None),
    }
}

/// What a resumed rank needs besides its restored state.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub step: u64,
    pub epoch: f64,
    /// Start the loader here (`Loader::start(.., data_position, ..)`).
    pub data_position: SamplerPos,
    /// Config fields that differ from the checkpoint's (allowed, but the run is then not the
    /// uninterrupted one).
    pub warnings: Vec<String>,
}

/// Restore rank `comm`'s full state from `ck` into `moco` (built with the run's config and
/// world size). Bit-identical continuation on the CPU when the config is unchanged.
pub fn resume<B: Backend>(moco: &mut Moco<B>, ck: &Checkpoint, rank: usize, world: usize) -> Result<Resumed> {
    let warnings = check_resume_config(&ck.meta, &moco.cfg, world, &ck.dir)?;
    ck.check_topology(&moco.topo)?;
    let snap = ck.load_snapshot(rank)?;
    snap.restore_into(moco)?;
    Ok(Resumed { step: ck.meta.step, epoch: ck.meta.epoch, data_position: ck.meta.data_position, warnings })
}

/// What `init_from` carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReport {
    /// Parameter tensors copied from the checkpoint / left at their fresh initialisation.
    pub copied: usize,
    pub fresh: Vec<String>,
    /// One warning for the user: what was and what was not carried over.
    pub warning: String,
}

/// Start a new run from a checkpoint's weights: query and momentum encoder parameters and BN
/// statistics (rank 0's) where the names and shapes match; the backbone must match entirely.
/// Optimiser state, queue, loss scale, counters and data position start fresh.
pub fn init_from<B: Backend>(moco: &mut Moco<B>, ck: &Checkpoint) -> Result<InitReport> {
    let saved = &ck.meta.topology;
    let now = TopologySummary::of(&moco.topo);
    let mismatch = saved.backbone_mismatch(&now);
    if !mismatch.is_empty() {
        return Err(bad(
            &ck.dir,
            format!(
                "--init-from needs the same backbone: the checkpoint was written for {}; pick a preset \
                 with the checkpoint's width (or the same bands)",
                mismatch.join(", ")
            ),
        ));
    }
    let w = ck.load_weights()?;
    let t = &moco.topo;
    let be = &moco.be;
    let mut params = be.to_host(&moco.params)?;
    let mut q_stats = be.to_host(&moco.q_stats)?;
    let mut fresh = Vec::new();
    let mut copied = 0;
    for p in &t.params {
        match w.topo.param(&p.name).filter(|s| s.kind == p.kind) {
            Some(s) => {
                params[p.range()].copy_from_slice(&w.params[s.range()]);
                copied += 1;
            }
            None => fresh.push(p.name.clone()),
        }
    }
    // The momentum encoder takes the checkpoint's copy where the query's tensor came from the
    // checkpoint, and the fresh query tensor otherwise (as at any init).
    let mut key = params[..t.key_len()].to_vec();
    for p in t.params.iter().filter(|p| p.offset < t.key_len()) {
        if let Some(s) = w.topo.param(&p.name).filter(|s| s.kind == p.kind && s.offset < w.topo.key_len()) {
            key[p.range()].copy_from_slice(&w.key_params[s.range()]);
        }
    }
    let mut k_stats = q_stats.clone();
    for (name, off, len) in &t.buffers {
        if let Some((_, soff, slen)) = w.topo.buffers.iter().find(|(n, _, l)| n == name && l == len) {
            q_stats[*off..off + len].copy_from_slice(&w.q_stats[*soff..soff + slen]);
            k_stats[*off..off + len].copy_from_slice(&w.k_stats[*soff..soff + slen]);
        }
    }
    moco.params = be.from_host(&params)?;
    moco.key_params = be.from_host(&key)?;
    moco.q_stats = be.from_host(&q_stats)?;
    moco.k_stats = be.from_host(&k_stats)?;
    moco.refresh_weights()?;
    let heads = if fresh.is_empty() {
        String::new()
    } else {
        format!(
            "; {} head tensors start fresh because their shapes differ ({})",
            fresh.len(),
            saved.head_mismatch(&now).join(", ")
        )
    };
    let warning = format!(
        "--init-from {} (step {}): carried over the query and momentum encoders' weights and BN running \
         statistics{heads}. NOT carried over: the optimiser state (momentum/Adam moments), the negative \
         queue, the loss scale, the step and epoch counters and the position in the data: this is a new \
         run with its own warmup and lr/momentum schedule from step 0. To continue the same run \
         instead, use --resume with the checkpoint's settings",
        ck.dir.display(),
        ck.meta.step
    );
    Ok(InitReport { copied, fresh, warning })
}
