//! Image folders: `--data DIR` turned into a memory-mapped tile cache that training reads.
//!
//! - `scan`: the recursive walk (image extensions, symlink-loop protection, sorted order).
//! - `decode`, `tiff`: one file to a `Tile` (PNG/JPEG via image, TIFF via tiff, 8/16-bit, 1-N bands).
//! - `resize`: a tile to its stored form (bands chosen, centre square, stored size).
//! - `build`: probe, majority kind, decode in parallel, stream into the cache, statistics.
//! - `cache`: the file format and `CacheDataset` (the `Dataset` over the map).
//! - `lock`: one builder per cache among processes.
//! - `report`: what was cached, skipped (with reasons), upscaled, ignored.
//! - `options`: the `--bands`, `--strict-data`, `--cache-dir` flags and `FolderOptions`.
//!
//! Opening a folder: scan (stat only) -> quick key -> a cache in the cache folder whose
//! preamble carries that key is checked and reused; otherwise take the build lock, build, and
//! open the result. The quick key covers the relative paths, sizes and modification times of
//! every image file plus the parameters, so any change to the folder rebuilds; the file itself
//! is named by its content key (paths and content hashes of the cached files plus parameters),
//! so touching files without changing them rebuilds into the same name. Stale caches of the
//! same folder and parameters are removed after a build.
//!
//! Where the cache goes: `--cache-dir` when given; else `DIR/.moco-cache` when it can be
//! written; else `FolderOptions::fallback_cache_dir` (the worker passes `OUT/cache`, the run
//! folder), else the system temporary folder. The choice is printed.

pub mod build;
pub mod cache;
pub mod decode;
pub mod lock;
pub mod options;
pub mod report;
pub mod resize;
pub mod scan;
pub mod tiff;

pub use cache::CacheDataset;
pub use options::{stored_size_for, BandChoice, DataArgs, FolderOptions};
pub use report::{DatasetReport, SkipKind, Skipped};
pub use scan::count_images;

use crate::error::{Result, WorkerError};
use cache::{peek_keys, Keys, EXTENSION, FORMAT_VERSION};
use lock::Acquired;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// Name of the cache folder inside a data folder (hidden, so the scan skips it).
pub const CACHE_FOLDER: &str = ".moco-cache";

/// An opened folder.
pub struct Opened {
    pub dataset: CacheDataset,
    /// The report of the build that made the cache.
    pub report: DatasetReport,
    /// True when this call built the cache, false when it reused one.
    pub built: bool,
}

impl Opened {
    fn new(dataset: CacheDataset, built: bool) -> Opened {
        let report = dataset.header().map(|h| h.report.clone()).unwrap_or_default();
        Opened { dataset, report, built }
    }
}

/// Open `root` as a cached dataset (building the cache on first use).
pub fn open_folder(root: &Path, opts: &FolderOptions) -> Result<Opened> {
    if opts.crop == 0 || opts.stored_size < opts.crop {
        return Err(WorkerError::Data(format!(
            "stored tile size {} must be at least the {}-px training crop",
            opts.stored_size, opts.crop
        )));
    }
    let scan = scan::scan(root)?;
    if scan.files.is_empty() {
        let others = if scan.ignored.is_empty() {
            "it is empty".to_string()
        } else {
            let some: Vec<&str> = scan.ignored.iter().take(5).map(String::as_str).collect();
            format!("it holds {} other file(s): {}", scan.ignored.len(), some.join(", "))
        };
        return Err(WorkerError::Data(format!(
            "--data {}: no PNG, JPEG or TIFF files found (searched sub-folders too; {others})",
            root.display()
        )));
    }
    let keys = keys(root, opts, &scan.files);
    let dir = cache_dir(root, opts)?;
    if let Some(ds) = reuse(&dir, keys, opts)? {
        return Ok(Opened::new(ds, false));
    }
    let lock_name = format!("{:032x}", keys.quick);
    let guard = match lock::acquire(&dir, &lock_name, opts.lock_timeout, opts.verbose, || {
        reuse(&dir, keys, &FolderOptions { verbose: false, ..opts.clone() }).ok().flatten()
    })? {
        Acquired::Ready(ds) => {
            announce_reuse(&ds, opts);
            return Ok(Opened::new(ds, false));
        }
        Acquired::Build(guard) => guard,
    };
    // Another process may have finished between our look and taking the lock.
    if let Some(ds) = reuse(&dir, keys, opts)? {
        return Ok(Opened::new(ds, false));
    }
    let path = build::build(root, &scan, opts, &dir, keys)?;
    let ds = CacheDataset::open(&path).map_err(|why| {
        WorkerError::Data(format!("{}: the cache just built does not open: {why}", path.display()))
    })?;
    drop(guard);
    prune(&dir, keys, &path);
    if opts.verbose {
        if let Some(h) = ds.header() {
            eprint!("{}", h.report);
        }
    }
    Ok(Opened::new(ds, true))
}

