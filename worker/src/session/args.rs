//! The worker's command line (also what the launcher passes to each worker it spawns).

use crate::config_args::ConfigArgs;
use clap::Args;
use std::path::PathBuf;

/// Where a worker sits in its group; each flag falls back to the environment contract
/// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR:MASTER_PORT, RUN_ID, or SLURM_*).
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "Group (flags override RANK/WORLD_SIZE/... and SLURM_*)")]
pub struct GroupArgs {
    /// This worker's rank (0-based).
    #[arg(long)]
    pub rank: Option<u32>,
    /// Number of workers in the run.
    #[arg(long)]
    pub world_size: Option<u32>,
    /// Index among the workers on this machine (selects the GPU).
    #[arg(long)]
    pub local_rank: Option<u32>,
    /// Rendezvous address HOST:PORT (the launcher, or rank 0 when started by hand or srun).
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// Run id shared by every worker of the run (rejects workers of other runs).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Seconds to wait for every worker to join.
    #[arg(long, default_value_t = 120)]
    pub join_timeout: u64,
}

/// Everything a training worker needs.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Tiles: `synthetic[:N[:SIZE]]` (procedural aerial tiles) or a folder of images.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Run folder: metrics.jsonl, checkpoints, report.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop after this many optimiser steps (default: the config's epochs).
    #[arg(long)]
    pub steps: Option<u64>,
    /// cpu, cuda or auto (CUDA when a driver is found).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute threads of this worker (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Augmentation threads of this worker's loader.
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    /// Print a progress line every N steps (0 = never; the launcher shows its own).
    #[arg(long, default_value_t = 1)]
    pub log_every: u64,
    // Image-folder flags (`--bands`, `--strict-data`, `--cache-dir`); before `group`, whose
    // help heading then follows.
    #[command(flatten)]
    pub data_flags: crate::data::folder::DataArgs,
    #[command(flatten)]
    pub group: GroupArgs,
}
