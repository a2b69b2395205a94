//! Launches of `cu/elementwise.cu`: ReLU forward/backward and the residual add (+ReLU fused)
//! in both activation precisions, and the fp32 vector ops on gradient buffers.
//! Compiled, not yet run on a GPU.

use crate::cuda::launch::{
    expect_len, kernel_pair, to_i32, Elem, Grid, Kernel, KernelDef, KernelPair, KernelPairDef, Param::*,
};
use crate::cuda::sources::{self, KernelSource};
use crate::error::Result;
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut};
use half::f16;
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::ELEMENTWISE;

pub static RELU_INPLACE: KernelPairDef = kernel_pair!("relu_inplace", [I32, Ptr]);
pub static RELU_BWD: KernelPairDef = kernel_pair!("relu_bwd", [I32, Ptr, Ptr, Ptr]);
pub static ADD_INPLACE: KernelPairDef = kernel_pair!("add_inplace", [I32, Ptr, Ptr]);
pub static ADD_RELU_INPLACE: KernelPairDef = kernel_pair!("add_relu_inplace", [I32, Ptr, Ptr]);
pub static AXPBY: KernelDef = KernelDef { name: "axpby_f32", params: &[I32, F32, Ptr, F32, Ptr] };
pub static AXPY_F16_TO_F32: KernelDef = KernelDef { name: "axpy_f16_to_f32", params: &[I32, F32, Ptr, Ptr] };
pub static SCALE: KernelDef = KernelDef { name: "scale_f32", params: &[I32, F32, Ptr] };
pub static FILL_F32: KernelDef = KernelDef { name: "fill_f32", params: &[I32, F32, Ptr] };
pub static FILL_F16: KernelDef = KernelDef { name: "fill_f16", params: &[I32, F32, Ptr] };

pub static DEFS: &[&KernelDef] = &[
    &RELU_INPLACE.f16,
    &RELU_INPLACE.f32,
    &RELU_BWD.f16,
    &RELU_BWD.f32,
    &ADD_INPLACE.f16,
    &ADD_INPLACE.f32,
    &ADD_RELU_INPLACE.f16,
    &ADD_RELU_INPLACE.f32,
    &AXPBY,
    &AXPY_F16_TO_F32,
    &SCALE,
    &FILL_F32,
    &FILL_F16,
];

/// The elementwise kernels of one device.
#[derive(Debug)]
pub struct Elementwise {
    grid: Grid,
    relu_inplace: KernelPair,
    relu_bwd: KernelPair,
    add_inplace: KernelPair,
    add_relu_inplace: KernelPair,
    axpby: Kernel,
    axpy_f16_to_f32: Kernel,
    scale: Kernel,
    fill_f32: Kernel,
    fill_f16: Kernel,
}

impl Elementwise {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(Elementwise {
            grid,
            relu_inplace: KernelPair::load(module, &RELU_INPLACE)?,
            relu_bwd: KernelPair::load(module, &RELU_BWD)?,
            add_inplace: KernelPair::load(module, &ADD_INPLACE)?,
            add_relu_inplace: KernelPair::load(module, &ADD_RELU_INPLACE)?,
            axpby: Kernel::load(module, &AXPBY)?,
            axpy_f16_to_f32: Kernel::load(module, &AXPY_F16_TO_F32)?,
            scale: Kernel::load(module, &SCALE)?,
            fill_f32: Kernel::load(module, &FILL_F32)?,
            fill_f16: Kernel::load(module, &FILL_F16)?,
        })
    }

    /// x = max(x, 0).
    pub fn relu_inplace<T: Elem>(&self, stream: &CudaStream, x: &mut CudaViewMut<'_, T>) -> Result<()> {
        let n = to_i32("relu_inplace", "x", x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel touches x[0..n) and x holds n elements of T, the type of the
        // entry point chosen by `of::<T>`.
        unsafe { launch!(stream, self.relu_inplace.of::<T>(), self.grid.elems(n as usize), &n, x) }
    }

    /// dx = dy where y > 0 else 0 (y is the ReLU output).
    pub fn relu_bwd<T: Elem>(
        &self,
        stream: &CudaStream,
        y: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "relu_bwd";
        let n = to_i32(OP, "y", y.len())?;
        expect_len(OP, "dy", dy.len(), y.len())?;
        expect_len(OP, "dx", dx.len(), y.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: y, dy and dx each hold n elements of T (checked above).
        unsafe { launch!(stream, self.relu_bwd.of::<T>(), self.grid.elems(n as usize), &n, y, dy, dx) }
    }

    /// y += x.
    pub fn add_inplace<T: Elem>(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        let n = to_i32("add_inplace", "y", y.len())?;
        expect_len("add_inplace", "x", x.len(), y.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x and y each hold n elements of T (checked above).
        unsafe { launch!(stream, self.add_inplace.of::<T>(), self.grid.elems(n as usize), &n, x, y) }
    }

    /// y = max(y + x, 0): the bottleneck's residual add and final ReLU in one pass.
    pub fn add_relu_inplace<T: Elem>(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        let n = to_i32("add_relu_inplace", "y", y.len())?;
        expect_len("add_relu_inplace", "x", x.len(), y.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x and y each hold n elements of T (checked above).
        unsafe { launch!(stream, self.add_relu_inplace.of::<T>(), self.grid.elems(n as usize), &n, x, y) }
    }

    /// y = alpha * x + beta * y (fp32).
    pub fn axpby(
        &self,
        stream: &CudaStream,
        alpha: f32,
        x: &CudaView<'_, f32>,
        beta: f32,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let n = to_i32("axpby", "y", y.len())?;
        expect_len("axpby", "x", x.len(), y.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x and y each hold n floats (checked above).
        unsafe { launch!(stream, &self.axpby, self.grid.elems(n as usize), &n, &alpha, x, &beta, y) }
    }

    /// y += alpha * x, x fp16, y fp32: accumulate a fresh fp16 gradient into fp32.
    pub fn axpy_f16_to_f32(
        &self,
        stream: &CudaStream,
        alpha: f32,
        x: &CudaView<'_, f16>,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let n = to_i32("axpy_f16_to_f32", "y", y.len())?;
        expect_len("axpy_f16_to_f32", "x", x.len(), y.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: x holds n fp16 values and y n floats (checked above).
        unsafe { launch!(stream, &self.axpy_f16_to_f32, self.grid.elems(n as usize), &n, &alpha, x, y) }
    }

    /// x *= alpha (fp32).
    pub fn scale(&self, stream: &CudaStream, alpha: f32, x: &mut CudaViewMut<'_, f32>) -> Result<()> {
        let n = to_i32("scale", "x", x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel touches x[0..n) and x holds n floats.
        unsafe { launch!(stream, &self.scale, self.grid.elems(n as usize), &n, &alpha, x) }
    }

    /// x = value (fp32).
    pub fn fill_f32(&self, stream: &CudaStream, value: f32, x: &mut CudaViewMut<'_, f32>) -> Result<()> {
        let n = to_i32("fill_f32", "x", x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel touches x[0..n) and x holds n floats.
        unsafe { launch!(stream, &self.fill_f32, self.grid.elems(n as usize), &n, &value, x) }
    }

    /// x = fp16(value).
    pub fn fill_f16(&self, stream: &CudaStream, value: f32, x: &mut CudaViewMut<'_, f16>) -> Result<()> {
        let n = to_i32("fill_f16", "x", x.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel touches x[0..n) and x holds n fp16 values.
        unsafe { launch!(stream, &self.fill_f16, self.grid.elems(n as usize), &n, &value, x) }
    }
}
