//! The CUDA backend: [`CudaBackend`] (the `Backend` op set on one GPU), its hand-written
//! kernels, cuDNN convolutions, cuBLAS GEMMs, device memory arena and an NCCL wrapper.
//!
//! STATUS: compiled, NOT YET RUN ON A GPU. Everything here builds on machines without CUDA,
//! the `.cu` sources compile with NVRTC for sm_80/86/90 (`tests/cuda_compile.rs`), and the
//! device-free logic (arena accounting, grids, chunking, GEMM mappings, deferred errors) is
//! unit-tested; no kernel has been launched yet. An op counts as done only when
//! `selftest::selftest_cuda` (`worker selftest --device cuda`) has compared it with the CPU
//! reference on a GPU (scripts/gpu_verify.sh runs it).
//!
//! Nothing here links CUDA: cudarc loads libcuda / libnvrtc / libcudnn / libcublas / libnccl
//! at run time. [`CudaBackend::new`] probes for the driver first ([`probe::probe_driver`]),
//! because cudarc panics when libcuda is absent.
//!
//! - `backend/`: [`CudaBackend`] and the op implementations, one file per op family.
//! - `buffer`, `memory`, `arena`: typed device buffers and views; the arena allocator with
//!   the `--vram-limit` budget and the measured peak.
//! - `sources`, `nvrtc`, `module`: the embedded `.cu` files, their NVRTC compilation to a CUBIN
//!   for the device's architecture, and [`Kernels`], every family loaded for one device.
//! - `launch`: kernel signatures (`KernelDef`), the checked `launch!` macro, grid policy.
//! - one file per kernel family, named like its `.cu` file: typed launch functions.
//! - `cudnn_conv`, `cublas`: convolutions and GEMMs through cuDNN and cuBLAS.
//! - `nccl`: an NCCL communicator over device buffers, with readable errors.

pub mod arena;
pub mod backend;
pub mod buffer;
pub mod emulator;
pub mod launch;
pub mod libs;
pub mod memory;
pub mod module;
pub mod nccl;
pub mod nccl_comm;
pub mod nvrtc;
pub mod probe;
pub mod sources;

pub mod batchnorm;
pub mod cast;
pub mod cublas;
pub mod cudnn_conv;
pub mod doctor;
pub mod elementwise;
pub mod l2norm;
pub mod optim;
pub mod pool;
pub mod queue;
pub mod softmax;

pub use arena::MemoryStats;
pub use backend::{ConvPlanInfo, CudaBackend, CudaOptions};
pub use buffer::{CudaBuf, DevView, DevViewMut};
pub use launch::Dtype;
pub use module::{Family, Kernels, FAMILIES};
pub use probe::probe_driver;
