//! Launches of `cu/l2norm.cu`: L2 normalisation over rows of `[n, d]` activations (fp16 or fp32), forward and
//! backward. Compiled, not yet run on a GPU.

use crate::cuda::launch::{
    expect_len, kernel_pair, to_i32, Elem, Grid, KernelDef, KernelPair, KernelPairDef, Param::*,
};
use crate::cuda::sources::{self, KernelSource};
use crate::error::Result;
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut};
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::L2NORM;

pub static FWD: KernelPairDef = kernel_pair!("l2norm_fwd", [I32, I32, Ptr, Ptr, Ptr]);
pub static BWD: KernelPairDef = kernel_pair!("l2norm_bwd", [I32, I32, Ptr, Ptr, Ptr, Ptr]);

pub static DEFS: &[&KernelDef] = &[&FWD.f16, &FWD.f32, &BWD.f16, &BWD.f32];

/// The L2-normalisation kernels of one device.
#[derive(Debug)]
pub struct L2Norm {
    grid: Grid,
    fwd: KernelPair,
    bwd: KernelPair,
}

impl L2Norm {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(L2Norm { grid, fwd: KernelPair::load(module, &FWD)?, bwd: KernelPair::load(module, &BWD)? })
    }

    /// `y = x / max(|x|, 1e-12)` per row; `norm[n]` keeps `max(|x|, 1e-12)`.
    pub fn fwd<T: Elem>(
        &self,
        stream: &CudaStream,
        n: usize,
        d: usize,
        x: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
        norm: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "l2norm_fwd";
        to_i32(OP, "x", n * d)?;
        expect_len(OP, "x", x.len(), n * d)?;
        expect_len(OP, "y", y.len(), n * d)?;
        expect_len(OP, "norm", norm.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (n_i, d_i) = (n as i32, d as i32);
        // SAFETY: x and y hold n*d elements and norm n floats (checked above); one block
        // per row, every thread of a block takes part in its block reduction.
        unsafe { launch!(stream, self.fwd.of::<T>(), self.grid.rows(n), &n_i, &d_i, x, y, norm) }
    }

    /// dx = (dy - y * <y, dy>) / norm per row.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<T: Elem>(
        &self,
        stream: &CudaStream,
        n: usize,
        d: usize,
        y: &CudaView<'_, T>,
        norm: &CudaView<'_, f32>,
        dy: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "l2norm_bwd";
        to_i32(OP, "y", n * d)?;
        expect_len(OP, "y", y.len(), n * d)?;
        expect_len(OP, "dy", dy.len(), n * d)?;
        expect_len(OP, "dx", dx.len(), n * d)?;
        expect_len(OP, "norm", norm.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (n_i, d_i) = (n as i32, d as i32);
        // SAFETY: y, dy, dx hold n*d elements and norm n floats (checked above).
        unsafe { launch!(stream, self.bwd.of::<T>(), self.grid.rows(n), &n_i, &d_i, y, norm, dy, dx) }
    }
}
