//! Launches of `cu/batchnorm.cu`: BN statistics, apply (+ReLU), backward reduce and apply,
//! running-statistics update, over NHWC `[m, c]` activation rows (fp16 or fp32) with fp32
//! statistics.
//! Compiled, not yet run on a GPU.

use crate::cuda::launch::{
    expect_len, kernel_pair, to_i32, Elem, Grid, Kernel, KernelDef, KernelPair, KernelPairDef, Param::*,
};
use crate::cuda::sources::{self, KernelSource};
use crate::error::{KernelError, Result};
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::BATCHNORM;

pub static STATS_PARTIAL: KernelPairDef = kernel_pair!("bn_stats_partial", [I32, I32, I32, Ptr, Ptr, Ptr]);
pub static STATS_FINALIZE: KernelDef =
    KernelDef { name: "bn_stats_finalize", params: &[I32, I32, I32, I32, Ptr, Ptr, Ptr, Ptr] };
pub static APPLY: KernelPairDef =
    kernel_pair!("bn_apply", [I32, I32, Ptr, Ptr, Ptr, F32, Ptr, Ptr, I32, Ptr]);
pub static BWD_REDUCE_PARTIAL: KernelPairDef =
    kernel_pair!("bn_bwd_reduce_partial", [I32, I32, I32, Ptr, Ptr, Ptr, Ptr, Ptr]);
pub static BWD_REDUCE_FINALIZE: KernelDef =
    KernelDef { name: "bn_bwd_reduce_finalize", params: &[I32, I32, Ptr, Ptr, Ptr, F32, Ptr, Ptr] };
pub static BWD_APPLY: KernelPairDef =
    kernel_pair!("bn_bwd_apply", [I32, I32, I32, Ptr, Ptr, Ptr, Ptr, F32, Ptr, Ptr, Ptr, Ptr]);
pub static RUNNING_UPDATE: KernelDef =
    KernelDef { name: "bn_running_update", params: &[I32, Ptr, Ptr, I32, F32, Ptr] };
pub static GROUP_MEAN: KernelDef = KernelDef { name: "bn_group_mean", params: &[I32, I32, Ptr, Ptr] };
pub static MOMENTS_PACK: KernelDef = KernelDef { name: "bn_moments_pack", params: &[I32, Ptr, Ptr, Ptr] };
pub static MOMENTS_UNPACK: KernelDef =
    KernelDef { name: "bn_moments_unpack", params: &[I32, I32, Ptr, Ptr, Ptr] };

pub static DEFS: &[&KernelDef] = &[
    &STATS_PARTIAL.f16,
    &STATS_PARTIAL.f32,
    &STATS_FINALIZE,
    &APPLY.f16,
    &APPLY.f32,
    &BWD_REDUCE_PARTIAL.f16,
    &BWD_REDUCE_PARTIAL.f32,
    &BWD_REDUCE_FINALIZE,
    &BWD_APPLY.f16,
    &BWD_APPLY.f32,
    &RUNNING_UPDATE,
    &GROUP_MEAN,
    &MOMENTS_PACK,
    &MOMENTS_UNPACK,
];

/// Channels per block and row lanes per block of the `*_partial` kernels (BN_TILE_C and
/// BN_ROWS in batchnorm.cu; the kernels' shared arrays are sized by them).
const TILE_C: u32 = 32;
const ROW_LANES: u32 = 8;

/// Upper bound on row chunks (level-1 blocks per channel tile); bounds the workspace.
pub const MAX_CHUNKS: usize = 256;
/// Enough level-1 blocks to fill any current GPU.
const TARGET_BLOCKS: usize = 512;
/// Fewer rows than this per chunk would make the level-1 blocks mostly idle threads.
const MIN_ROWS_PER_CHUNK: usize = 64;

/// How the rows of a `[m, c]` reduction are cut into chunks. A function of (m, c) only, so
/// every card reduces in the same order and the memory plan can size the workspace up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub rows_per_chunk: usize,
    pub chunks: usize,
}

pub fn chunking(m: usize, c: usize) -> Chunking {
    let tiles = c.div_ceil(TILE_C as usize).max(1);
    let wanted = TARGET_BLOCKS.div_ceil(tiles);
    let useful = (m / MIN_ROWS_PER_CHUNK).max(1);
    let chunks = wanted.min(useful).clamp(1, MAX_CHUNKS);
    let rows_per_chunk = m.div_ceil(chunks).max(1);
    Chunking { rows_per_chunk, chunks: m.div_ceil(rows_per_chunk).max(1) }
}

/// fp32 workspace elements `stats` and `bwd_reduce` need for `[m, c]`: two `[chunks, c]`
/// partial arrays.
pub fn workspace_len(m: usize, c: usize) -> usize {
    2 * chunking(m, c).chunks * c
}

