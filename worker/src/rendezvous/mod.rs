//! Rendezvous and control: how workers find each other and stay in touch with the launcher.
//!
//! - `host`: accepts the workers, assigns ranks, sends each its Setup (launcher or rank 0).
//! - `client`: a worker joining a run.
//! - `control`: after the Setup, heartbeats and metrics to the launcher, Stop from it.

pub mod client;
pub mod control;
pub mod host;

use crate::error::WorkerError;
use moco_proto::ProtoError;

/// A wire error in the rendezvous, with what was being done.
pub(crate) fn proto_err(doing: &str, e: ProtoError) -> WorkerError {
    WorkerError::Collective(format!("{doing}: {e}"))
}
