//! How many images a run will see, for validation and the plan, before any data is loaded.

use moco_worker::data::DataSpec;
use std::path::Path;

/// The user's dataset (DESIGN.md): ~2,000 tiles. Assumed when nothing better is known.
pub const ASSUMED_DATASET: usize = 2000;

/// Image file extensions counted in a data folder.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff"];

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

/// Image files directly inside `dir` (by extension).
fn count_images(dir: &Path) -> moco_worker::Result<usize> {
    let ctx = || format!("reading the data folder {}", dir.display());
    let entries = std::fs::read_dir(dir).map_err(|e| moco_worker::WorkerError::io(ctx(), e))?;
    let mut n = 0;
    for entry in entries {
        let path = entry.map_err(|e| moco_worker::WorkerError::io(ctx(), e))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            n += 1;
        }
    }
    Ok(n)
}
