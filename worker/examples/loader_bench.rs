//! The data path of a real folder, measured: building the tile cache (decode + resize of every
//! file), reopening it, and the loader's two-view pairs per second through the memory-mapped
//! cache, at the training crop size, for each augmentation thread count.
//!
//! cargo run --release -p moco-worker --example loader_bench -- [--data DIR] [--tiles 2000]
//!     [--native 256] [--size 224] [--batch 64] [--seconds 5] [--threads 1,2] [--keep DIR]
//!
//! Without --data it first writes `--tiles` synthetic aerial tiles of `--native` px, half PNG
//! and half JPEG, into a temporary folder (or into --keep DIR, to reuse it).

use moco_proto::config::AugConfig;
use moco_worker::data::folder::{open_folder, FolderOptions};
use moco_worker::data::{Augmenter, Dataset, Pixels, Sampler, SamplerPos, SyntheticDataset, SyntheticSpec};
use moco_worker::train::{Loader, MicroBatches};
use moco_worker::WorkerError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> moco_worker::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tiles: usize = arg(&args, "--tiles", 2000);
    let native: usize = arg(&args, "--native", 256);
    let size: usize = arg(&args, "--size", 224);
    let batch: usize = arg(&args, "--batch", 64);
    let seconds: f64 = arg(&args, "--seconds", 5.0);
    let threads: Vec<usize> =
        arg(&args, "--threads", "1,2".to_string()).split(',').filter_map(|t| t.trim().parse().ok()).collect();
    let given: Option<PathBuf> =
        args.iter().position(|a| a == "--data").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let keep: Option<PathBuf> =
        args.iter().position(|a| a == "--keep").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} core(s); rayon pool {} thread(s)", rayon::current_num_threads());

    let (dir, temporary) = match (given, keep) {
        (Some(d), _) => (d, false),
        (None, Some(k)) => (k, false),
        (None, None) => {
            (std::env::temp_dir().join(format!("moco-loader-bench-{}", std::process::id())), true)
        }
    };
    if !dir.join(".moco-cache").exists() && std::fs::read_dir(&dir).map_or(true, |mut r| r.next().is_none()) {
        let t = Instant::now();
        write_tiles(&dir, tiles, native)?;
        println!(
            "wrote {tiles} synthetic {native}-px tiles (half PNG, half JPEG) to {} in {:.1} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }

    let mut opts = FolderOptions::new(size);
    opts.verbose = true;
    let t = Instant::now();
    let opened = open_folder(&dir, &opts)?;
    let first = t.elapsed().as_secs_f64();
    let verb = if opened.built { "built" } else { "reused" };
    println!(
        "cache {verb} in {first:.2} s: {} tiles ({:.0} tiles/s), {}",
        opened.dataset.len(),
        opened.dataset.len() as f64 / first,
        opened.report.headline()
    );
    drop(opened);
    let t = Instant::now();
    let ds: Arc<dyn Dataset> =
        Arc::new(open_folder(&dir, &FolderOptions { verbose: false, ..opts.clone() })?.dataset);
    println!("reopen (scan + checks + map): {:.3} s", t.elapsed().as_secs_f64());

    let aug = Arc::new(Augmenter::new(&AugConfig::default(), size, 0, ds.stats())?);
    let sampler = Sampler::new(ds.len(), batch, 0, 1, 0)?;
    for &n in &threads {
        let mut loader = Loader::start(ds.clone(), aug.clone(), sampler, SamplerPos::default(), n, 4)?;
        loader.next_batch()?; // warm-up: page-in, first allocations
        let (start, mut pairs) = (Instant::now(), 0usize);
        while start.elapsed() < Duration::from_secs_f64(seconds) {
            pairs += loader.next_batch()?.n;
        }
        let rate = pairs as f64 / start.elapsed().as_secs_f64();
        println!(
            "loader {size} px, batch {batch}, {n} augmentation thread(s): {rate:.0} two-view pairs/s ({:.2} ms per pair per thread)",
            1e3 * n as f64 / rate
        );
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// `count` synthetic aerial tiles as real files, alternating PNG and JPEG.
fn write_tiles(dir: &Path, count: usize, size: usize) -> moco_worker::Result<()> {
    use rayon::prelude::*;
    std::fs::create_dir_all(dir).map_err(|e| WorkerError::io(format!("creating {}", dir.display()), e))?;
    let ds = SyntheticDataset::new(SyntheticSpec { count, size }, 7)?;
    (0..count).into_par_iter().try_for_each(|i| {
        let t = ds.tile(i)?;
        let Pixels::U8(px) = t.pixels() else {
            return Err(WorkerError::Data("synthetic tiles are 8-bit".into()));
        };
        let img = image::RgbImage::from_raw(size as u32, size as u32, px.to_vec())
            .ok_or_else(|| WorkerError::Data("tile shape".into()))?;
        let path = dir.join(format!("tile_{i:05}.{}", if i % 2 == 0 { "png" } else { "jpg" }));
        img.save(&path).map_err(|e| WorkerError::Data(format!("{}: {e}", path.display())))
    })
}