/// The batch-norm kernels of one device.
#[derive(Debug)]
pub struct BatchNorm {
    grid: Grid,
    stats_partial: KernelPair,
    stats_finalize: Kernel,
    apply: KernelPair,
    bwd_reduce_partial: KernelPair,
    bwd_reduce_finalize: Kernel,
    bwd_apply: KernelPair,
    running_update: Kernel,
    group_mean: Kernel,
    moments_pack: Kernel,
    moments_unpack: Kernel,
}

fn partial_config(c: usize, chunks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.div_ceil(TILE_C as usize) as u32, chunks as u32, 1),
        block_dim: (TILE_C, ROW_LANES, 1),
        shared_mem_bytes: 0,
    }
}

fn check_rows(op: &'static str, m: usize, c: usize) -> Result<(i32, i32)> {
    if m == 0 || c == 0 {
        return Err(KernelError::Shape { op, detail: format!("empty batch norm input [{m}, {c}]") });
    }
    let _ = to_i32(op, "m * c", m * c)?;
    Ok((m as i32, c as i32))
}

fn check_workspace(op: &'static str, len: usize, m: usize, c: usize) -> Result<()> {
    let need = workspace_len(m, c);
    if len < need {
        return Err(KernelError::Shape {
            op,
            detail: format!("workspace has {len} elements, [{m}, {c}] needs {need}"),
        });
    }
    Ok(())
}

