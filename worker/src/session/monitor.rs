//! What the session measures at epoch ends: the label-free collapse monitor (every epoch, on
//! rank 0's queue keys) and, with `--eval-data`, the kNN top-1 of the backbone (every
//! `--eval-every` epochs). Rank 0 writes both to evals.jsonl; warnings go to the progress line
//! and the report.
//!
//! kNN during training is shared among the ranks: each extracts the features of every
//! world-th tile with the same weights and the BN running statistics averaged over the ranks,
//! and one all-reduce assembles the full feature matrix. No rank waits long in a collective
//! (the ring's timeout), and every rank scores the same features.

use crate::checkpoint::Weights;
use crate::data::Dataset;
use crate::error::Result;
use crate::eval::features::extract;
use crate::eval::{
    knn_on_features, labels_of, queue_embeddings, CollapseMonitor, EvalOptions, EvalTransform,
};
use crate::moco::comm::Comm;
use crate::moco::Moco;
use crate::report::{EvalLog, EvalRecord};
use moco_kernels::Backend;
use std::sync::Arc;

/// Queue rows the collapse monitor looks at (its eigen-solver is cubic in min(rows, dim)).
const COLLAPSE_ROWS: usize = 512;

/// Labelled data for kNN during training.
pub struct KnnData {
    pub ds: Arc<dyn Dataset>,
    pub labels: Vec<u32>,
    pub classes: usize,
    pub tf: EvalTransform,
    pub every_epochs: u64,
}

impl KnnData {
    pub fn new(ds: Arc<dyn Dataset>, tf: EvalTransform, every_epochs: u64) -> Result<KnnData> {
        let (labels, classes) = labels_of(&*ds)?;
        Ok(KnnData { ds, labels, classes, tf, every_epochs: every_epochs.max(1) })
    }
}

pub struct Monitor {
    pub knn: Option<KnnData>,
    pub collapse: CollapseMonitor,
    /// Rank 0's evals.jsonl.
    pub log: Option<EvalLog>,
    pub steps_per_epoch: u64,
    /// The newest warning, for the progress line.
    pub warning: Option<String>,
    /// Every warning of this session (the report lists them).
    pub warnings: Vec<String>,
    pub last_knn: Option<f32>,
    /// The record of this step's evaluation, until the caller takes it (TensorBoard).
    pub fresh: Option<EvalRecord>,
}

impl Monitor {
    /// After optimiser step `moco.steps` (every rank, every step): at an epoch end, measure.
    /// Returns the lines to show the user (rank 0 only has any).
    pub fn after_step<B: Backend>(&mut self, moco: &Moco<B>, comm: &dyn Comm) -> Result<Vec<String>> {
        let spe = self.steps_per_epoch.max(1);
        let mut lines = Vec::new();
        if moco.steps == 0 || !moco.steps.is_multiple_of(spe) {
            return Ok(lines);
        }
        let epoch = moco.steps / spe;
        let _span = tracing::info_span!("evaluate").entered();
        let collapse = if comm.rank() == 0 {
            queue_embeddings(moco, COLLAPSE_ROWS)?.map(|(x, d)| crate::eval::CollapseStats::of(&x, d))
        } else {
            None
        };
        let mut warning = None;
        if let Some(c) = collapse {
            warning = self.collapse.observe(epoch, c);
        }
        let knn = match &self.knn {
            Some(k) if epoch.is_multiple_of(k.every_epochs) => Some(knn_shared(moco, comm, k)?),
            _ => None,
        };
        if let Some(acc) = knn {
            self.last_knn = knn;
            if comm.rank() == 0 {
                lines.push(format!("epoch {epoch}: kNN top-1 {:.1}% on --eval-data", 100.0 * acc));
            }
        }
        if let Some(w) = &warning {
            lines.push(format!("warning: {w}"));
            self.warnings.push(w.clone());
        }
        self.warning = warning.clone();
        if let Some(log) = self.log.as_mut() {
            if collapse.is_some() || knn.is_some() {
                let r =
                    EvalRecord { step: moco.steps, epoch: epoch as f64, knn_top1: knn, collapse, warning };
                log.write(&r)?;
                self.fresh = Some(r);
            }
        }
        Ok(lines)
    }
}

/// kNN top-1 of the current backbone, the feature extraction split among the ranks.
fn knn_shared<B: Backend>(moco: &Moco<B>, comm: &dyn Comm, k: &KnnData) -> Result<f32> {
    let (rank, world) = (comm.rank(), comm.world());
    let mut w = Weights::of_moco(moco)?;
    if world > 1 {
        // Same weights everywhere; the BN running statistics differ per rank: average them so
        // every rank's share of the features comes from one network.
        comm.all_reduce_sum(&mut w.q_stats)?;
        let inv = 1.0 / world as f32;
        w.q_stats.iter_mut().for_each(|v| *v *= inv);
    }
    let n = k.ds.len();
    let d = w.topo.backbone.feat_dim;
    let mine: Vec<usize> = (rank..n).step_by(world).collect();
    let opts = EvalOptions::default();
    let feats = extract(&moco.be, &w, &*k.ds, &mine, &k.tf, opts.batch, &mut |_, _| {})?;
    let mut all = vec![0.0f32; n * d];
    for (j, &i) in mine.iter().enumerate() {
        all[i * d..(i + 1) * d].copy_from_slice(&feats[j * d..(j + 1) * d]);
    }
    if world > 1 {
        comm.all_reduce_sum(&mut all)?;
    }
    knn_on_features(&all, d, &k.labels, k.classes, &opts)
}
