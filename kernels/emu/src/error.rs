//! The crate's one error type. Inside the emulator errors carry a message for stderr; at the C
//! boundary each API turns them into its own status code (`CUresult`, `cudnnStatus_t`, ...).

use cudarc::driver::sys::CUresult;

#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// A call the real library would refuse, with the code it would return.
    #[error("{msg}")]
    Driver { code: CUresult, msg: String },
    /// Work that failed while a stream ran it (a collective whose peer died, ...).
    #[error("{0}")]
    Op(String),
}

impl EmuError {
    pub fn driver(code: CUresult, msg: impl Into<String>) -> Self {
        EmuError::Driver { code, msg: msg.into() }
    }

    /// The `CUresult` a driver call returns for this error.
    pub fn code(&self) -> CUresult {
        match self {
            EmuError::Driver { code, .. } => *code,
            EmuError::Op(_) => CUresult::CUDA_ERROR_LAUNCH_FAILED,
        }
    }
}

pub type Result<T> = std::result::Result<T, EmuError>;

/// Prints what went wrong, as the real libraries' logs would, and returns the status. Every
/// refusal is printed: a test that sees only a status code cannot tell which check failed.
pub fn report(api: &str, err: &EmuError) {
    eprintln!("moco-emu: {api}: {err}");
}