impl BatchNorm {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(BatchNorm {
            grid,
            stats_partial: KernelPair::load(module, &STATS_PARTIAL)?,
            stats_finalize: Kernel::load(module, &STATS_FINALIZE)?,
            apply: KernelPair::load(module, &APPLY)?,
            bwd_reduce_partial: KernelPair::load(module, &BWD_REDUCE_PARTIAL)?,
            bwd_reduce_finalize: Kernel::load(module, &BWD_REDUCE_FINALIZE)?,
            bwd_apply: KernelPair::load(module, &BWD_APPLY)?,
            running_update: Kernel::load(module, &RUNNING_UPDATE)?,
            group_mean: Kernel::load(module, &GROUP_MEAN)?,
            moments_pack: Kernel::load(module, &MOMENTS_PACK)?,
            moments_unpack: Kernel::load(module, &MOMENTS_UNPACK)?,
        })
    }

    /// Per-channel mean and biased variance of x `[m, c]` (Welford, two-level, deterministic).
    /// `workspace` needs at least [`workspace_len`]`(m, c)` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn stats<T: Elem>(
        &self,
        stream: &CudaStream,
        m: usize,
        c: usize,
        x: &CudaView<'_, T>,
        workspace: &mut CudaViewMut<'_, f32>,
        mean: &mut CudaViewMut<'_, f32>,
        var: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_stats";
        let (m_i, c_i) = check_rows(OP, m, c)?;
        expect_len(OP, "x", x.len(), m * c)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        check_workspace(OP, workspace.len(), m, c)?;
        let Chunking { rows_per_chunk, chunks } = chunking(m, c);
        let (rpc, nch) = (rows_per_chunk as i32, chunks as i32);
        let (mut part_mean, mut rest) = workspace.split_at_mut(chunks * c);
        let mut part_m2 = rest.slice_mut(..chunks * c);
        // SAFETY: x holds m*c activation values and each partial array chunks*c floats (checked
        // above); the grid is (ceil(c/32), chunks) blocks of (32, 8) threads, the shape the
        // kernel's shared arrays are sized for; every index the kernel forms is < m*c or
        // < chunks*c, both below 2^30.
        unsafe {
            launch!(
                stream,
                self.stats_partial.of::<T>(),
                partial_config(c, chunks),
                &m_i,
                &c_i,
                &rpc,
                x,
                &mut part_mean,
                &mut part_m2
            )
        }?;
        let part_mean = part_mean.as_view();
        let part_m2 = part_m2.as_view();
        // SAFETY: the partial arrays hold chunks*c floats written by the launch above (same
        // stream, so ordered); mean and var hold c floats; one thread per channel.
        unsafe {
            launch!(
                stream,
                &self.stats_finalize,
                self.grid.elems(c),
                &m_i,
                &c_i,
                &rpc,
                &nch,
                &part_mean,
                &part_m2,
                mean,
                var
            )
        }
    }

    /// y = (x - mean) / sqrt(var + eps) * gamma + beta, then ReLU if `relu`. gamma / beta
    /// absent = affine-free.
    #[allow(clippy::too_many_arguments)]
    pub fn apply<T: Elem>(
        &self,
        stream: &CudaStream,
        m: usize,
        c: usize,
        x: &CudaView<'_, T>,
        mean: &CudaView<'_, f32>,
        var: &CudaView<'_, f32>,
        eps: f32,
        gamma: Option<&CudaView<'_, f32>>,
        beta: Option<&CudaView<'_, f32>>,
        relu: bool,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "bn_apply";
        let (m_i, c_i) = check_rows(OP, m, c)?;
        expect_len(OP, "x", x.len(), m * c)?;
        expect_len(OP, "y", y.len(), m * c)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        if let Some(g) = gamma {
            expect_len(OP, "gamma", g.len(), c)?;
        }
        if let Some(b) = beta {
            expect_len(OP, "beta", b.len(), c)?;
        }
        let relu_i = relu as i32;
        // SAFETY: x and y hold m*c activation values, mean/var (and gamma/beta when present) c
        // floats, all checked above; absent gamma/beta are passed as null, which the kernel
        // tests before reading.
        unsafe {
            launch!(
                stream,
                self.apply.of::<T>(),
                self.grid.elems(m * c),
                &m_i,
                &c_i,
                x,
                mean,
                var,
                &eps,
                gamma,
                beta,
                &relu_i,
                y
            )
        }
    }

    /// sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat) per channel (overwritten).
    /// `workspace` needs at least [`workspace_len`]`(m, c)` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd_reduce<T: Elem>(
        &self,
        stream: &CudaStream,
        m: usize,
        c: usize,
        x: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
        mean: &CudaView<'_, f32>,
        var: &CudaView<'_, f32>,
        eps: f32,
        workspace: &mut CudaViewMut<'_, f32>,
        sum_dy: &mut CudaViewMut<'_, f32>,
        sum_dy_xhat: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_bwd_reduce";
        let (m_i, c_i) = check_rows(OP, m, c)?;
        expect_len(OP, "x", x.len(), m * c)?;
        expect_len(OP, "dy", dy.len(), m * c)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        expect_len(OP, "sum_dy", sum_dy.len(), c)?;
        expect_len(OP, "sum_dy_xhat", sum_dy_xhat.len(), c)?;
        check_workspace(OP, workspace.len(), m, c)?;
        let Chunking { rows_per_chunk, chunks } = chunking(m, c);
        let (rpc, nch) = (rows_per_chunk as i32, chunks as i32);
        let (mut part_dy, mut rest) = workspace.split_at_mut(chunks * c);
        let mut part_dy_xc = rest.slice_mut(..chunks * c);
        // SAFETY: x and dy hold m*c activation values, mean c floats, each partial array chunks*c
        // floats (checked above); grid and block match the kernel's shared-array shape.
        unsafe {
            launch!(
                stream,
                self.bwd_reduce_partial.of::<T>(),
                partial_config(c, chunks),
                &m_i,
                &c_i,
                &rpc,
                x,
                dy,
                mean,
                &mut part_dy,
                &mut part_dy_xc
            )
        }?;
        let part_dy = part_dy.as_view();
        let part_dy_xc = part_dy_xc.as_view();
        // SAFETY: partial arrays of chunks*c floats written above on the same stream; var,
        // sum_dy and sum_dy_xhat hold c floats; one thread per channel.
        unsafe {
            launch!(
                stream,
                &self.bwd_reduce_finalize,
                self.grid.elems(c),
                &c_i,
                &nch,
                &part_dy,
                &part_dy_xc,
                var,
                &eps,
                sum_dy,
                sum_dy_xhat
            )
        }
    }

    /// dx = gamma * invstd * (dy - sum_dy/count - xhat * sum_dy_xhat/count).
    #[allow(clippy::too_many_arguments)]
    pub fn bwd_apply<T: Elem>(
        &self,
        stream: &CudaStream,
        m: usize,
        c: usize,
        count: usize,
        x: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
        mean: &CudaView<'_, f32>,
        var: &CudaView<'_, f32>,
        eps: f32,
        gamma: Option<&CudaView<'_, f32>>,
        sum_dy: &CudaView<'_, f32>,
        sum_dy_xhat: &CudaView<'_, f32>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "bn_bwd_apply";
        let (m_i, c_i) = check_rows(OP, m, c)?;
        if count == 0 {
            return Err(KernelError::Shape { op: OP, detail: "count is 0".into() });
        }
        let count_i = to_i32(OP, "count", count)?;
        for (what, len, want) in [
            ("x", x.len(), m * c),
            ("dy", dy.len(), m * c),
            ("dx", dx.len(), m * c),
            ("mean", mean.len(), c),
            ("var", var.len(), c),
            ("sum_dy", sum_dy.len(), c),
            ("sum_dy_xhat", sum_dy_xhat.len(), c),
        ] {
            expect_len(OP, what, len, want)?;
        }
        if let Some(g) = gamma {
            expect_len(OP, "gamma", g.len(), c)?;
        }
        // SAFETY: x, dy, dx hold m*c activation values and every per-channel array c floats
        // (checked above); an absent gamma is passed as null, which the kernel tests.
        unsafe {
            launch!(
                stream,
                self.bwd_apply.of::<T>(),
                self.grid.elems(m * c),
                &m_i,
                &c_i,
                &count_i,
                x,
                dy,
                mean,
                var,
                &eps,
                gamma,
                sum_dy,
                sum_dy_xhat,
                dx
            )
        }
    }

    /// running `[2c]` (means then variances) moves towards the batch statistics, the variance
    /// unbiased with `count` (the rows the statistics covered).
    #[allow(clippy::too_many_arguments)]
    pub fn running_update(
        &self,
        stream: &CudaStream,
        c: usize,
        mean: &CudaView<'_, f32>,
        var: &CudaView<'_, f32>,
        count: usize,
        momentum: f32,
        running: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_running_update";
        let c_i = to_i32(OP, "c", c)?;
        let count_i = to_i32(OP, "count", count)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        expect_len(OP, "running", running.len(), 2 * c)?;
        // SAFETY: mean and var hold c floats, running 2c floats (checked above).
        unsafe {
            launch!(
                stream,
                &self.running_update,
                self.grid.elems(c),
                &c_i,
                mean,
                var,
                &count_i,
                &momentum,
                running
            )
        }
    }

    /// y `[c]` = the average of the `groups` rows of x `[groups, c]` (shuffle BN's groups).
    pub fn group_mean(
        &self,
        stream: &CudaStream,
        groups: usize,
        c: usize,
        x: &CudaView<'_, f32>,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_group_mean";
        let g_i = to_i32(OP, "groups", groups)?;
        let c_i = to_i32(OP, "c", c)?;
        expect_len(OP, "x", x.len(), groups * c)?;
        expect_len(OP, "y", y.len(), c)?;
        // SAFETY: x holds groups * c floats and y c floats (checked above).
        unsafe { launch!(stream, &self.group_mean, self.grid.elems(c), &g_i, &c_i, x, y) }
    }

    /// packed `[2c]` = `[mean, var + mean^2]` (SyncBN's exchange buffer).
    pub fn moments_pack(
        &self,
        stream: &CudaStream,
        c: usize,
        mean: &CudaView<'_, f32>,
        var: &CudaView<'_, f32>,
        packed: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_moments_pack";
        let c_i = to_i32(OP, "2c", 2 * c).map(|_| c as i32)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        expect_len(OP, "packed", packed.len(), 2 * c)?;
        // SAFETY: mean and var hold c floats, packed 2c (checked above).
        unsafe { launch!(stream, &self.moments_pack, self.grid.elems(c), &c_i, mean, var, packed) }
    }

    /// mean, var `[c]` from `packed` summed over `world` ranks.
    pub fn moments_unpack(
        &self,
        stream: &CudaStream,
        c: usize,
        world: usize,
        packed: &CudaView<'_, f32>,
        mean: &mut CudaViewMut<'_, f32>,
        var: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "bn_moments_unpack";
        let c_i = to_i32(OP, "2c", 2 * c).map(|_| c as i32)?;
        let w_i = to_i32(OP, "world", world)?;
        expect_len(OP, "packed", packed.len(), 2 * c)?;
        expect_len(OP, "mean", mean.len(), c)?;
        expect_len(OP, "var", var.len(), c)?;
        // SAFETY: packed holds 2c floats, mean and var c each (checked above).
        unsafe { launch!(stream, &self.moments_unpack, self.grid.elems(c), &c_i, &w_i, packed, mean, var) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_covers_every_row_exactly_once() {
        // Shapes of ResNet-50 at batch 96 / 224 px and of the heads' BN1d.
        for (m, c) in
            [(96 * 112 * 112, 64), (96 * 56 * 56, 256), (96 * 7 * 7, 2048), (96, 4096), (1, 3), (65, 32)]
        {
            let ch = chunking(m, c);
            assert!(ch.chunks >= 1 && ch.chunks <= MAX_CHUNKS, "{m}x{c}: {ch:?}");
            // The chunks cover [0, m) and the last one is not empty.
            assert!(ch.chunks * ch.rows_per_chunk >= m, "{m}x{c}: {ch:?}");
            assert!((ch.chunks - 1) * ch.rows_per_chunk < m, "{m}x{c}: {ch:?}");
            assert_eq!(workspace_len(m, c), 2 * ch.chunks * c);
        }
    }

    #[test]
    fn chunking_fills_the_device_for_few_channels() {
        // The stem's BN (c = 64, 1.2 M rows) must not run on 2 blocks.
        let ch = chunking(96 * 112 * 112, 64);
        assert_eq!(ch.chunks, MAX_CHUNKS);
        // A BN1d over 96 rows has too few rows for two chunks of at least 64.
        assert_eq!(chunking(96, 4096).chunks, 1);
    }
}
