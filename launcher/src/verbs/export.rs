//! `launcher export`: a checkpoint's weights as one safetensors file for PyTorch
//! (`moco_worker::checkpoint::export` holds the names and layouts).

use crate::error::Result;
use clap::{Args, ValueEnum};
use moco_worker::checkpoint::{write_export, Checkpoint, ExportFormat};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// torchvision's resnet50 names, NCHW fp32, no fc (the query encoder's backbone).
    Torchvision,
    /// MoCo v3's `module.base_encoder.` / `module.predictor.` / `module.momentum_encoder.` keys.
    MocoV3,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A run folder (its newest checkpoint), RUN/last, or a step folder.
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long, default_value = "resnet50.safetensors")]
    pub out: PathBuf,
    /// Key names and networks in the file.
    #[arg(long, value_enum, default_value = "torchvision")]
    pub format: Format,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let ck = Checkpoint::resolve(&a.checkpoint)?;
    let w = ck.load_weights()?;
    let format = match a.format {
        Format::Torchvision => ExportFormat::Torchvision,
        Format::MocoV3 => ExportFormat::MocoV3,
    };
    let n = write_export(&w, format, &a.out, &ck.dir.display().to_string())?;
    say!("wrote {n} tensors of {} (step {}) to {}", ck.dir.display(), ck.step(), a.out.display());
    match a.format {
        Format::Torchvision => say!(
            "load it with:\n  from safetensors.torch import load_file; from torchvision.models import resnet50\n  \
             m = resnet50(); print(m.load_state_dict(load_file({:?}), strict=False))  # missing: fc.weight, fc.bias",
            a.out.display().to_string()
        ),
        Format::MocoV3 => say!(
            "keys follow MoCo v3's MoCo_ResNet under DDP (module.base_encoder.*, module.predictor.*, \
             module.momentum_encoder.*), as its main_lincls.py reads them"
        ),
    }
    if w.topo.dims.in_channels != 3 {
        say!(
            "note: the network takes {} bands; replace torchvision's conv1 with a {}-channel conv before loading",
            w.topo.dims.in_channels, w.topo.dims.in_channels
        );
    }
    Ok(())
}
