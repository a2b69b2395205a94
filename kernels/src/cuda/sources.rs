//! The CUDA C++ sources, embedded in the binary so a release build compiles them for whatever
//! GPU it finds, with no files to ship beside it.

/// One `.cu` (or header) file of `kernels/cu`.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name, also the NVRTC program name that appears in compiler messages.
    pub file: &'static str,
    pub text: &'static str,
}

/// Helpers every family includes as `#include "common.cuh"`, handed to NVRTC in memory.
pub const COMMON_HEADER: KernelSource =
    KernelSource { file: "common.cuh", text: include_str!("../../cu/common.cuh") };

pub const BATCHNORM: KernelSource =
    KernelSource { file: "batchnorm.cu", text: include_str!("../../cu/batchnorm.cu") };
pub const ELEMENTWISE: KernelSource =
    KernelSource { file: "elementwise.cu", text: include_str!("../../cu/elementwise.cu") };
pub const POOL: KernelSource = KernelSource { file: "pool.cu", text: include_str!("../../cu/pool.cu") };
pub const L2NORM: KernelSource = KernelSource { file: "l2norm.cu", text: include_str!("../../cu/l2norm.cu") };
pub const SOFTMAX: KernelSource =
    KernelSource { file: "softmax.cu", text: include_str!("../../cu/softmax.cu") };
pub const OPTIM: KernelSource = KernelSource { file: "optim.cu", text: include_str!("../../cu/optim.cu") };
pub const CAST: KernelSource = KernelSource { file: "cast.cu", text: include_str!("../../cu/cast.cu") };
pub const QUEUE: KernelSource = KernelSource { file: "queue.cu", text: include_str!("../../cu/queue.cu") };
