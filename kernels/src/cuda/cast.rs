//! Launches of `cu/cast.cu`: fp32 <-> fp16 buffer casts and fp16 rounding in place. Compiled, not yet run on a GPU.

use crate::cuda::launch::{expect_len, to_i32, Grid, Kernel, KernelDef, Param::*};
use crate::cuda::sources::{self, KernelSource};
use crate::error::Result;
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut};
use half::f16;
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::CAST;

pub static F32_TO_F16: KernelDef = KernelDef { name: "cast_f32_to_f16", params: &[I32, Ptr, Ptr] };
pub static F16_TO_F32: KernelDef = KernelDef { name: "cast_f16_to_f32", params: &[I32, Ptr, Ptr] };

pub static ROUND_TO_F16: KernelDef = KernelDef { name: "round_to_f16_f32", params: &[I32, Ptr] };

pub static DEFS: &[&KernelDef] = &[&F32_TO_F16, &F16_TO_F32, &ROUND_TO_F16];

/// The cast kernels of one device.
#[derive(Debug)]
pub struct Cast {
    grid: Grid,
    f32_to_f16: Kernel,
    f16_to_f32: Kernel,
    round_to_f16: Kernel,
}

impl Cast {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(Cast {
            grid,
            f32_to_f16: Kernel::load(module, &F32_TO_F16)?,
            f16_to_f32: Kernel::load(module, &F16_TO_F32)?,
            round_to_f16: Kernel::load(module, &ROUND_TO_F16)?,
        })
    }

    /// y = fp16(x), round to nearest even.
    pub fn f32_to_f16(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, f32>,
        y: &mut CudaViewMut<'_, f16>,
    ) -> Result<()> {
        let n = to_i32("cast_f32_to_f16", "x", x.len())?;
        expect_len("cast_f32_to_f16", "y", y.len(), x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x holds n floats and y n fp16 values (checked above).
        unsafe { launch!(stream, &self.f32_to_f16, self.grid.elems(n as usize), &n, x, y) }
    }

    /// y = fp32(x), exact.
    pub fn f16_to_f32(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, f16>,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let n = to_i32("cast_f16_to_f32", "x", x.len())?;
        expect_len("cast_f16_to_f32", "y", y.len(), x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x holds n fp16 values and y n floats (checked above).
        unsafe { launch!(stream, &self.f16_to_f32, self.grid.elems(n as usize), &n, x, y) }
    }

    /// x = fp32(fp16(x)) in place (`round_act` on an fp32 buffer under AMP).
    pub fn round_to_f16(&self, stream: &CudaStream, x: &mut CudaViewMut<'_, f32>) -> Result<()> {
        let n = to_i32("round_to_f16", "x", x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel touches x[0..n) and x holds n floats.
        unsafe { launch!(stream, &self.round_to_f16, self.grid.elems(n as usize), &n, x) }
    }
}
