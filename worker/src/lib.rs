//! moco-worker: everything one rank runs.
//!
//! - `config_args`: the config flags (preset -> --config file -> flags) both binaries share.
//! - `model`: ResNet-50 + projector + predictor on the `Backend` op set, flat parameters, recompute.
//! - `plan`: the memory plan computed from the model's shapes.
//! - `data`: synthetic aerial tiles, augmentations, image folders, cache, loader.
//! - `collective`: the `Collective` trait and its `local` and `ring` implementations.
//! - `moco`: the hybrid MoCo step: loss with the sharded queue, EMA, optimisers, loss scaling.
//! - `train`: one rank's training loop, schedules and metrics.
//! - `checkpoint`: save/resume (crash-safe, per-rank files), --init-from, export to torchvision names.
//! - `eval`: features, embeddings, weighted kNN, linear probe, collapse monitor.
//! - `report`: the run folder's plots and summary.md.
//! - `trace`: phase spans, their time totals, the Chrome trace (`--trace`), NVTX ranges.

pub mod checkpoint;
pub mod collective;
pub mod config_args;
pub mod data;
pub mod error;
pub mod eval;
pub mod moco;
pub mod model;
pub mod plan;
pub mod rendezvous;
pub mod report;
pub mod selftest;
pub mod session;
pub mod trace;
pub mod train;

pub use error::{Result, WorkerError};
