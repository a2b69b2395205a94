//! Memory that only a GPU can measure: the planner adds these as allowances, labelled as such
//! with the value used, until a GPU run calibrates them (DESIGN.md contract 7: predicted and
//! measured peak within 5%).

/// Label shown next to every allowance in the plan.
pub const LABEL: &str = "allowance, not yet measured on a GPU";

const MIB: u64 = 1 << 20;

/// CUDA context plus the cuBLAS and cuDNN handles and the kernels they load. With CUDA 12's
/// lazy module loading an Ampere card typically shows 300-500 MiB in use before the first
/// tensor; 400 MiB is the middle of that range.
pub const CUDA_CONTEXT: u64 = 400 * MIB;

/// Scratch space of the cuDNN convolutions. The arena caps it here and algorithm selection
/// falls back to algorithms that fit; ResNet-50's fastest NHWC fp16 algorithms at batch ~100
/// ask for tens to a few hundred MiB, so 256 MiB rarely forces a slower one.
pub const CUDNN_WORKSPACE: u64 = 256 * MIB;

/// NCCL communicator buffers when more than one rank shares the node: with its default 4 MiB
/// buffer per channel and protocol, a few channels to each ring neighbour come to ~100 MiB.
pub const NCCL_BUFFERS: u64 = 128 * MIB;
