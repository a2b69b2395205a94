//! Typed kernel launches (compiled, not yet run on a GPU).
//!
//! Each kernel has a [`KernelDef`]: its `extern "C"` name and its parameter kinds, written next
//! to the Rust wrapper that launches it. Two checks tie the three together:
//! - CI (`tests/cuda_compile.rs`, no GPU) compares every `KernelDef` with the `.entry`
//!   signature in the PTX NVRTC produced: names, count and kinds of parameters.
//! - Every launch goes through [`launch!`](crate::launch!), which compares the kinds of the arguments it is
//!   given with the `KernelDef` before launching, and refuses with an error on a mismatch.
//!
//! So a wrapper that passes arguments in the wrong order or of the wrong kind fails loudly
//! instead of corrupting memory. (Pointer element types are not visible in PTX; each wrapper's
//! signature types them, e.g. `&CudaView<f16>`.)

use crate::error::{KernelError, Result};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaView, CudaViewMut, DriverError, LaunchArgs, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// Threads per block of the 1-D kernels: a multiple of 32 (the block reductions need it) that
/// keeps several blocks resident per SM on every architecture from sm_80 on.
pub const BLOCK: u32 = 256;

/// Largest element count a kernel accepts: sizes are 32-bit `int` in the kernels, and with
/// at most 2^24 threads in a grid a grid-stride index stays below 2^31 (see common.cuh).
pub const MAX_ELEMS: usize = 1 << 30;

/// Upper bound on blocks in a 1-D grid: 2^16 blocks of 256 threads = 2^24 threads.
pub const MAX_GRID: u32 = 1 << 16;

/// The kind of one kernel parameter as it appears in PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `int` (PTX `.u32`).
    I32,
    /// `float` (PTX `.f32`).
    F32,
    /// Any device pointer (PTX `.u64`); may be null where the kernel says so.
    Ptr,
}

impl Param {
    /// The PTX parameter type NVRTC emits for this kind.
    pub fn ptx_type(self) -> &'static str {
        match self {
            Param::I32 => ".u32",
            Param::F32 => ".f32",
            Param::Ptr => ".u64",
        }
    }
}

/// A kernel's name and signature, as the `.cu` file declares it.
#[derive(Debug)]
pub struct KernelDef {
    pub name: &'static str,
    pub params: &'static [Param],
}

/// The element type of a device buffer: fp16 activations under AMP, fp32 everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "fp16",
            Dtype::F32 => "fp32",
        }
    }
}

/// A Rust element type a kernel template is instantiated for (`__half` or `float`).
pub trait Elem:
    cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Send + Sync + 'static
{
    const DTYPE: Dtype;
}

impl Elem for half::f16 {
    const DTYPE: Dtype = Dtype::F16;
}

impl Elem for f32 {
    const DTYPE: Dtype = Dtype::F32;
}

/// A kernel template's two entry points, `NAME_f16` and `NAME_f32` (see common.cuh).
#[derive(Debug)]
pub struct KernelPairDef {
    pub f16: KernelDef,
    pub f32: KernelDef,
}

/// `kernel_pair!("relu_inplace", [I32, Ptr])`: the [`KernelPairDef`] of a template whose
/// entry points are `relu_inplace_f16` and `relu_inplace_f32`, both with these parameters.
macro_rules! kernel_pair {
    ($name:literal, [$($param:expr),* $(,)?]) => {
        $crate::cuda::launch::KernelPairDef {
            f16: $crate::cuda::launch::KernelDef { name: concat!($name, "_f16"), params: &[$($param),*] },
            f32: $crate::cuda::launch::KernelDef { name: concat!($name, "_f32"), params: &[$($param),*] },
        }
    };
}
pub(crate) use kernel_pair;

/// Both instantiations of a kernel template, loaded.
#[derive(Debug)]
pub struct KernelPair {
    f16: Kernel,
    f32: Kernel,
}

impl KernelPair {
    pub fn load(module: &Arc<CudaModule>, def: &'static KernelPairDef) -> Result<Self> {
        Ok(KernelPair { f16: Kernel::load(module, &def.f16)?, f32: Kernel::load(module, &def.f32)? })
    }

