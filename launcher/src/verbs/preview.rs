//! `launcher preview`: a PNG grid of a few tiles, each beside its two augmented views, so a user
//! sees what the network will see before a long run. Opens `--data` exactly as training does
//! (a folder is cached on first use and its report printed), with the preset's crop size and
//! augmentations, or those of `--aug POLICY` and single [aug] flags.

use crate::error::Result;
use clap::Args;
use moco_worker::config_args::ConfigArgs;
use moco_worker::data::folder::DataArgs;
use moco_worker::data::preview::write_preview;
use moco_worker::data::Augmenter;
use moco_worker::session::data::open_data;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// A folder of tiles, or `synthetic[:N[:SIZE]]`.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// The PNG to write.
    #[arg(long, default_value = "preview.png")]
    pub out: PathBuf,
    /// Tiles to show, spread evenly through the dataset.
    #[arg(long, default_value_t = 8)]
    pub tiles: usize,
    /// [tile | view 1 | view 2] triplets per row.
    #[arg(long, default_value_t = 2)]
    pub per_row: usize,
    /// Epoch whose augmentations are drawn (each epoch draws new views).
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    #[command(flatten)]
    pub data_flags: DataArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(a: &PreviewArgs) -> Result<()> {
    let cfg = a.config.build()?;
    let ds = open_data(&a.data, &a.data_flags, &cfg, None, true)?;
    let aug = Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats())?;
    let n = a.tiles.clamp(1, ds.len());
    let indices: Vec<u32> = (0..n).map(|k| (k * ds.len() / n) as u32).collect();
    write_preview(&a.out, &*ds, &aug, a.epoch, &indices, a.per_row)?;
    let shown = match ds.bands() {
        1 | 2 => "band 0 as grey".to_string(),
        3 => "RGB".to_string(),
        b => format!("bands 0,1,2 of {b} as RGB"),
    };
    say!(
        "wrote {}: {n} of {} tiles as [tile | view 1 | view 2] at {} px ({shown}; preset {}, aug {}, epoch {})",
        a.out.display(),
        ds.len(),
        cfg.image_size,
        a.config.preset_name(),
        a.config.aug.as_deref().unwrap_or("of the preset"),
        a.epoch
    );
    Ok(())
}
