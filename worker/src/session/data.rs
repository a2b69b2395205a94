//! The dataset named by `--data`, and the loader over it.

use super::args::TrainArgs;
use crate::data::folder::{open_folder, DataArgs};
use crate::data::{Augmenter, DataSpec, Dataset, Sampler, SamplerPos, SyntheticDataset};
use crate::error::{Result, WorkerError};
use crate::train::Loader;
use moco_proto::TrainConfig;
use std::path::Path;
use std::sync::Arc;

/// Seed of the synthetic tiles: fixed, so runs with different training seeds see the same data.
pub const SYNTHETIC_SEED: u64 = 0x5EED_DA7A;

/// The rank this worker was given by flag or environment before joining (None: unknown yet).
pub fn claimed_rank(args: &TrainArgs) -> Option<u32> {
    args.group.rank.or_else(|| {
        moco_proto::env::LaunchEnv::from_process()
            .ok()
            .filter(|e| e.source != moco_proto::env::EnvSource::None)
            .map(|e| e.rank)
    })
}

/// Open the tiles `spec` (with the folder flags `flags`) for this worker. A folder is cached
/// on first use (one worker builds, the others wait for it: `data::folder::lock`); only the
/// first rank prints the dataset report.
pub fn open(args: &TrainArgs, spec: &str, flags: &DataArgs, cfg: &TrainConfig) -> Result<Arc<dyn Dataset>> {
    let rank = claimed_rank(args);
    let fallback = args.out.as_ref().map(|o| o.join("cache"));
    open_data(spec, flags, cfg, fallback.as_deref(), rank.is_none_or(|r| r == 0))
}

/// Open `spec` (`synthetic...` or a folder) with the folder flags `flags`; `fallback` is where
/// the cache goes when the data folder is read-only; `verbose` prints progress and the report.
pub fn open_data(
    spec: &str,
    flags: &DataArgs,
    cfg: &TrainConfig,
    fallback: Option<&Path>,
    verbose: bool,
) -> Result<Arc<dyn Dataset>> {
    match DataSpec::parse(spec)? {
        DataSpec::Synthetic(s) => {
            if flags.bands.is_some() {
                return Err(WorkerError::Data(
                    "--bands selects bands of an image folder; synthetic tiles are always RGB".into(),
                ));
            }
            Ok(Arc::new(SyntheticDataset::new(s, SYNTHETIC_SEED)?))
        }
        DataSpec::Path(p) => {
            let mut opts = flags.options(cfg.image_size, fallback)?;
            opts.verbose = verbose;
            Ok(Arc::new(open_folder(&p, &opts)?.dataset))
        }
    }
}

/// The loader of this rank, from `start` in the data order (the default at a fresh start, a
/// checkpoint's position on resume).
pub fn loader(
    ds: Arc<dyn Dataset>,
    cfg: &TrainConfig,
    rank: usize,
    world: usize,
    threads: usize,
    start: SamplerPos,
) -> Result<Loader> {
    let aug = Arc::new(Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats())?);
    let sampler = Sampler::new(ds.len(), cfg.batch, rank, world, cfg.seed)?;
    Loader::start(ds, aug, sampler, start, threads, 2)
}
