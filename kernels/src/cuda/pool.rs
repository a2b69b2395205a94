//! Launches of `cu/pool.cu`: the stem's 3x3/2 pad 1 max pool and the global average pool,
//! forward and backward, on NHWC activations (fp16 or fp32). Compiled, not yet run on a GPU.

use crate::cuda::launch::{
    expect_len, kernel_pair, to_i32, Elem, Grid, KernelDef, KernelPair, KernelPairDef, Param::*,
};
use crate::cuda::sources::{self, KernelSource};
use crate::error::{KernelError, Result};
use crate::launch;
use crate::shapes::PoolShape;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut};
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::POOL;

pub static MAXPOOL_FWD: KernelPairDef =
    kernel_pair!("maxpool3x3s2_fwd", [I32, I32, I32, I32, I32, I32, Ptr, Ptr]);
pub static MAXPOOL_BWD: KernelPairDef =
    kernel_pair!("maxpool3x3s2_bwd", [I32, I32, I32, I32, I32, I32, Ptr, Ptr, Ptr]);
pub static AVGPOOL_FWD: KernelPairDef = kernel_pair!("avgpool_fwd", [I32, I32, I32, Ptr, Ptr]);
pub static AVGPOOL_BWD: KernelPairDef = kernel_pair!("avgpool_bwd", [I32, I32, I32, Ptr, Ptr]);

pub static DEFS: &[&KernelDef] = &[
    &MAXPOOL_FWD.f16,
    &MAXPOOL_FWD.f32,
    &MAXPOOL_BWD.f16,
    &MAXPOOL_BWD.f32,
    &AVGPOOL_FWD.f16,
    &AVGPOOL_FWD.f32,
    &AVGPOOL_BWD.f16,
    &AVGPOOL_BWD.f32,
];

/// The pooling kernels of one device.
#[derive(Debug)]
pub struct Pool {
    grid: Grid,
    maxpool_fwd: KernelPair,
    maxpool_bwd: KernelPair,
    avgpool_fwd: KernelPair,
    avgpool_bwd: KernelPair,
}

/// The six `int` dimensions the max-pool kernels take: n, h, w, c, oh, ow.
fn pool_dims(op: &'static str, s: &PoolShape) -> Result<[i32; 6]> {
    if s.h == 0 || s.w == 0 {
        return Err(KernelError::Shape { op, detail: format!("empty pool input {s:?}") });
    }
    to_i32(op, "x", s.x_len())?;
    Ok([s.n as i32, s.h as i32, s.w as i32, s.c as i32, s.out_h() as i32, s.out_w() as i32])
}

impl Pool {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(Pool {
            grid,
            maxpool_fwd: KernelPair::load(module, &MAXPOOL_FWD)?,
            maxpool_bwd: KernelPair::load(module, &MAXPOOL_BWD)?,
            avgpool_fwd: KernelPair::load(module, &AVGPOOL_FWD)?,
            avgpool_bwd: KernelPair::load(module, &AVGPOOL_BWD)?,
        })
    }

    /// y = 3x3/2 pad 1 max pool of x (first maximum in row-major window order).
    pub fn maxpool_fwd<T: Elem>(
        &self,
        stream: &CudaStream,
        s: &PoolShape,
        x: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "maxpool_fwd";
        let [n, h, w, c, oh, ow] = pool_dims(OP, s)?;
        expect_len(OP, "x", x.len(), s.x_len())?;
        expect_len(OP, "y", y.len(), s.y_len())?;
        if s.y_len() == 0 {
            return Ok(());
        }
        // SAFETY: x holds n*h*w*c and y n*oh*ow*c elements (checked above); the kernel
        // reads x only at in-range window taps and writes each y element once.
        unsafe {
            launch!(
                stream,
                self.maxpool_fwd.of::<T>(),
                self.grid.elems(s.y_len()),
                &n,
                &h,
                &w,
                &c,
                &oh,
                &ow,
                x,
                y
            )
        }
    }

    /// dx (overwritten) = dy routed to the first maximum of each window, recomputed from x.
    pub fn maxpool_bwd<T: Elem>(
        &self,
        stream: &CudaStream,
        s: &PoolShape,
        x: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "maxpool_bwd";
        let [n, h, w, c, oh, ow] = pool_dims(OP, s)?;
        expect_len(OP, "x", x.len(), s.x_len())?;
        expect_len(OP, "dx", dx.len(), s.x_len())?;
        expect_len(OP, "dy", dy.len(), s.y_len())?;
        if s.x_len() == 0 {
            return Ok(());
        }
        // SAFETY: x and dx hold n*h*w*c, dy n*oh*ow*c elements (checked above); the
        // kernel only visits windows with 0 <= oy < oh, 0 <= ox < ow.
        unsafe {
            launch!(
                stream,
                self.maxpool_bwd.of::<T>(),
                self.grid.elems(s.x_len()),
                &n,
                &h,
                &w,
                &c,
                &oh,
                &ow,
                x,
                dy,
                dx
            )
        }
    }

    /// y[n, c] = mean over hw of x[n, hw, c].
    pub fn avgpool_fwd<T: Elem>(
        &self,
        stream: &CudaStream,
        n: usize,
        hw: usize,
        c: usize,
        x: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "avgpool_fwd";
        let total = to_i32(OP, "x", n * hw * c)?;
        expect_len(OP, "x", x.len(), n * hw * c)?;
        expect_len(OP, "y", y.len(), n * c)?;
        if hw == 0 || total == 0 {
            return Err(KernelError::Shape { op: OP, detail: format!("empty input [{n}, {hw}, {c}]") });
        }
        let (n_i, hw_i, c_i) = (n as i32, hw as i32, c as i32);
        // SAFETY: x holds n*hw*c and y n*c elements (checked above).
        unsafe {
            launch!(stream, self.avgpool_fwd.of::<T>(), self.grid.elems(n * c), &n_i, &hw_i, &c_i, x, y)
        }
    }

    /// dx[n, p, c] = dy[n, c] / hw (overwritten).
    pub fn avgpool_bwd<T: Elem>(
        &self,
        stream: &CudaStream,
        n: usize,
        hw: usize,
        c: usize,
        dy: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "avgpool_bwd";
        let total = to_i32(OP, "dx", n * hw * c)?;
        expect_len(OP, "dy", dy.len(), n * c)?;
        expect_len(OP, "dx", dx.len(), n * hw * c)?;
        if hw == 0 || total == 0 {
            return Err(KernelError::Shape { op: OP, detail: format!("empty input [{n}, {hw}, {c}]") });
        }
        let (n_i, hw_i, c_i) = (n as i32, hw as i32, c as i32);
        // SAFETY: dy holds n*c and dx n*hw*c elements (checked above).
        unsafe {
            launch!(
                stream,
                self.avgpool_bwd.of::<T>(),
                self.grid.elems(n * hw * c),
                &n_i,
                &hw_i,
                &c_i,
                dy,
                dx
            )
        }
    }
}
