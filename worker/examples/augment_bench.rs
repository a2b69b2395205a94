//! Two-view augmentation throughput on this machine: pairs per second at 64 px (tiny preset)
//! and 224 px, on one thread and on all threads, plus synthetic-tile rendering speed.
//!
//! cargo run --release -p moco-worker --example augment_bench [-- --seconds 3]

use moco_proto::config::AugConfig;
use moco_worker::data::{Augmenter, Dataset, Sampler, SyntheticDataset, SyntheticSpec, TwoViewBatch};
use std::time::{Duration, Instant};

fn main() -> moco_worker::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(3.0),
        None => 3.0,
    };
    let threads = rayon::current_num_threads();
    let t = Instant::now();
    let ds = SyntheticDataset::new(SyntheticSpec::default(), 0)?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "synthetic: {} tiles of {} px rendered in {:.2} s on {threads} threads ({:.0} tiles/s)",
        ds.len(),
        ds.spec().size,
        dt,
        ds.len() as f64 / dt
    );
    let batch = 64;
    for size in [64usize, 224] {
        let aug = Augmenter::new(&AugConfig::default(), size, 0, ds.stats())?;
        for pool_threads in [1, threads] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(pool_threads)
                .build()
                .map_err(|e| moco_worker::WorkerError::Data(format!("thread pool: {e}")))?;
            let sampler = Sampler::new(ds.len(), batch, 0, 1, 0)?;
            let mut out = TwoViewBatch::new(batch, size, 3);
            let mut batches = sampler.iter_from(Default::default())?;
            // Warm-up: first touch of buffers and caches.
            let (pos, idx) = batches.next().expect("endless");
            out.fill(&pool, &ds, &aug, pos.epoch, &idx)?;
            let (start, mut pairs) = (Instant::now(), 0usize);
            while start.elapsed() < Duration::from_secs_f64(seconds) {
                let (pos, idx) = batches.next().expect("endless");
                out.fill(&pool, &ds, &aug, pos.epoch, &idx)?;
                pairs += idx.len();
            }
            let rate = pairs as f64 / start.elapsed().as_secs_f64();
            println!(
                "augment {size:>3} px, batch {batch}, {pool_threads:>2} thread(s): {rate:>8.0} pairs/s \
                 ({:.2} ms per pair per thread)",
                1e3 * pool_threads as f64 / rate
            );
        }
    }
    Ok(())
}
