//! The one error type of the launcher.

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error(transparent)]
    Worker(#[from] moco_worker::WorkerError),
    #[error(transparent)]
    Proto(#[from] moco_proto::ProtoError),
}

pub type Result<T> = std::result::Result<T, LauncherError>;
