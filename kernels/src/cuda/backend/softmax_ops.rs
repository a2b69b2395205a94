//! Softmax cross-entropy pieces on fp32 logits: per-row results (max, sum-exp, lse, positive
//! logits, the loss value) stay in device buffers; labels and mask cells come from the host and
//! are copied to small arena blocks (host to device, no wait). Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::launch::{driver_err, expect_len, Dtype};
use crate::cuda::memory::Block;
use crate::error::{KernelError, Result};
use cudarc::driver::DeviceRepr;
use half::f16;

impl CudaBackend {
    /// An uninitialised arena block (for staging buffers outside the op set, e.g. NCCL).
    pub(crate) fn pool_alloc<T: DeviceRepr>(&self, what: &str, len: usize) -> Result<Block<T>> {
        self.pool.alloc::<T>(what, len)
    }

    /// A block holding a copy of host data.
    pub(crate) fn block_from_host<T: DeviceRepr>(&self, what: &str, data: &[T]) -> Result<Block<T>> {
        let mut b = self.pool.alloc::<T>(what, data.len())?;
        if !data.is_empty() {
            self.stream.memcpy_htod(data, b.slice_mut()).map_err(|e| driver_err("memcpy_htod", e))?;
        }
        Ok(b)
    }

    /// A block's values on the host (waits for the work that writes them).
    pub(crate) fn block_to_host<T: DeviceRepr + Default + Clone>(
        &self,
        b: &Block<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let v = self.stream.clone_dtoh(&b.slice().slice(..len)).map_err(|e| driver_err("memcpy_dtoh", e))?;
        self.ctx.check_err().map_err(|e| driver_err("deferred driver error", e))?;
        Ok(v)
    }

    pub(crate) fn row_max_sumexp_impl(
        &self,
        rows: usize,
        cols: usize,
        logits: &DevView<'_>,
        max: &mut DevViewMut<'_>,
        sum: &mut DevViewMut<'_>,
    ) -> Result<()> {
        expect_len("row_max_sumexp", "logits", logits.len(), rows * cols)?;
        let logits = self.src::<f32>(logits)?;
        let mut max_out = self.dst::<f32>(max, false)?;
        let mut sum_out = self.dst::<f32>(sum, false)?;
        self.kernels.softmax.row_max_sumexp(
            &self.stream,
            rows,
            cols,
            &logits.view(),
            &mut max_out.view(),
            &mut sum_out.view(),
        )?;
        max_out.finish(self)?;
        sum_out.finish(self)
    }

