//! What can go wrong in a collective, named so that the launcher's report says which rank.

use std::time::Duration;

/// Failure of a collective operation or of setting the ring up.
///
/// After any error a `RingCollective` is broken for good (its byte streams are in an unknown
/// state); every later call returns [`CollectiveError::Broken`]. The group must restart.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The peer closed its connection or its process died.
    #[error("rank {rank} disconnected during {during} (its process exited or failed; see its log)")]
    PeerDisconnected { rank: usize, during: &'static str },
    /// No byte moved to or from a peer for `after`.
    #[error("rank {rank} made no progress for {after:?} during {during} (hung, or far behind the others)")]
    Timeout { rank: usize, after: Duration, during: &'static str },
    /// A peer sent something other than what this operation expects: the ranks called
    /// different collectives, or the same one with different lengths.
    #[error("protocol violation from rank {rank}: {detail}")]
    Protocol { rank: usize, detail: String },
    /// Setting up the ring failed: wrong run, wrong rank, version mismatch, nobody answered.
    #[error("ring setup: {0}")]
    Handshake(String),
    /// The caller passed inconsistent lengths or ranks (a bug in the caller, not a peer).
    #[error("bad collective call: {0}")]
    BadArgument(String),
    /// An earlier collective failed; the ring cannot be used any more.
    #[error("the ring is broken by an earlier error: {0}")]
    Broken(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CollectiveError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CollectiveError::Io { context: context.into(), source }
    }
}

impl From<CollectiveError> for crate::error::WorkerError {
    fn from(e: CollectiveError) -> Self {
        crate::error::WorkerError::Collective(e.to_string())
    }
}
