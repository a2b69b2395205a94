//! The flags of image-folder datasets (`--bands`, `--strict-data`, `--cache-dir`), shared by the
//! worker and `launcher preview` so that a flag has one name everywhere, and the options they
//! turn into.

use crate::error::{Result, WorkerError};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Image folders (--data DIR)")]
pub struct DataArgs {
    /// Bands to train on, 0-based, in this order (e.g. `0,1,2`, or `all`); the model's stem
    /// takes as many input channels [default: all bands, except RGB (0,1,2) of 4-band RGBN tiles].
    #[arg(long, value_name = "LIST")]
    pub bands: Option<String>,
    /// Stop with an error instead of skipping unreadable, corrupt, mismatched or too-small images.
    #[arg(long)]
    pub strict_data: bool,
    /// Folder of the decoded-tile cache [default: DIR/.moco-cache when writable, else OUT/cache].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The same flags as command-line words, for a launcher passing them on to its workers.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(b) = &self.bands {
            v.extend(["--bands".to_string(), b.clone()]);
        }
        if self.strict_data {
            v.push("--strict-data".into());
        }
        if let Some(d) = &self.cache_dir {
            v.extend(["--cache-dir".to_string(), d.display().to_string()]);
        }
        v
    }

    /// `FolderOptions` for a crop of `crop` pixels; `fallback` is where the cache goes when the
    /// data folder is read-only (the run folder).
    pub fn options(&self, crop: usize, fallback: Option<&Path>) -> Result<FolderOptions> {
        let mut o = FolderOptions::new(crop);
        o.bands = BandChoice::parse(self.bands.as_deref())?;
        o.strict = self.strict_data;
        o.cache_dir = self.cache_dir.clone();
        o.fallback_cache_dir = fallback.map(Path::to_path_buf);
        Ok(o)
    }
}

/// Which source bands become the tile's channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BandChoice {
    /// All bands, except RGB of a 4-band (RGBN) set.
    Default,
    All,
    /// These source bands, in this order.
    List(Vec<usize>),
}

impl BandChoice {
    /// `None` -> `Default`; `all`; or a comma-separated list of distinct 0-based indices.
    pub fn parse(s: Option<&str>) -> Result<BandChoice> {
        let Some(s) = s.map(str::trim) else { return Ok(BandChoice::Default) };
        if s.eq_ignore_ascii_case("all") {
            return Ok(BandChoice::All);
        }
        let bad = |why: String| WorkerError::Data(format!("--bands {s:?}: {why}"));
        let list = s
            .split(',')
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| bad(format!("{p:?} is not a band index (0-based)")))
            })
            .collect::<Result<Vec<_>>>()?;
        if list.is_empty() {
            return Err(bad("give at least one band, e.g. 0,1,2".into()));
        }
        for (i, b) in list.iter().enumerate() {
            if list[..i].contains(b) {
                return Err(bad(format!("band {b} is given twice")));
            }
        }
        Ok(BandChoice::List(list))
    }

    /// The bands to keep of `source` bands, and a note when the default dropped some.
    pub fn resolve(&self, source: usize) -> Result<(Vec<usize>, Option<String>)> {
        match self {
            BandChoice::All => Ok(((0..source).collect(), None)),
            BandChoice::Default if source == 4 => Ok((
                vec![0, 1, 2],
                Some(
                    "4-band tiles: training on bands 0,1,2 (RGB of RGBN); pass --bands 0,1,2,3 (or all) to \
                     include the fourth (near-infrared) band"
                        .into(),
                ),
            )),
            BandChoice::Default => Ok(((0..source).collect(), None)),
            BandChoice::List(l) => match l.iter().find(|&&b| b >= source) {
                Some(b) => Err(WorkerError::Data(format!(
                    "--bands: band {b} does not exist; the images have {source} band(s), numbered 0..{}",
                    source - 1
                ))),
                None => Ok((l.clone(), None)),
            },
        }
    }
}

/// Called with each file's path just before it is read (tests use it to change a file
/// mid-caching).
pub type ReadHook = Arc<dyn Fn(&Path) + Send + Sync>;

/// How to turn a folder into a cached dataset.
#[derive(Clone)]
pub struct FolderOptions {
    pub bands: BandChoice,
    pub strict: bool,
    /// The training crop (`image_size`): smaller images are upscaled with a warning, or skipped
    /// when strict.
    pub crop: usize,
    /// Side of the stored square tiles.
    pub stored_size: usize,
    /// Explicit cache folder; must be writable.
    pub cache_dir: Option<PathBuf>,
    /// Used when `DIR/.moco-cache` cannot be written; the system temporary folder when `None`.
    pub fallback_cache_dir: Option<PathBuf>,
    /// Print the report and progress (off for non-zero ranks and tests).
    pub verbose: bool,
    /// How long to wait for another process building the same cache.
    pub lock_timeout: Duration,
    pub before_read: Option<ReadHook>,
}

impl std::fmt::Debug for FolderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderOptions")
            .field("bands", &self.bands)
            .field("strict", &self.strict)
            .field("crop", &self.crop)
            .field("stored_size", &self.stored_size)
            .field("cache_dir", &self.cache_dir)
            .field("fallback_cache_dir", &self.fallback_cache_dir)
            .field("verbose", &self.verbose)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

impl FolderOptions {
    pub fn new(crop: usize) -> FolderOptions {
        FolderOptions {
            bands: BandChoice::Default,
            strict: false,
            crop,
            stored_size: stored_size_for(crop),
            cache_dir: None,
            fallback_cache_dir: None,
            verbose: true,
            lock_timeout: Duration::from_secs(30 * 60),
            before_read: None,
        }
    }
}

/// Stored side for a training crop: 8/7 of it (ImageNet's 256 for 224), rounded up to a multiple
/// of 8, so that a random-resized crop covering the whole tile still downsamples slightly
/// instead of upsampling, while 2,000 RGB tiles at 224 take ~390 MiB.
pub fn stored_size_for(crop: usize) -> usize {
    (crop * 8).div_ceil(7).div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_size_leaves_room() {
        assert_eq!(stored_size_for(224), 256);
        assert_eq!(stored_size_for(64), 80);
        assert!(stored_size_for(32) > 32);
    }

    #[test]
    fn band_lists() {
        assert_eq!(BandChoice::parse(None).unwrap(), BandChoice::Default);
        assert_eq!(BandChoice::parse(Some("ALL")).unwrap(), BandChoice::All);
        assert_eq!(BandChoice::parse(Some("3, 1")).unwrap(), BandChoice::List(vec![3, 1]));
        for bad in ["", "0,,1", "1,1", "-1", "r,g,b"] {
            assert!(BandChoice::parse(Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert_eq!(BandChoice::Default.resolve(4).unwrap().0, vec![0, 1, 2]);
        assert!(BandChoice::Default.resolve(4).unwrap().1.is_some());
        assert_eq!(BandChoice::Default.resolve(6).unwrap().0, (0..6).collect::<Vec<_>>());
        assert_eq!(BandChoice::All.resolve(4).unwrap().0, vec![0, 1, 2, 3]);
        assert!(BandChoice::List(vec![0, 3]).resolve(3).is_err());
    }
}
