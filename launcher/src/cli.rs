//! The command line: long flags only. Training is the default verb (no subcommand), so
//! `launcher --preset tiny --device cpu ...` trains; `plan` and `presets` answer questions
//! without touching a GPU. Every verb that builds a config flattens the same `ConfigArgs`
//! as the worker binary, so a knob has one name everywhere.

use clap::{Args, Parser, Subcommand, ValueEnum};
use moco_worker::config_args::ConfigArgs;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "launcher",
    version,
    about = "Hybrid MoCo (v3 heads + v2 queue) pretraining of ResNet-50, from a laptop CPU to GPU clusters",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Verb>,
    /// Training flags (used when no verb is given).
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Train (the same as giving no verb).
    Train(Box<TrainArgs>),
    /// Will it fit? Per-GPU memory plan from the model's shapes, verdict against --vram.
    Plan(PlanArgs),
    /// List the presets with their effective batch, scaled lr and keys per step.
    Presets(PresetsArgs),
    /// Write a PNG of a few tiles beside their two augmented views (what the network sees).
    Preview(crate::verbs::preview::PreviewArgs),
    /// Time the MoCo step in this process: median step, images/s, peak memory, phase shares.
    Bench(Box<crate::verbs::bench::BenchArgs>),
    /// Write a checkpoint's weights for PyTorch (torchvision or MoCo v3 key names).
    Export(crate::verbs::export::ExportArgs),
    /// kNN and linear-probe accuracy on labelled tiles, next to a randomly initialised network.
    Eval(crate::verbs::eval::EvalArgs),
    /// Backbone features of every tile to a safetensors file.
    Embed(crate::verbs::embed::EmbedArgs),
    /// Can training start on this machine's GPUs? Driver, GPUs, libraries (or the command that
    /// installs them), NVRTC, cuDNN, cuBLAS, NCCL and the memory plan; exit 0 only when it can.
    Doctor(crate::verbs::doctor::DoctorArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// CUDA when a driver is found, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// GPUs on this node (one rank each).
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Where the step runs.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// CPU worker processes (ranks) with --device cpu.
    #[arg(long)]
    pub workers: Option<usize>,
    /// A folder of tiles, or `synthetic[:N[:SIZE]]` for generated aerial tiles.
    #[arg(long)]
    pub data: Option<String>,
    /// Run folder (checkpoints, metrics, plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop after this many optimiser steps (default: the preset's epochs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Rendezvous port on this machine (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub master_port: u16,
    /// Rendezvous address to bind (127.0.0.1 keeps the run private to this machine).
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Restart the whole group this many times after a failure (from the last checkpoint).
    #[arg(long, default_value_t = 0)]
    pub max_restarts: u32,
    /// Seconds without a heartbeat after which a worker counts as hung.
    #[arg(long, default_value_t = 60)]
    pub heartbeat_timeout: u64,
    /// Compute threads per worker (default: the cores divided among the workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run each worker under `nsys profile` (reports in RUN_DIR/logs).
    #[arg(long)]
    pub nsys: bool,
    /// NCCL between the GPUs for gradients and keys: `auto` (when every rank can load
    /// libnccl) or `off` (the TCP ring through host memory).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    pub nccl: String,
    /// Gradient floats per all-reduce bucket that starts while the backward still runs (NCCL:
    /// on a second stream; the ring: on a thread); 0 = one all-reduce after the backward.
    #[arg(long, default_value_t = moco_worker::moco::grad_sync::BUCKET_FLOATS)]
    pub grad_bucket: usize,
    /// Most GPU memory each worker may hold, e.g. 8GiB (emulates 8 GB cards on bigger ones); a
    /// config whose memory plan does not fit is refused before any worker starts.
    #[arg(long, value_parser = moco_worker::plan::parse_vram)]
    pub vram_limit: Option<u64>,
    #[command(flatten)]
    pub data_flags: moco_worker::data::folder::DataArgs,
    #[command(flatten)]
    pub run: moco_worker::session::args::RunArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl TrainArgs {
    /// Ranks of the run: CPU workers on the CPU, GPUs otherwise (1 when not given).
    pub fn world(&self) -> usize {
        match self.device {
            Device::Cpu => self.workers.unwrap_or(1),
            Device::Cuda => self.gpus.unwrap_or(1),
            Device::Auto => self.gpus.or(self.workers).unwrap_or(1),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// GPUs (ranks) to plan for [default: the preset's own count].
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Memory budget per GPU, e.g. 8GiB, 8GB, 8192MiB.
    #[arg(long, default_value = "8GiB", value_parser = moco_worker::plan::parse_vram)]
    pub vram: u64,
    /// Images in the dataset [default: the user's ~2,000 tiles, or what --data holds].
    #[arg(long)]
    pub dataset_size: Option<usize>,
    /// A folder of tiles or `synthetic[:N]`, to take the dataset size from.
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PresetsArgs {
    /// Show every preset on this many GPUs [default: each preset's own count].
    #[arg(long)]
    pub gpus: Option<usize>,
}
