//! The emulated CUDA device: stand-in `libcuda`, `libcublas`, `libcudnn` and `libnccl` that run
//! the project's real CUDA code on the CPU, so that every line of the CUDA backend executes in
//! CI on machines without a GPU.
//!
//! One shared library (`libmoco_emu.so`) exports the symbols of all four APIs that the project
//! calls through cudarc; `scripts/emu_env.sh` links it under the four names cudarc dlopen()s,
//! and a test puts that folder first on `LD_LIBRARY_PATH`. Because the four names resolve to one
//! file, the loader maps it once and the four "libraries" share one state (device memory,
//! streams, counters). It is never linked into the product.
//!
//! What it emulates, and how (see the README's CUDA section for what this proves):
//! - `device`: one configurable device (name, memory, compute capability, SM count).
//! - `memory`: device memory is host memory, each allocation flush against a guard page, so an
//!   out-of-bounds access faults; `fault` turns that fault into a report naming the kernel.
//! - `stream`: work queued on a stream runs only when the host waits for it (or when a
//!   collective must run, see `nccl`), so a host read before the wait sees stale bytes.
//! - `module`, `kernels`: the entry names of the real CUBIN that NVRTC produced, bound to host
//!   twins of the same `.cu` sources compiled with the system C++ compiler (`cxx/`).
//! - `cublas`, `cudnn`: the documented semantics, written independently of the CPU reference.
//!   `elem` holds their fp16/fp32 loads and stores, `handles` their opaque-handle tables.
//! - `nccl`: collectives between processes (ranks are processes) over TCP on 127.0.0.1.
//! - `counters`: host waits, bytes each way, launches and library calls, written as JSON.
//!
//! The exported functions are C ABI entry points whose contracts are NVIDIA's documentation;
//! they are `unsafe` because they take raw pointers from the caller.
#![allow(non_snake_case, non_camel_case_types, clippy::missing_safety_doc)]

pub mod counters;
pub mod cublas;
pub mod cudnn;
pub mod device;
pub mod driver;
pub mod elem;
pub mod error;
pub mod fault;
pub mod handles;
pub mod kernels;
pub mod memory;
pub mod module;
pub mod nccl;
pub mod stream;

pub use error::EmuError;
