//! The one error type of the launcher.

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error(transparent)]
    Worker(#[from] moco_worker::WorkerError),
    #[error(transparent)]
    Proto(#[from] moco_proto::ProtoError),
    /// Starting or talking to the workers failed.
    #[error("{0}")]
    Spawn(String),
    /// The worker group failed (the message names the rank, the cause and its output).
    #[error("{0}")]
    Group(String),
}

pub type Result<T> = std::result::Result<T, LauncherError>;