    /// The entry point for element type `T`.
    pub fn of<T: Elem>(&self) -> &Kernel {
        match T::DTYPE {
            Dtype::F16 => &self.f16,
            Dtype::F32 => &self.f32,
        }
    }
}

/// A loaded kernel with its signature.
#[derive(Debug)]
pub struct Kernel {
    def: &'static KernelDef,
    func: CudaFunction,
}

impl Kernel {
    /// Looks the kernel up in a loaded module (the only place a kernel name is used as a
    /// string at run time).
    pub fn load(module: &Arc<CudaModule>, def: &'static KernelDef) -> Result<Self> {
        let func = module.load_function(def.name).map_err(|e| driver_err(def.name, e))?;
        Ok(Kernel { def, func })
    }

    pub fn def(&self) -> &'static KernelDef {
        self.def
    }

    pub fn func(&self) -> &CudaFunction {
        &self.func
    }

    /// Refuses a launch whose argument kinds differ from the kernel's declared signature.
    pub fn check_args(&self, given: &[Param]) -> Result<()> {
        self.def.check_args(given)
    }
}

impl KernelDef {
    /// `Ok` when `given` is exactly this kernel's parameter list.
    pub fn check_args(&self, given: &[Param]) -> Result<()> {
        if given == self.params {
            Ok(())
        } else {
            Err(KernelError::Cuda {
                op: self.name,
                detail: format!(
                    "launch arguments {given:?} do not match the kernel signature {:?}",
                    self.params
                ),
            })
        }
    }
}

/// Maps a cudarc driver error to the crate's error, naming the kernel.
pub fn driver_err(op: &'static str, e: DriverError) -> KernelError {
    KernelError::Cuda { op, detail: format!("{e:?}") }
}

/// The device pointer value passed for an absent optional buffer (the kernels test for null).
static NULL_DEVICE_PTR: u64 = 0;

/// A value that can be pushed as one kernel argument, with its [`Param`] kind.
pub trait KernelArg<'b> {
    const PARAM: Param;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a;
}

impl<'b> KernelArg<'b> for &'b i32 {
    const PARAM: Param = Param::I32;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        builder.arg(self);
    }
}

impl<'b> KernelArg<'b> for &'b f32 {
    const PARAM: Param = Param::F32;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        builder.arg(self);
    }
}

impl<'b, 'c: 'b, T> KernelArg<'b> for &'b CudaView<'c, T> {
    const PARAM: Param = Param::Ptr;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        builder.arg(self);
    }
}

impl<'b, 'c: 'b, T> KernelArg<'b> for &'b mut CudaViewMut<'c, T> {
    const PARAM: Param = Param::Ptr;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        builder.arg(self);
    }
}

/// An optional input buffer: null when absent.
impl<'b, 'c: 'b, T> KernelArg<'b> for Option<&'b CudaView<'c, T>> {
    const PARAM: Param = Param::Ptr;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        match self {
            Some(view) => builder.arg(view),
            None => builder.arg(&NULL_DEVICE_PTR),
        };
    }
}

/// An optional output buffer: null when absent.
impl<'b, 'c: 'b, T> KernelArg<'b> for Option<&'b mut CudaViewMut<'c, T>> {
    const PARAM: Param = Param::Ptr;
    fn push_to<'a>(self, builder: &mut LaunchArgs<'a>)
    where
        'b: 'a,
    {
        match self {
            Some(view) => builder.arg(view),
            None => builder.arg(&NULL_DEVICE_PTR),
        };
    }
}

/// The [`Param`] kind of an argument expression (used by [`launch!`](crate::launch!)).
pub fn param_of<'b, A: KernelArg<'b>>(_arg: &A) -> Param {
    A::PARAM
}

