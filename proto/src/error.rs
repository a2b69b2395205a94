//! The one error type of moco-proto.

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A config file or flag could not be read (syntax, unknown key, wrong type).
    #[error("{0}")]
    Config(String),
    /// The launch environment (RANK, WORLD_SIZE, SLURM_*, ...) is inconsistent.
    #[error("launch environment: {0}")]
    Env(String),
}
