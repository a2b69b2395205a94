//! Write a preview PNG of the data pipeline: rows of [tile, view 1, view 2].
//!
//! cargo run --release -p moco-worker --example data_preview -- --out docs/synthetic_preview.png
//! cargo run --release -p moco-worker --example data_preview -- --tiles-only --rows 6 --per-row 8 --out tiles.png

use clap::Parser;
use moco_proto::config::AugConfig;
use moco_worker::data::preview::{write_png, write_preview};
use moco_worker::data::synthetic::NUM_CLASSES;
use moco_worker::data::{Augmenter, Dataset, SyntheticDataset, SyntheticSpec};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Output PNG.
    #[arg(long, default_value = "synthetic_preview.png")]
    out: PathBuf,
    /// Augmented view size (pixels); 88 keeps the default preview under 300 KB for the README.
    #[arg(long, default_value_t = 88)]
    size: usize,
    /// Stored tile size of the synthetic dataset (pixels).
    #[arg(long, default_value_t = 96)]
    tile: usize,
    /// Rows of triplets (or of tiles with --tiles-only).
    #[arg(long, default_value_t = 3)]
    rows: usize,
    /// Triplets per row.
    #[arg(long, default_value_t = 2)]
    per_row: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Only the tiles, `per_row` per row, grouped by class (no augmentation).
    #[arg(long)]
    tiles_only: bool,
}

fn main() -> moco_worker::Result<()> {
    let a = Args::parse();
    let n = a.rows * a.per_row;
    let ds = SyntheticDataset::new(SyntheticSpec { count: n.max(NUM_CLASSES) * 2, size: a.tile }, a.seed)?;
    // Triplets show tiles 0, 1, 2, ... (tile i has class i % 6, so six in a row cover every
    // class); the tile grid shows one class per row.
    let indices: Vec<u32> = if a.tiles_only {
        (0..n).map(|k| ((k % a.per_row) * NUM_CLASSES + (k / a.per_row) % NUM_CLASSES) as u32).collect()
    } else {
        (0..n as u32).collect()
    };
    if a.tiles_only {
        let s = a.tile as u32;
        let mut img = image::RgbImage::new(a.per_row as u32 * (s + 2), a.rows as u32 * (s + 2));
        for (k, &i) in indices.iter().enumerate() {
            let t = ds.tile(i as usize)?;
            let (x0, y0) = ((k % a.per_row) as u32 * (s + 2), (k / a.per_row) as u32 * (s + 2));
            for y in 0..s {
                for x in 0..s {
                    let p = [0, 1, 2].map(|b| (t.unit(y as usize, x as usize, b) * 255.0).round() as u8);
                    img.put_pixel(x0 + x, y0 + y, image::Rgb(p));
                }
            }
        }
        write_png(&a.out, &img)?;
    } else {
        let aug = Augmenter::new(&AugConfig::default(), a.size, a.seed, ds.stats())?;
        write_preview(&a.out, &ds, &aug, a.epoch, &indices, a.per_row)?;
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
