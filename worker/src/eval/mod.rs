//! Evaluation of learned representations, label-free and labelled.
//!
//! - `features`: the eval transform (resize, centre crop, normalise with the training data's
//!   statistics) and the backbone forward in eval mode.
//! - `embed`: features of a whole dataset to a safetensors file (`launcher embed`).
//! - `knn`: weighted kNN (cosine, k = 20, T = 0.07, InstDisc/DINO).
//! - `probe`: linear probe, multinomial logistic regression by L-BFGS.
//! - `split`: the deterministic stratified train/test split.
//! - `evaluate`: both, for the trained network and a random one (`launcher eval`); kNN alone
//!   during training (`--eval-data`).
//! - `collapse`: the label-free collapse monitor (embedding std, effective rank).
//!
//! Entry points: `evaluate(be, &weights, ds, &EvalTransform::new(size, stats), &opts, progress)`
//! then `report.table()`; `embed` + `write_embeddings`; `knn_accuracy` every N epochs;
//! `CollapseStats::of(keys, dim)` once per epoch on the queue (`queue_embeddings`).

pub mod collapse;
pub mod embed;
pub mod evaluate;
pub mod features;
pub mod knn;
pub mod probe;
pub mod split;

pub use collapse::{CollapseMonitor, CollapseStats};
pub use embed::{embed, read_embeddings, write_embeddings, Embeddings};
pub use evaluate::{evaluate, knn_accuracy, knn_on_features, labels_of, EvalOptions, EvalReport, Scores};
pub use features::{EvalTransform, FeatureExtractor};

use crate::error::Result;
use crate::moco::Moco;
use moco_kernels::Backend;

/// Up to `max_rows` of this rank's queue keys that came from images (the newest first; the
/// initial random keys are left out), for the collapse monitor; None without a queue or before
/// any key was enqueued. Returns (keys `[n, dim]`, dim).
pub fn queue_embeddings<B: Backend>(m: &Moco<B>, max_rows: usize) -> Result<Option<(Vec<f32>, usize)>> {
    let Some(q) = &m.queue else { return Ok(None) };
    let keys = m.be.to_host(&q.keys)?;
    // Between steps, once per epoch: the device pointer and indices may cross to the host.
    let (ptr, idx) = (q.ptr_host(&m.be)?, q.idx_host(&m.be)?);
    let mut out = Vec::new();
    for k in 0..q.rows {
        // Walk backwards from the row before the pointer: newest keys first.
        let r = (ptr + q.rows - 1 - k) % q.rows;
        if out.len() / q.dim >= max_rows {
            break;
        }
        if idx[r] != crate::moco::queue::NO_IMAGE {
            out.extend_from_slice(&keys[r * q.dim..(r + 1) * q.dim]);
        }
    }
    Ok((out.len() / q.dim.max(1) >= 2).then_some((out, q.dim)))
}
