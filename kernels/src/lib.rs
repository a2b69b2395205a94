//! moco-kernels: the op set of moco-rs, once per backend.
//!
//! - `backend`: the `Backend` trait, the narrow op set ResNet-50 + MoCo need.
//! - `cpu`: the plain-Rust, multi-threaded reference backend (every CUDA op is tested against it).
//! - `cuda`: hand-written CUDA kernels, NVRTC compilation and typed launches (compiled, not yet
//!   run on a GPU).
//! - `selftest`: every op run on two backends and compared (`worker selftest --device cuda`).
//! - `shapes`: shape descriptors shared by all backends.

pub mod backend;
pub mod cpu;
pub mod cuda;
pub mod error;
pub mod selftest;
pub mod shapes;

pub use backend::Backend;
pub use error::{KernelError, Result};
pub use shapes::{ConvShape, PoolShape};
