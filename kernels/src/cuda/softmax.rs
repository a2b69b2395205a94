//! Launches of `cu/softmax.cu`: the softmax cross-entropy pieces over fp32 logits
//! `[rows, cols]` (row max + sum-exp, masking, backward, positive-logit gather).
//! Compiled, not yet run on a GPU.
//!
//! Per-row inputs (lse, labels) and the mask lists are device buffers here; the backend copies
//! host slices in when the `Backend` trait hands it host data.

use crate::cuda::launch::{
    expect_len, kernel_pair, to_i32, Elem, Grid, Kernel, KernelDef, KernelPair, KernelPairDef, Param::*,
};
use crate::cuda::sources::{self, KernelSource};
use crate::error::Result;
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut};
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::SOFTMAX;

pub static ROW_MAX_SUMEXP: KernelDef =
    KernelDef { name: "row_max_sumexp_f32", params: &[I32, I32, Ptr, Ptr, Ptr] };
pub static MASK_CELLS: KernelDef = KernelDef { name: "mask_cells_f32", params: &[I32, I32, I32, Ptr, Ptr] };
pub static MASK_OWN_IMAGE: KernelDef =
    KernelDef { name: "mask_own_image_f32", params: &[I32, I32, Ptr, Ptr, I32, Ptr] };
pub static XENT_BWD: KernelPairDef = kernel_pair!("softmax_xent_bwd", [I32, I32, Ptr, Ptr, Ptr, F32, Ptr]);
pub static GATHER_COLS: KernelDef = KernelDef { name: "gather_cols_f32", params: &[I32, I32, Ptr, Ptr, Ptr] };
pub static LSE_COMBINE: KernelDef = KernelDef { name: "lse_combine_f32", params: &[I32, I32, Ptr, Ptr, Ptr] };
pub static XENT_LOSS: KernelDef = KernelDef { name: "xent_loss_f32", params: &[I32, Ptr, Ptr, F32, Ptr] };

pub static DEFS: &[&KernelDef] = &[
    &ROW_MAX_SUMEXP,
    &MASK_CELLS,
    &MASK_OWN_IMAGE,
    &XENT_BWD.f16,
    &XENT_BWD.f32,
    &GATHER_COLS,
    &LSE_COMBINE,
    &XENT_LOSS,
];

/// The softmax kernels of one device.
#[derive(Debug)]
pub struct Softmax {
    grid: Grid,
    row_max_sumexp: Kernel,
    mask_cells: Kernel,
    mask_own_image: Kernel,
    xent_bwd: KernelPair,
    gather_cols: Kernel,
    lse_combine: Kernel,
    xent_loss: Kernel,
}

