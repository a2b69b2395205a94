//! `launcher embed`: backbone features of every tile (resize, centre crop, normalise with the
//! run's statistics) to a safetensors file: `features` [N, D], `indices`, `labels` (-1 without).

use super::evaluation::{load, Progress};
use crate::error::Result;
use clap::Args;
use moco_kernels::cpu::Cpu;
use moco_worker::data::folder::DataArgs;
use moco_worker::eval::{embed, write_embeddings};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
    /// A run folder (its newest checkpoint), RUN/last, or a step folder.
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Tiles: a folder (class sub-folders optional) or `synthetic[:N[:SIZE]]`.
    #[arg(long, value_name = "DIR|synthetic")]
    pub data: String,
    /// The safetensors file to write.
    #[arg(long, default_value = "features.safetensors")]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Crop size fed to the network [default: the run's image size].
    #[arg(long)]
    pub size: Option<usize>,
    #[command(flatten)]
    pub data_flags: DataArgs,
}

pub fn run(a: &EmbedArgs) -> Result<()> {
    if a.batch == 0 || a.size.is_some_and(|s| s < 32) {
        return Err(moco_worker::WorkerError::Data(
            "--batch must be at least 1 and --size at least 32".into(),
        )
        .into());
    }
    let l = load(&a.checkpoint, &a.data, &a.data_flags, a.size)?;
    let be = Cpu { amp: false };
    let mut p = Progress::default();
    let e = embed(&be, &l.weights, &*l.ds, &l.tf, a.batch, &mut |d, t| p.show("features", d, t))?;
    write_embeddings(&e, &a.out, &l.ck.dir.display().to_string())?;
    say!("wrote {} x {} features of {} to {}", e.len(), e.dim, l.ck.dir.display(), a.out.display());
    Ok(())
}
