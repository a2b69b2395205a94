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

/// The first config field where a worker's resolved config (JSON) differs from the host's, as
/// "field: this worker X, rank 0 Y"; None when they are the same.
pub(crate) fn config_difference(ours: &str, host: &str) -> Option<String> {
    if ours == host {
        return None;
    }
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null);
    let (a, b) = (parse(ours), parse(host));
    let field = match (&a, &b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
            .iter()
            .find(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: this worker {v}, rank 0 {}", b.get(k).cloned().unwrap_or_default())),
        _ => None,
    };
    Some(field.unwrap_or_else(|| "unreadable config".into()))
}