    pub(crate) fn lse_combine_impl(
        &self,
        rows: usize,
        parts: usize,
        [max, sum]: [&DevView<'_>; 2],
        lse: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (max, sum) = (self.src::<f32>(max)?, self.src::<f32>(sum)?);
        let mut out = self.dst::<f32>(lse, false)?;
        self.kernels.softmax.lse_combine(
            &self.stream,
            rows,
            parts,
            &max.view(),
            &sum.view(),
            &mut out.view(),
        )?;
        out.finish(self)
    }

    pub(crate) fn xent_loss_impl(
        &self,
        rows: usize,
        [lse, pos]: [&DevView<'_>; 2],
        factor: f32,
        out: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (lse, pos) = (self.src::<f32>(lse)?, self.src::<f32>(pos)?);
        let mut dst = self.dst::<f32>(out, false)?;
        self.kernels.softmax.xent_loss(
            &self.stream,
            rows,
            &lse.view(),
            &pos.view(),
            factor,
            &mut dst.view(),
        )?;
        dst.finish(self)
    }

    pub(crate) fn mask_cells_impl(
        &self,
        cols: usize,
        logits: &mut DevViewMut<'_>,
        cells: &[(u32, u32)],
    ) -> Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        if logits.len().checked_rem(cols) != Some(0) {
            return Err(KernelError::Shape {
                op: "mask_cells",
                detail: format!("{} logits are not rows of {cols} columns", logits.len()),
            });
        }
        let rows = logits.len() / cols;
        let mut flat = Vec::with_capacity(2 * cells.len());
        for &(r, c) in cells {
            if r as usize >= rows || c as usize >= cols {
                return Err(KernelError::Shape {
                    op: "mask_cells",
                    detail: format!("cell ({r}, {c}) is outside the [{rows}, {cols}] logits"),
                });
            }
            flat.extend([r as i32, c as i32]);
        }
        let cells = self.block_from_host("mask cells", &flat)?;
        let mut out = self.dst::<f32>(logits, true)?;
        self.kernels.softmax.mask_cells(
            &self.stream,
            rows,
            cols,
            &cells.slice().as_view(),
            &mut out.view(),
        )?;
        out.finish(self)
    }

    /// Own-image masking from index buffers (see `Backend::mask_own_image`).
    pub(crate) fn mask_own_image_impl(
        &self,
        rows: usize,
        cols: usize,
        [row_idx, col_idx]: [&DevView<'_>; 2],
        positives: Option<usize>,
        logits: &mut DevViewMut<'_>,
    ) -> Result<()> {
        expect_len("mask_own_image", "logits", logits.len(), rows * cols)?;
        let (row_idx, col_idx) = (self.src::<f32>(row_idx)?, self.src::<f32>(col_idx)?);
        let mut out = self.dst::<f32>(logits, true)?;
        self.kernels.softmax.mask_own_image(
            &self.stream,
            rows,
            cols,
            &row_idx.view(),
            &col_idx.view(),
            positives,
            &mut out.view(),
        )?;
        out.finish(self)
    }

    /// The fused pointer-advance enqueue (see `Backend::queue_enqueue`): the queue kernel of
    /// the shard's precision; keys of another precision are converted first (exact from fp16
    /// to fp32).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_enqueue_impl(
        &self,
        rows: usize,
        dim: usize,
        half: bool,
        keys: [&DevView<'_>; 2],
        queue: &mut DevViewMut<'_>,
        queue_idx: &mut DevViewMut<'_>,
        ptr: &mut DevViewMut<'_>,
        error: &mut DevViewMut<'_>,
        saved: [&mut DevViewMut<'_>; 3],
    ) -> Result<()> {
        if half != (queue.dtype() == Dtype::F16) {
            return Err(KernelError::Shape {
                op: "queue_enqueue",
                detail: format!(
                    "the queue buffer is {:?} but the caller's precision says half = {half}",
                    queue.dtype()
                ),
            });
        }
        match queue.dtype() {
            Dtype::F16 => self.queue_enqueue_t::<f16>(rows, dim, keys, queue, queue_idx, ptr, error, saved),
            Dtype::F32 => self.queue_enqueue_t::<f32>(rows, dim, keys, queue, queue_idx, ptr, error, saved),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_enqueue_t<T: BufElem>(
        &self,
        rows: usize,
        dim: usize,
        [keys, key_idx]: [&DevView<'_>; 2],
        queue: &mut DevViewMut<'_>,
        queue_idx: &mut DevViewMut<'_>,
        ptr: &mut DevViewMut<'_>,
        error: &mut DevViewMut<'_>,
        [saved_keys, saved_idx, saved_ptr]: [&mut DevViewMut<'_>; 3],
    ) -> Result<()> {
        let keys = self.src::<T>(keys)?;
        let key_idx = self.src::<f32>(key_idx)?;
        // In place (the kernel writes some rows of each and reads the pointer): `read`.
        let mut q = self.dst::<T>(queue, true)?;
        let mut qi = self.dst::<f32>(queue_idx, true)?;
        let mut p = self.dst::<f32>(ptr, true)?;
        let mut e = self.dst::<f32>(error, true)?;
        let mut sk = self.dst::<T>(saved_keys, false)?;
        let mut si = self.dst::<f32>(saved_idx, false)?;
        let mut sp = self.dst::<f32>(saved_ptr, false)?;
        self.kernels.queue.enqueue::<T>(
            &self.stream,
            rows,
            dim,
            &keys.view(),
            &key_idx.view(),
            &mut q.view(),
            &mut qi.view(),
            &mut p.view(),
            &mut e.view(),
            &mut sk.view(),
            [&mut si.view(), &mut sp.view()],
        )?;
        sk.finish(self)?;
        si.finish(self)?;
        sp.finish(self)?;
        q.finish(self)?;
        qi.finish(self)?;
        p.finish(self)?;
        e.finish(self)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn softmax_xent_bwd_impl(
        &self,
        rows: usize,
        cols: usize,
        logits: &DevView<'_>,
        lse: &DevView<'_>,
        labels: &[i32],
        scale: f32,
        dlogits: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dlogits.dtype() {
            Dtype::F16 => self.softmax_xent_bwd_t::<f16>(rows, cols, logits, lse, labels, scale, dlogits),
            Dtype::F32 => self.softmax_xent_bwd_t::<f32>(rows, cols, logits, lse, labels, scale, dlogits),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_bwd_t<T: BufElem>(
        &self,
        rows: usize,
        cols: usize,
        logits: &DevView<'_>,
        lse: &DevView<'_>,
        labels: &[i32],
        scale: f32,
        dlogits: &mut DevViewMut<'_>,
    ) -> Result<()> {
        expect_len("softmax_xent_bwd", "lse", lse.len(), rows)?;
        expect_len("softmax_xent_bwd", "labels", labels.len(), rows)?;
        let logits = self.src::<f32>(logits)?;
        let lse = self.src::<f32>(lse)?;
        let labels = self.block_from_host("labels", labels)?;
        let mut out = self.dst::<T>(dlogits, false)?;
        self.kernels.softmax.xent_bwd(
            &self.stream,
            rows,
            cols,
            &logits.view(),
            &lse.view(),
            &labels.slice().as_view(),
            scale,
            &mut out.view(),
        )?;
        out.finish(self)
    }

    pub(crate) fn gather_cols_impl(
        &self,
        rows: usize,
        cols: usize,
        logits: &DevView<'_>,
        labels: &[i32],
        out: &mut DevViewMut<'_>,
    ) -> Result<()> {
        expect_len("gather_cols", "logits", logits.len(), rows * cols)?;
        expect_len("gather_cols", "labels", labels.len(), rows)?;
        let logits = self.src::<f32>(logits)?;
        let labels = self.block_from_host("labels", labels)?;
        let mut dst = self.dst::<f32>(out, false)?;
        self.kernels.softmax.gather_cols(
            &self.stream,
            rows,
            cols,
            &logits.view(),
            &labels.slice().as_view(),
            &mut dst.view(),
        )?;
        dst.finish(self)
    }
}
