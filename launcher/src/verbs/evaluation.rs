//! What `launcher eval` and `launcher embed` share: the checkpoint's weights, the labelled or
//! unlabelled data opened as training opens it, and the eval transform with the run's own
//! normalisation statistics.

use crate::error::Result;
use moco_worker::checkpoint::{Checkpoint, Weights};
use moco_worker::data::folder::DataArgs;
use moco_worker::data::Dataset;
use moco_worker::eval::EvalTransform;
use moco_worker::session::data::open_data;
use std::sync::Arc;

pub struct Loaded {
    pub ck: Checkpoint,
    pub weights: Weights,
    pub ds: Arc<dyn Dataset>,
    pub tf: EvalTransform,
}

/// Open the checkpoint and `data`; resize and centre-crop to the run's image size (or `size`),
/// normalise with the training data's statistics stored in the checkpoint.
pub fn load(
    checkpoint: &std::path::Path,
    data: &str,
    flags: &DataArgs,
    size: Option<usize>,
) -> Result<Loaded> {
    let ck = Checkpoint::resolve(checkpoint)?;
    let weights = ck.load_weights()?;
    let cfg = &ck.meta.config;
    let size = size.unwrap_or(cfg.image_size);
    let ds = open_data(data, flags, cfg, None, true)?;
    let stats = match &ck.meta.band_stats {
        Some(s) => s.to_stats()?,
        None => {
            eprintln!("note: the checkpoint stores no normalisation statistics; using those of {data}");
            ds.stats().clone()
        }
    };
    if stats.mean.len() != ds.bands() {
        return Err(moco_worker::WorkerError::Data(format!(
            "{data} has {} bands, the checkpoint's network was trained on {}; pass --bands to pick them",
            ds.bands(),
            stats.mean.len()
        ))
        .into());
    }
    let tf = EvalTransform::new(size, &stats);
    Ok(Loaded { ck, weights, ds, tf })
}

/// Progress on stderr: a line that rewrites itself on a terminal, a line per quarter otherwise
/// (logs stay readable).
#[derive(Default)]
pub struct Progress {
    /// (what, quarters shown) of the current pass.
    last: Option<(String, usize)>,
}

impl Progress {
    pub fn show(&mut self, what: &str, done: usize, total: usize) {
        use std::io::{IsTerminal, Write};
        let mut err = std::io::stderr();
        if err.is_terminal() {
            let _ = write!(err, "\r{what}: {done}/{total} images");
            if done >= total {
                let _ = writeln!(err);
            }
            let _ = err.flush();
            return;
        }
        let quarter = done * 4 / total.max(1);
        let shown = match &self.last {
            Some((w, q)) if w == what => *q,
            _ => 0,
        };
        if quarter > shown {
            let _ = writeln!(err, "{what}: {done}/{total} images");
        }
        self.last = Some((what.to_string(), quarter.max(shown)));
    }
}
