//! The one error type of moco-worker.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Config(#[from] moco_proto::ProtoError),
    #[error(transparent)]
    Kernel(#[from] moco_kernels::KernelError),
    /// A collective operation failed (a peer died, timed out or spoke garbage).
    #[error("collective: {0}")]
    Collective(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A fixture, checkpoint or other file is malformed.
    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },
    /// A numerical invariant failed at run time (e.g. the loss went non-finite with AMP off).
    #[error("{0}")]
    Numeric(String),
    /// Bad input to the data pipeline.
    #[error("data: {0}")]
    Data(String),
}

pub type Result<T> = std::result::Result<T, WorkerError>;

impl WorkerError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WorkerError::Io { context: context.into(), source }
    }
}
