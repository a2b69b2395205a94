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
    /// Seconds a ring neighbour may send nothing before this worker stops, naming its rank and
    /// node (a cut link, a frozen node). Must exceed the longest pause between collectives
    /// (a checkpoint save, an evaluation).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub peer_timeout: u64,
}

/// Everything a training worker needs.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Tiles: `synthetic[:N[:SIZE]]` (procedural aerial tiles) or a folder of images
    /// [default: a resumed run's own data, else synthetic].
    #[arg(long)]
    pub data: Option<String>,
    /// Run folder: metrics.jsonl, checkpoints, report.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop after this many optimiser steps (default: the config's epochs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// cpu, cuda or auto (CUDA when a driver is found).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// NCCL for the gradient all-reduce and the key all-gather between GPUs: `auto` (when
    /// every rank can load libnccl) or `off` (the TCP ring through host memory).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    pub nccl: String,
    /// Seconds NCCL work may make no progress (a peer hung or dead) before the watchdog aborts
    /// the communicator and this worker stops with an error (the launcher passes its
    /// --heartbeat-timeout).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub nccl_timeout: u64,
    /// Gradient floats per all-reduce bucket that starts while the backward still runs (NCCL:
    /// on a second stream; the ring: on a thread); 0 = one all-reduce after the backward.
    #[arg(long, default_value_t = crate::moco::grad_sync::BUCKET_FLOATS)]
    pub grad_bucket: usize,
    /// GPU number on this machine (default: the local rank, one worker per GPU).
    #[arg(long)]
    pub gpu: Option<usize>,
    /// Most device memory this worker may hold, e.g. 8GiB (emulates an 8 GB card on a bigger
    /// one); a config whose memory plan does not fit is refused before training starts.
    #[arg(long, value_parser = crate::plan::parse_vram)]
    pub vram_limit: Option<u64>,
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
    pub run: RunArgs,
    #[command(flatten)]
    pub group: GroupArgs,
}

/// Checkpoints, resume, evaluation during training and the trace: the same flags on the
/// launcher, which passes them on to every worker (`to_args`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Checkpoints, evaluation and tracing")]
pub struct RunArgs {
    /// Save a checkpoint every N epochs (0: only at the end and when stopped by a signal).
    #[arg(long, default_value_t = 10, value_name = "EPOCHS")]
    pub checkpoint_every: u64,
    /// Keep the newest K checkpoints (0: keep all).
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub keep_last: usize,
    /// Continue the run in RUN_DIR from its newest checkpoint (automatic when the run folder
    /// already holds one); the run folder defaults to RUN_DIR.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "init_from")]
    pub resume: Option<PathBuf>,
    /// Start a NEW run from a checkpoint's weights only (e.g. another preset); the optimiser
    /// state, queue and counters start fresh, and a warning lists what was not carried over.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init_from: Option<PathBuf>,
    /// Labelled tiles (DIR/<class>/<image>, or `synthetic[:N[:SIZE]]`) for a kNN accuracy
    /// during training, every --eval-every epochs.
    #[arg(long, value_name = "DIR|synthetic")]
    pub eval_data: Option<String>,
    /// Epochs between kNN evaluations with --eval-data.
    #[arg(long, default_value_t = 1, value_name = "EPOCHS")]
    pub eval_every: u64,
    /// Stop the run as diverged after this many optimiser steps in a row were skipped for
    /// non-finite gradients (0: never).
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub max_skipped_steps: u64,
    /// Stop the run as diverged when the AMP loss scale falls below this.
    #[arg(long, default_value_t = 1.0, value_name = "SCALE")]
    pub min_loss_scale: f32,
    /// Write a Chrome-trace JSON of every phase of every step (per rank: FILE.rank<r>.json on
    /// several ranks); open it in chrome://tracing or Perfetto.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

impl RunArgs {
    /// The same flags as command-line words (the launcher passes them to its workers).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--checkpoint-every".to_string(),
            self.checkpoint_every.to_string(),
            "--keep-last".into(),
            self.keep_last.to_string(),
            "--eval-every".into(),
            self.eval_every.to_string(),
            "--max-skipped-steps".into(),
            self.max_skipped_steps.to_string(),
            "--min-loss-scale".into(),
            self.min_loss_scale.to_string(),
        ];
        let mut path = |flag: &str, p: &Option<PathBuf>| {
            if let Some(p) = p {
                v.extend([flag.to_string(), p.display().to_string()]);
            }
        };
        path("--resume", &self.resume);
        path("--init-from", &self.init_from);
        path("--trace", &self.trace);
        if let Some(d) = &self.eval_data {
            v.extend(["--eval-data".to_string(), d.clone()]);
        }
        v
    }
}
