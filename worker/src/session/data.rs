//! The dataset named by `--data`, and the loader over it.

use crate::data::{Augmenter, DataSpec, Dataset, Sampler, SamplerPos, SyntheticDataset};
use crate::error::{Result, WorkerError};
use crate::train::Loader;
use moco_proto::TrainConfig;
use std::sync::Arc;

/// Seed of the synthetic tiles: fixed, so runs with different training seeds see the same data.
pub const SYNTHETIC_SEED: u64 = 0x5EED_DA7A;

/// Open the tiles named by `--data`.
pub fn open(spec: &str, _cfg: &TrainConfig) -> Result<Arc<dyn Dataset>> {
    match DataSpec::parse(spec)? {
        DataSpec::Synthetic(s) => Ok(Arc::new(SyntheticDataset::new(s, SYNTHETIC_SEED)?)),
        DataSpec::Path(p) => Err(WorkerError::Data(format!(
            "{}: image folders are not supported by this build yet; use --data synthetic",
            p.display()
        ))),
    }
}

/// The loader of this rank, from the start of the data order.
pub fn loader(ds: Arc<dyn Dataset>, cfg: &TrainConfig, rank: usize, world: usize, threads: usize) -> Result<Loader> {
    let aug = Arc::new(Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats())?);
    let sampler = Sampler::new(ds.len(), cfg.batch, rank, world, cfg.seed)?;
    Loader::start(ds, aug, sampler, SamplerPos::default(), threads, 2)
}