/// Launches `$kernel` (a [`Kernel`]) on `$stream` with config `$cfg` and the arguments in
/// order, after checking their kinds against the kernel's [`KernelDef`]. Evaluates to
/// `Result<()>`. It calls the unsafe `LaunchArgs::launch`, so the call site must sit in an
/// `unsafe` block with a `// SAFETY:` comment saying why the arguments are valid (sizes
/// checked, buffers long enough, the kernel's pointer contract met).
///
/// Scalars are passed by reference to locals (`&n`), buffers as `&CudaView`,
/// `&mut CudaViewMut` or `Option<&CudaView>`.
#[macro_export]
macro_rules! launch {
    ($stream:expr, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let kernel: &$crate::cuda::launch::Kernel = $kernel;
        match kernel.check_args(&[$($crate::cuda::launch::param_of(&$arg)),+]) {
            Err(e) => Err(e),
            Ok(()) => {
                let mut builder = $stream.launch_builder(kernel.func());
                $( $crate::cuda::launch::KernelArg::push_to($arg, &mut builder); )+
                builder
                    .launch($cfg)
                    .map(|_| ())
                    .map_err(|e| $crate::cuda::launch::driver_err(kernel.def().name, e))
            }
        }
    }};
}

/// Checks that a size fits the kernels' 32-bit indexing and converts it.
pub fn to_i32(op: &'static str, what: &str, n: usize) -> Result<i32> {
    if n <= MAX_ELEMS {
        Ok(n as i32)
    } else {
        Err(KernelError::Shape {
            op,
            detail: format!("{what} = {n} exceeds the kernels' limit of {MAX_ELEMS} elements"),
        })
    }
}

/// Checks that a buffer has exactly the length the shape implies.
pub fn expect_len(op: &'static str, what: &str, actual: usize, expected: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(KernelError::Shape {
            op,
            detail: format!("{what} has {actual} elements, the shape needs {expected}"),
        })
    }
}

/// Grid-size policy of one device, fixed when the kernels are loaded.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    /// Enough blocks to fill the device several times over; grid-stride loops cover the rest.
    pub max_blocks: u32,
}

impl Grid {
    /// 8 blocks of 256 threads per SM: 2048 threads, at least one full wave on every
    /// architecture from sm_80 (1536-2048 threads per SM).
    pub fn for_sm_count(sms: u32) -> Self {
        Grid { max_blocks: (sms.max(1) * 8).min(MAX_GRID) }
    }

    /// A 1-D grid-stride launch over `n` elements.
    pub fn elems(&self, n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// One block per row (grid-stride over rows by block).
    pub fn rows(&self, rows: usize) -> LaunchConfig {
        let blocks = rows.clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_stay_within_the_indexing_limits() {
        let g = Grid::for_sm_count(132);
        assert_eq!(g.max_blocks, 1056);
        let cfg = g.elems(MAX_ELEMS);
        assert_eq!(cfg.grid_dim.0, 1056);
        assert_eq!(g.elems(0).grid_dim.0, 1, "an empty launch still has a valid grid");
        assert_eq!(g.elems(257).grid_dim.0, 2);
        // Even an absurd SM count keeps the grid at 2^24 threads.
        let huge = Grid::for_sm_count(1 << 20);
        assert_eq!(huge.max_blocks * BLOCK, 1 << 24);
    }

    #[test]
    fn argument_kinds_follow_the_rust_types() {
        assert_eq!(param_of(&&1i32), Param::I32);
        assert_eq!(param_of(&&1.0f32), Param::F32);
        assert_eq!(param_of(&None::<&CudaView<'_, f32>>), Param::Ptr);
    }

    #[test]
    fn a_launch_with_misordered_arguments_is_refused() {
        static DEF: KernelDef = KernelDef { name: "k", params: &[Param::I32, Param::F32, Param::Ptr] };
        assert!(DEF.check_args(&[Param::I32, Param::F32, Param::Ptr]).is_ok());
        let err = DEF.check_args(&[Param::F32, Param::I32, Param::Ptr]).unwrap_err();
        assert!(err.to_string().contains("k"), "{err}");
        assert!(DEF.check_args(&[Param::I32, Param::F32]).is_err(), "a missing argument");
    }

    #[test]
    fn sizes_beyond_32_bit_indexing_are_refused() {
        assert_eq!(to_i32("t", "n", MAX_ELEMS).unwrap(), 1 << 30);
        assert!(matches!(to_i32("t", "n", MAX_ELEMS + 1), Err(KernelError::Shape { .. })));
    }
}