impl Softmax {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(Softmax {
            grid,
            row_max_sumexp: Kernel::load(module, &ROW_MAX_SUMEXP)?,
            mask_cells: Kernel::load(module, &MASK_CELLS)?,
            mask_own_image: Kernel::load(module, &MASK_OWN_IMAGE)?,
            xent_bwd: KernelPair::load(module, &XENT_BWD)?,
            gather_cols: Kernel::load(module, &GATHER_COLS)?,
            lse_combine: Kernel::load(module, &LSE_COMBINE)?,
            xent_loss: Kernel::load(module, &XENT_LOSS)?,
        })
    }

    /// Per row: max over non-masked logits and sum(exp(l - max)); a fully masked row gives
    /// (-inf, 0).
    pub fn row_max_sumexp(
        &self,
        stream: &CudaStream,
        rows: usize,
        cols: usize,
        logits: &CudaView<'_, f32>,
        row_max: &mut CudaViewMut<'_, f32>,
        row_sum: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "row_max_sumexp";
        to_i32(OP, "logits", rows * cols)?;
        expect_len(OP, "logits", logits.len(), rows * cols)?;
        expect_len(OP, "row_max", row_max.len(), rows)?;
        expect_len(OP, "row_sum", row_sum.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let (r, c) = (rows as i32, cols as i32);
        // SAFETY: logits hold rows*cols floats, row_max and row_sum rows floats (checked
        // above); one block per row, all threads of a block reach its barriers.
        unsafe {
            launch!(stream, &self.row_max_sumexp, self.grid.rows(rows), &r, &c, logits, row_max, row_sum)
        }
    }

    /// logits[r, c] = -inf for every (r, c) pair of `cells` (`[n_cells, 2]`, device).
    pub fn mask_cells(
        &self,
        stream: &CudaStream,
        rows: usize,
        cols: usize,
        cells: &CudaView<'_, i32>,
        logits: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "mask_cells";
        to_i32(OP, "logits", rows * cols)?;
        expect_len(OP, "logits", logits.len(), rows * cols)?;
        let n_cells = cells.len() / 2;
        expect_len(OP, "cells", cells.len(), 2 * n_cells)?;
        if n_cells == 0 {
            return Ok(());
        }
        let (r, c, k) = (rows as i32, cols as i32, to_i32(OP, "cells", n_cells)?);
        // SAFETY: cells hold 2*n_cells ints and logits rows*cols floats (checked above); the
        // kernel skips any pair outside [0, rows) x [0, cols), so device-side values cannot
        // make it write out of bounds.
        unsafe { launch!(stream, &self.mask_cells, self.grid.elems(n_cells), &r, &c, &k, cells, logits) }
    }

    /// `logits[r, c] = -inf` where `row_idx[r] == col_idx[c] >= 0` and, with `positives`,
    /// `c != positives + r` (own-image masking from device-side dataset indices, without a host
    /// round trip).
    #[allow(clippy::too_many_arguments)]
    pub fn mask_own_image(
        &self,
        stream: &CudaStream,
        rows: usize,
        cols: usize,
        row_idx: &CudaView<'_, f32>,
        col_idx: &CudaView<'_, f32>,
        positives: Option<usize>,
        logits: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "mask_own_image";
        to_i32(OP, "logits", rows * cols)?;
        expect_len(OP, "logits", logits.len(), rows * cols)?;
        expect_len(OP, "row_idx", row_idx.len(), rows)?;
        expect_len(OP, "col_idx", col_idx.len(), cols)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let (r, c) = (rows as i32, cols as i32);
        let p = match positives {
            Some(p) => to_i32(OP, "positives", p)?,
            None => -1,
        };
        // SAFETY: row_idx holds rows entries, col_idx cols, logits rows*cols floats (checked
        // above); the kernel indexes only within those (the positive offset is only compared).
        unsafe {
            launch!(
                stream,
                &self.mask_own_image,
                self.grid.elems(rows * cols),
                &r,
                &c,
                row_idx,
                col_idx,
                &p,
                logits
            )
        }
    }

    /// `dlogits = scale * (exp(logits - lse[row]) - onehot(labels[row]))` in the activation
    /// precision T; label -1 =
    /// none in this block; masked logits give 0.
    #[allow(clippy::too_many_arguments)]
    pub fn xent_bwd<T: Elem>(
        &self,
        stream: &CudaStream,
        rows: usize,
        cols: usize,
        logits: &CudaView<'_, f32>,
        lse: &CudaView<'_, f32>,
        labels: &CudaView<'_, i32>,
        scale: f32,
        dlogits: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        const OP: &str = "softmax_xent_bwd";
        to_i32(OP, "logits", rows * cols)?;
        expect_len(OP, "logits", logits.len(), rows * cols)?;
        expect_len(OP, "dlogits", dlogits.len(), rows * cols)?;
        expect_len(OP, "lse", lse.len(), rows)?;
        expect_len(OP, "labels", labels.len(), rows)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let (r, c) = (rows as i32, cols as i32);
        // SAFETY: logits hold rows*cols floats, dlogits rows*cols elements of T, lse and labels
        // rows entries (checked above); labels are only compared, never used as an index.
        unsafe {
            launch!(
                stream,
                self.xent_bwd.of::<T>(),
                self.grid.elems(rows * cols),
                &r,
                &c,
                logits,
                lse,
                labels,
                &scale,
                dlogits
            )
        }
    }

    /// `out[r] = logits[r, labels[r]]` for labels in `[0, cols)`, else 0.
    pub fn gather_cols(
        &self,
        stream: &CudaStream,
        rows: usize,
        cols: usize,
        logits: &CudaView<'_, f32>,
        labels: &CudaView<'_, i32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "gather_cols";
        to_i32(OP, "logits", rows * cols)?;
        expect_len(OP, "logits", logits.len(), rows * cols)?;
        expect_len(OP, "labels", labels.len(), rows)?;
        expect_len(OP, "out", out.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let (r, c) = (rows as i32, cols as i32);
        // SAFETY: logits hold rows*cols floats, labels and out rows entries (checked above);
        // the kernel reads logits only for labels in [0, cols).
        unsafe { launch!(stream, &self.gather_cols, self.grid.elems(rows), &r, &c, logits, labels, out) }
    }

    /// lse `[rows]` from `parts` blocks' per-row maxima and sum-exps, each `[parts][rows]`.
    pub fn lse_combine(
        &self,
        stream: &CudaStream,
        rows: usize,
        parts: usize,
        max: &CudaView<'_, f32>,
        sum: &CudaView<'_, f32>,
        lse: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "lse_combine";
        let p = to_i32(OP, "parts", parts)?;
        to_i32(OP, "max", parts * rows)?;
        expect_len(OP, "max", max.len(), parts * rows)?;
        expect_len(OP, "sum", sum.len(), parts * rows)?;
        expect_len(OP, "lse", lse.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let r = rows as i32;
        // SAFETY: max and sum hold parts*rows floats, lse rows floats (checked above).
        unsafe { launch!(stream, &self.lse_combine, self.grid.elems(rows), &r, &p, max, sum, lse) }
    }

    /// out `[1]` = factor * mean over rows of (lse - pos).
    pub fn xent_loss(
        &self,
        stream: &CudaStream,
        rows: usize,
        lse: &CudaView<'_, f32>,
        pos: &CudaView<'_, f32>,
        factor: f32,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "xent_loss";
        let r = to_i32(OP, "rows", rows)?;
        expect_len(OP, "lse", lse.len(), rows)?;
        expect_len(OP, "pos", pos.len(), rows)?;
        expect_len(OP, "out", out.len(), 1)?;
        // SAFETY: lse and pos hold rows floats, out one (checked above); only thread 0 of
        // block 0 reads or writes.
        unsafe { launch!(stream, &self.xent_loss, self.grid.elems(1), &r, lse, pos, &factor, out) }
    }
}
