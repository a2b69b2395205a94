//! The CPU reference backend: plain-Rust fp32, multi-threaded with rayon, GEMMs through the
//! `gemm` crate's single-threaded kernels on a fixed tile grid.
//!
//! Every op is a `pub` free function on slices, in a file named after its family, so tests,
//! benchmarks and the CUDA self-test call the same reference the [`Cpu`] backend delegates to.
//! Shapes are checked with `assert!`: a mismatch is a programming error in the caller (these
//! are internal APIs), reported with the op's name rather than as silent corruption.
//!
//! Determinism: every split of work (GEMM tiles, conv chunks, reduction chunks) depends on the
//! shape only, never on the thread count, and partial results are combined in a fixed order,
//! so a step is bit-identical from run to run on one machine whatever the number of threads
//! (tests/cpu/determinism.rs). Across machines, the GEMM kernels dispatch on the CPU's
//! instruction set and cache sizes, so results agree only to rounding.
//!
//! - `gemm`: the bounds-checked strided GEMM (single-threaded and tile-parallel).
//! - `im2col`, `conv`: convolutions (1x1 stride 1 straight on the activations, the rest via
//!   im2col in cache-sized chunks).
//! - `batchnorm`, `pool`, `linear`, `elementwise`, `l2norm`, `softmax`, `optim`, `queue`: the op
//!   families.
//! - `scratch`: the pooled scratch buffers and the fixed work splits of reductions.
//! - `simd`: runtime AVX2 dispatch for the hand-written loops (bit-identical results).
//! - `host_buf`: [`HostBuf`], the backend's buffer, recycled through a free list on drop.
//! - `backend`: [`Cpu`], the `Backend` implementation.

pub mod backend;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod host_buf;
pub mod im2col;
pub mod l2norm;
pub mod linear;
pub mod optim;
pub mod pool;
pub mod queue;
pub mod scratch;
pub mod simd;
pub mod softmax;

pub use backend::Cpu;
pub use host_buf::HostBuf;
