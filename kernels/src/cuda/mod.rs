//! The CUDA backend's hand-written kernels: sources, NVRTC compilation, module loading and
//! one typed launch function per kernel.
//!
//! STATUS: compiled, not yet run on a GPU. Everything here builds and its CUDA sources compile
//! with NVRTC on machines without a GPU (`tests/cuda_compile.rs`), but no kernel has been
//! launched yet, and none is "done" until a GPU test compares it with the CPU reference.
//!
//! Nothing here links CUDA: cudarc loads libcuda / libnvrtc / libcudnn / libcublas at run
//! time. Call [`probe::probe_driver`] before any driver call (cudarc panics when libcuda is
//! absent).
//!
//! - `sources`, `nvrtc`, `module`: the embedded `.cu` files, their NVRTC compilation to a CUBIN
//!   for the device's architecture, and [`Kernels`], every family loaded for one device.
//! - `launch`: kernel signatures (`KernelDef`), the checked `launch!` macro, grid policy.
//! - one file per kernel family, named like its `.cu` file: typed launch functions.
//! - `cudnn_conv`, `cublas`: convolutions and GEMMs through cuDNN and cuBLAS.
//!
//! The `Backend` implementation for CUDA (buffers, the arena, wiring these together) is not
//! written yet.

pub mod launch;
pub mod module;
pub mod nvrtc;
pub mod probe;
pub mod sources;

pub mod batchnorm;
pub mod cast;
pub mod cublas;
pub mod cudnn_conv;
pub mod elementwise;
pub mod l2norm;
pub mod optim;
pub mod pool;
pub mod queue;
pub mod softmax;

pub use module::{Family, Kernels, FAMILIES};
pub use probe::probe_driver;