/// The keys of this folder and these options (see the module docs).
fn keys(root: &Path, opts: &FolderOptions, files: &[scan::ScannedFile]) -> Keys {
    let mut p = Xxh3::new();
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    p.update(canon.to_string_lossy().as_bytes());
    p.update(&[0]);
    p.update(&FORMAT_VERSION.to_le_bytes());
    p.update(&(opts.stored_size as u64).to_le_bytes());
    p.update(&(opts.crop as u64).to_le_bytes());
    p.update(format!("{:?}", opts.bands).as_bytes());
    let params = p.digest128();
    let mut q = Xxh3::new();
    q.update(&params.to_le_bytes());
    for f in files {
        q.update(f.rel.as_bytes());
        q.update(&[0]);
        q.update(&f.size.to_le_bytes());
        q.update(&f.mtime_ns.to_le_bytes());
    }
    Keys { params, quick: q.digest128() }
}

/// Cache files in `dir` (by extension).
fn caches_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == EXTENSION)).collect();
    v.sort();
    v
}

/// A valid cache for `keys` in `dir`, if there is one. A damaged one is reported (and will be
/// replaced by the rebuild).
fn reuse(dir: &Path, keys: Keys, opts: &FolderOptions) -> Result<Option<CacheDataset>> {
    for path in caches_in(dir) {
        if peek_keys(&path).is_none_or(|k| k != keys) {
            continue;
        }
        match CacheDataset::open(&path) {
            Ok(ds) => {
                if let (true, Some(h)) = (opts.strict, ds.header()) {
                    if !h.report.skipped.is_empty() || !h.report.upscaled.is_empty() {
                        return Err(build::strict_error(&h.report));
                    }
                }
                announce_reuse(&ds, opts);
                return Ok(Some(ds));
            }
            Err(why) => {
                if opts.verbose {
                    eprintln!("cache: {} is unusable ({why}); rebuilding it", path.display());
                }
            }
        }
    }
    Ok(None)
}

fn announce_reuse(ds: &CacheDataset, opts: &FolderOptions) {
    if let (true, Some(h)) = (opts.verbose, ds.header()) {
        let r = &h.report;
        eprintln!("dataset {}: reusing the cache {}", r.folder, ds.path().display());
        eprintln!("  {}", r.headline());
        if !r.skipped.is_empty() || !r.upscaled.is_empty() {
            eprintln!(
                "  {} file(s) skipped, {} upscaled when it was built (report: {}.txt)",
                r.skipped.len(),
                r.upscaled.len(),
                ds.path().display()
            );
        }
        for n in &r.notes {
            eprintln!("  note: {n}");
        }
    }
}

/// Remove older caches of the same folder and parameters (their folder contents are gone).
/// Processes still training on one keep their map: the inode lives until they close it.
fn prune(dir: &Path, keys: Keys, keep: &Path) {
    for path in caches_in(dir) {
        if path != keep && peek_keys(&path).is_some_and(|k| k.params == keys.params && k.quick != keys.quick)
        {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension(format!("{EXTENSION}.txt")));
        }
    }
}

/// Where this folder's cache goes (see the module docs).
fn cache_dir(root: &Path, opts: &FolderOptions) -> Result<PathBuf> {
    if let Some(d) = &opts.cache_dir {
        return writable(d).map(|()| d.clone()).map_err(|e| {
            WorkerError::io(format!("--cache-dir {}: cannot write the tile cache there", d.display()), e)
        });
    }
    let near = root.join(CACHE_FOLDER);
    let near_err = match writable(&near) {
        Ok(()) => return Ok(near),
        Err(e) => e,
    };
    let fallback = opts.fallback_cache_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("moco-cache"));
    writable(&fallback).map_err(|e| {
        WorkerError::io(
            format!(
                "no writable place for the tile cache: {} ({near_err}) nor {}; pass --cache-dir",
                near.display(),
                fallback.display()
            ),
            e,
        )
    })?;
    if opts.verbose {
        eprintln!(
            "cache: the data folder is not writable ({near_err}); caching in {} instead (set --cache-dir to choose)",
            fallback.display()
        );
    }
    Ok(fallback)
}

/// Create `dir` if needed and check a file can be created in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    // Unique per process and call: several openers may probe the same folder at once.
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".probe-{}-{n}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}
