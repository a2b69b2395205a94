//! Checkpoints: save, find, verify, resume, `--init-from`, and export to PyTorch's names.
//!
//! On disk, inside the run folder:
//! ```text
//! RUN_DIR/checkpoints/latest                      "step-000123": the newest committed step
//! RUN_DIR/checkpoints/step-000123/rank-0.safetensors   shared state + rank 0's own state
//! RUN_DIR/checkpoints/step-000123/rank-1.safetensors   rank 1's own state (BN stats, queue shard)
//! RUN_DIR/checkpoints/step-000123/meta.json       written last: marks the checkpoint complete
//! ```
//! Tensor names and layout: `snapshot` (our layout, conv weights OHWI; export converts).
//! `meta.json`: `meta::CheckpointMeta` (format, version, run id, world, step, epoch, micro-batch
//! counter, data position, loss scaler, resolved config, topology summary, band statistics,
//! length and xxh3 checksum of every rank file).
//!
//! Randomness needs no saved generator state: init and queue come from the config's seed, the
//! data order from (seed, epoch), every augmentation from (seed, epoch, dataset index, view),
//! and the key-side shuffle from (seed, micro-batch counter). Restoring the counters and the
//! data position therefore continues the exact random streams.
//!
//! Entry points for the trainer (all ranks call them at the same step):
//! - `save(&moco, comm, &SaveRequest)` at `CheckpointPolicy::due` steps, at the end, and after
//!   a stop request (SIGINT/SIGTERM/SIGUSR1 end the step; then save; then exit);
//! - at start: `pick(out, step_dir, resume_run)` (the newest intact checkpoint, skipping
//!   damaged ones with a warning, or exactly a named step folder; `pick::ResumeTarget` reads
//!   what `--resume` names) then `resume(&mut moco, &ck, rank, world)` which returns the
//!   loader's start position; or
//!   `Checkpoint::resolve(path)` + `init_from(&mut moco, &ck)` for `--init-from`, printing its
//!   warning.
//!
//! For the launcher: `Checkpoint::resolve` + `Checkpoint::load_weights` + `write_export`.

pub mod atomic;
pub mod export;
pub mod load;
pub mod meta;
pub mod pick;
pub mod save;
pub mod snapshot;
pub mod tensors;

pub use export::{export_tensors, write_export, ExportFormat};
pub use load::{
    complete_checkpoints, find_latest, init_from, resume, Checkpoint, InitReport, Resumed, Weights,
};
pub use meta::{check_resume_config, CheckpointMeta, TopologySummary, FORMAT, VERSION};
pub use pick::{newest_intact, pick, Pick, ResumeTarget};
pub use save::{save, tidy, CheckpointPolicy, SaveRequest, Saved, CHECKPOINTS, LATEST, META};
pub use snapshot::Snapshot;
