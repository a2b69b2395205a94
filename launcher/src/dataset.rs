//! How many images a run will see, for validation and the plan, before any data is loaded.

use moco_worker::data::DataSpec;
use std::path::Path;

/// The user's dataset (DESIGN.md): ~2,000 tiles. Assumed when nothing better is known.
pub const ASSUMED_DATASET: usize = 2000;

/// The dataset size and a few words saying where it came from.
pub fn dataset_len(data: Option<&str>, explicit: Option<usize>) -> moco_worker::Result<(usize, String)> {
    if let Some(n) = explicit {
        return Ok((n, "--dataset-size".into()));
    }
    match data.map(DataSpec::parse).transpose()? {
        Some(DataSpec::Synthetic(s)) => Ok((s.count, "synthetic tiles".into())),
        Some(DataSpec::Path(p)) => Ok((count_images(&p)?, format!("images in {}", p.display()))),
        None => {
            Ok((ASSUMED_DATASET, "assumed: the user's ~2,000 tiles; set --dataset-size or --data".into()))
        }
    }
}

/// Image files in `dir` and its sub-folders, by extension, as the worker's folder scan finds
/// them (files it will skip as unreadable are counted too; the worker's report lists them).
fn count_images(dir: &Path) -> moco_worker::Result<usize> {
    moco_worker::data::folder::count_images(dir)
}
