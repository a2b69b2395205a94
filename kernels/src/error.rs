//! The one error type of moco-kernels.

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("no CUDA driver found ({0}); use --device cpu, or install the NVIDIA driver")]
    NoCuda(String),
    #[error("CUDA error in {op}: {detail}")]
    Cuda { op: &'static str, detail: String },
    #[error("kernel compilation failed for {kernel} ({arch}): {log}")]
    Compile { kernel: String, arch: String, log: String },
    #[error("NVRTC, the CUDA runtime compiler, is unavailable: {0}")]
    NoNvrtc(String),
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
}

pub type Result<T> = std::result::Result<T, KernelError>;
