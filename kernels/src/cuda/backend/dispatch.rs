//! `impl Backend for CudaBackend`: each method forwards to its op family's file and records a
//! failure for the next fallible call (see `errors.rs`). Compiled, not yet run on a GPU.

use super::{norm_ops, optim_ops, CudaBackend};
use crate::backend::Backend;
use crate::cuda::buffer::{CudaBuf, DevView, DevViewMut};
use crate::cuda::launch::Dtype;
use crate::error::Result;
use crate::shapes::{ConvShape, PoolShape};
use std::ops::Range;

/// Records the error of an op that returns `()`.
macro_rules! run {
    ($self:ident, $op:literal, $call:expr) => {{
        let result = $call;
        $self.errors.record($op, result)
    }};
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type View<'a> = DevView<'a>;
    type ViewMut<'a> = DevViewMut<'a>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        self.errors.check()?;
        self.zeros_of(self.act_dtype(), "activation", len)
    }

    fn zeros_master(&self, len: usize) -> Result<CudaBuf> {
        self.errors.check()?;
        self.zeros_of(Dtype::F32, "fp32 state", len)
    }

    fn act_from_host(&self, data: &[f32]) -> Result<CudaBuf> {
        self.errors.check()?;
        self.upload(self.act_dtype(), "activation", data)
    }

    fn from_host(&self, data: &[f32]) -> Result<CudaBuf> {
        self.errors.check()?;
        self.upload(Dtype::F32, "fp32 state", data)
    }

    fn half_from_host(&self, data: &[f32]) -> Result<CudaBuf> {
        self.errors.check()?;
        self.upload(Dtype::F16, "fp16 state", data)
    }

    fn to_host(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        self.errors.check()?;
        self.download(&buf.full())
    }

    /// Only `range` crosses to the host (a gradient bucket is ~1M of ~35M floats).
    fn to_host_range(&self, buf: &CudaBuf, range: Range<usize>) -> Result<Vec<f32>> {
        self.errors.check()?;
        if range.start > range.end || range.end > buf.len() {
            return Err(crate::error::KernelError::Shape {
                op: "to_host_range",
                detail: format!("range {range:?} of a buffer of {} elements", buf.len()),
            });
        }
        self.download(&buf.view(range))
    }

    fn write(&self, buf: &mut CudaBuf, offset: usize, data: &[f32]) -> Result<()> {
        self.errors.check()?;
        self.write_at(buf, offset, data)
    }

    fn buf_len(buf: &CudaBuf) -> usize {
        buf.len()
    }

    fn view<'a>(buf: &'a CudaBuf, range: Range<usize>) -> DevView<'a> {
        buf.view(range)
    }

    fn view_mut<'a>(buf: &'a mut CudaBuf, range: Range<usize>) -> DevViewMut<'a> {
        buf.view_mut(range)
    }

    fn host_mut(_buf: &mut CudaBuf) -> Option<&mut [f32]> {
        None
    }

    fn sync(&self) -> Result<()> {
        self.synchronize()
    }

    fn peak_bytes(&self) -> u64 {
        self.pool.stats().peak_live
    }

    fn conv2d_fwd(&self, s: &ConvShape, x: DevView<'_>, w: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "conv2d_fwd", self.conv_fwd(s, &x, &w, &mut y))
    }

    fn conv2d_bwd_data(&self, s: &ConvShape, dy: DevView<'_>, w: DevView<'_>, mut dx: DevViewMut<'_>) {
        run!(self, "conv2d_bwd_data", self.conv_bwd_data(s, &dy, &w, &mut dx))
    }

    fn conv2d_bwd_filter(&self, s: &ConvShape, x: DevView<'_>, dy: DevView<'_>, mut dw: DevViewMut<'_>) {
        run!(self, "conv2d_bwd_filter", self.conv_bwd_filter(s, &x, &dy, &mut dw))
    }

    fn bn_stats(
        &self,
        m: usize,
        c: usize,
        x: DevView<'_>,
        mut mean: DevViewMut<'_>,
        mut var: DevViewMut<'_>,
    ) {
        run!(self, "bn_stats", self.bn_stats_impl(m, c, &x, &mut mean, &mut var))
    }

    fn bn_apply(
        &self,
        m: usize,
        c: usize,
        x: DevView<'_>,
        mean: DevView<'_>,
        var: DevView<'_>,
        eps: f32,
        gamma: Option<DevView<'_>>,
        beta: Option<DevView<'_>>,
        relu: bool,
        mut y: DevViewMut<'_>,
    ) {
        let args = norm_ops::BnApply { m, c, eps, relu };
        run!(self, "bn_apply", self.bn_apply_impl(args, &x, &mean, &var, &gamma, &beta, &mut y))
    }

    fn bn_bwd_reduce(
        &self,
        m: usize,
        c: usize,
        x: DevView<'_>,
        dy: DevView<'_>,
        mean: DevView<'_>,
        var: DevView<'_>,
        eps: f32,
        mut sum_dy: DevViewMut<'_>,
        mut sum_dy_xhat: DevViewMut<'_>,
    ) {
        run!(
            self,
            "bn_bwd_reduce",
            self.bn_bwd_reduce_impl(m, c, eps, [&x, &dy, &mean, &var], &mut sum_dy, &mut sum_dy_xhat)
        )
    }

    fn bn_bwd_apply(
        &self,
        m: usize,
        c: usize,
        count: usize,
        x: DevView<'_>,
        dy: DevView<'_>,
        mean: DevView<'_>,
        var: DevView<'_>,
        eps: f32,
        gamma: Option<DevView<'_>>,
        sum_dy: DevView<'_>,
        sum_dy_xhat: DevView<'_>,
        mut dx: DevViewMut<'_>,
    ) {
        let args = norm_ops::BnBwdApply { m, c, count, eps };
        let ins = [&x, &dy, &mean, &var, &sum_dy, &sum_dy_xhat];
        run!(self, "bn_bwd_apply", self.bn_bwd_apply_impl(args, ins, &gamma, &mut dx))
    }

    fn bn_running_update(
        &self,
        c: usize,
        mean: DevView<'_>,
        var: DevView<'_>,
        count: usize,
        momentum: f32,
        mut running: DevViewMut<'_>,
    ) {
        run!(
            self,
            "bn_running_update",
            self.bn_running_update_impl(c, &mean, &var, count, momentum, &mut running)
        )
    }

    fn bn_group_mean(&self, groups: usize, c: usize, x: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "bn_group_mean", self.bn_group_mean_impl(groups, c, &x, &mut y))
    }

    fn bn_moments_pack(&self, c: usize, mean: DevView<'_>, var: DevView<'_>, mut packed: DevViewMut<'_>) {
        run!(self, "bn_moments_pack", self.bn_moments_pack_impl(c, &mean, &var, &mut packed))
    }

    fn bn_moments_unpack(
        &self,
        c: usize,
        world: usize,
        packed: DevView<'_>,
        mut mean: DevViewMut<'_>,
        mut var: DevViewMut<'_>,
    ) {
        run!(self, "bn_moments_unpack", self.bn_moments_unpack_impl(c, world, &packed, &mut mean, &mut var))
    }

    fn relu_inplace(&self, mut x: DevViewMut<'_>) {
        run!(self, "relu_inplace", self.relu_inplace_impl(&mut x))
    }

    fn relu_bwd(&self, y: DevView<'_>, dy: DevView<'_>, mut dx: DevViewMut<'_>) {
        run!(self, "relu_bwd", self.relu_bwd_impl(&y, &dy, &mut dx))
    }

    fn add_inplace(&self, x: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "add_inplace", self.add_inplace_impl(&x, &mut y))
    }

    fn axpby(&self, alpha: f32, x: DevView<'_>, beta: f32, mut y: DevViewMut<'_>) {
        run!(self, "axpby", self.axpby_impl(alpha, &x, beta, &mut y))
    }

    fn copy(&self, x: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "copy", self.convert(&x, &mut y))
    }

    fn fill(&self, mut x: DevViewMut<'_>, value: f32) {
        run!(self, "fill", self.fill_impl(&mut x, value))
    }

    fn scale(&self, mut x: DevViewMut<'_>, alpha: f32) {
        run!(self, "scale", self.scale_impl(&mut x, alpha))
    }

    fn round_act(&self, mut x: DevViewMut<'_>) {
        run!(self, "round_act", self.round_act_impl(&mut x))
    }

    fn maxpool_fwd(&self, s: &PoolShape, x: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "maxpool_fwd", self.maxpool_fwd_impl(s, &x, &mut y))
    }

    fn maxpool_bwd(&self, s: &PoolShape, x: DevView<'_>, dy: DevView<'_>, mut dx: DevViewMut<'_>) {
        run!(self, "maxpool_bwd", self.maxpool_bwd_impl(s, &x, &dy, &mut dx))
    }

    fn avgpool_fwd(&self, n: usize, hw: usize, c: usize, x: DevView<'_>, mut y: DevViewMut<'_>) {
        run!(self, "avgpool_fwd", self.avgpool_fwd_impl(n, hw, c, &x, &mut y))
    }

    fn avgpool_bwd(&self, n: usize, hw: usize, c: usize, dy: DevView<'_>, mut dx: DevViewMut<'_>) {
        run!(self, "avgpool_bwd", self.avgpool_bwd_impl(n, hw, c, &dy, &mut dx))
    }

    fn linear_fwd(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: DevView<'_>,
        w: DevView<'_>,
        mut y: DevViewMut<'_>,
    ) {
        run!(self, "linear_fwd", self.linear_fwd_impl(n, d_in, d_out, &x, &w, &mut y))
    }

    fn linear_bwd_data(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        dy: DevView<'_>,
        w: DevView<'_>,
        mut dx: DevViewMut<'_>,
    ) {
        run!(self, "linear_bwd_data", self.linear_bwd_data_impl(n, d_in, d_out, &dy, &w, &mut dx))
    }

    fn linear_bwd_weight(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: DevView<'_>,
        dy: DevView<'_>,
        mut dw: DevViewMut<'_>,
    ) {
        run!(self, "linear_bwd_weight", self.linear_bwd_weight_impl(n, d_in, d_out, &x, &dy, &mut dw))
    }

    fn l2norm_fwd(
        &self,
        n: usize,
        d: usize,
        x: DevView<'_>,
        mut y: DevViewMut<'_>,
        mut norm: DevViewMut<'_>,
    ) {
        run!(self, "l2norm_fwd", self.l2norm_fwd_impl(n, d, &x, &mut y, &mut norm))
    }

    fn l2norm_bwd(
        &self,
        n: usize,
        d: usize,
        y: DevView<'_>,
        norm: DevView<'_>,
        dy: DevView<'_>,
        mut dx: DevViewMut<'_>,
    ) {
        run!(self, "l2norm_bwd", self.l2norm_bwd_impl(n, d, &y, &norm, &dy, &mut dx))
    }

    fn row_max_sumexp(
        &self,
        rows: usize,
        cols: usize,
        logits: DevView<'_>,
        mut max: DevViewMut<'_>,
        mut sum: DevViewMut<'_>,
    ) {
        run!(self, "row_max_sumexp", self.row_max_sumexp_impl(rows, cols, &logits, &mut max, &mut sum))
    }

    fn lse_combine(
        &self,
        rows: usize,
        parts: usize,
        max: DevView<'_>,
        sum: DevView<'_>,
        mut lse: DevViewMut<'_>,
    ) {
        run!(self, "lse_combine", self.lse_combine_impl(rows, parts, [&max, &sum], &mut lse))
    }

    fn xent_loss(
        &self,
        rows: usize,
        lse: DevView<'_>,
        pos: DevView<'_>,
        factor: f32,
        mut out: DevViewMut<'_>,
    ) {
        run!(self, "xent_loss", self.xent_loss_impl(rows, [&lse, &pos], factor, &mut out))
    }

    fn mask_cells(&self, cols: usize, mut logits: DevViewMut<'_>, cells: &[(u32, u32)]) {
        run!(self, "mask_cells", self.mask_cells_impl(cols, &mut logits, cells))
    }

    fn mask_own_image(
        &self,
        rows: usize,
        cols: usize,
        row_idx: DevView<'_>,
        col_idx: DevView<'_>,
        positives: Option<usize>,
        mut logits: DevViewMut<'_>,
    ) {
        run!(
            self,
            "mask_own_image",
            self.mask_own_image_impl(rows, cols, [&row_idx, &col_idx], positives, &mut logits)
        )
    }

    fn queue_enqueue(
        &self,
        rows: usize,
        dim: usize,
        half: bool,
        keys: DevView<'_>,
        key_idx: DevView<'_>,
        mut queue: DevViewMut<'_>,
        mut queue_idx: DevViewMut<'_>,
        mut ptr: DevViewMut<'_>,
        mut error: DevViewMut<'_>,
        [mut saved_keys, mut saved_idx, mut saved_ptr]: [DevViewMut<'_>; 3],
    ) {
        // A launch failure is recorded and fails the step's metrics read, like the kernels'
        // own error flag (which the worker reads in the same place).
        run!(
            self,
            "queue_enqueue",
            self.queue_enqueue_impl(
                rows,
                dim,
                half,
                [&keys, &key_idx],
                &mut queue,
                &mut queue_idx,
                &mut ptr,
                &mut error,
                [&mut saved_keys, &mut saved_idx, &mut saved_ptr]
            )
        )
    }

    fn softmax_xent_bwd(
        &self,
        rows: usize,
        cols: usize,
        logits: DevView<'_>,
        lse: DevView<'_>,
        labels: &[i32],
        scale: f32,
        mut dlogits: DevViewMut<'_>,
    ) {
        run!(
            self,
            "softmax_xent_bwd",
            self.softmax_xent_bwd_impl(rows, cols, &logits, &lse, labels, scale, &mut dlogits)
        )
    }

    fn gather_cols(
        &self,
        rows: usize,
        cols: usize,
        logits: DevView<'_>,
        labels: &[i32],
        mut out: DevViewMut<'_>,
    ) {
        run!(self, "gather_cols", self.gather_cols_impl(rows, cols, &logits, labels, &mut out))
    }

    fn sumsq(&self, x: DevView<'_>) -> f64 {
        self.errors.value("sumsq", self.sumsq_impl(0.0, None, &x), f64::NAN)
    }

    fn sumsq_axpy(&self, alpha: f32, x: DevView<'_>, y: DevView<'_>) -> f64 {
        self.errors.value("sumsq_axpy", self.sumsq_impl(alpha, Some(&x), &y), f64::NAN)
    }

    fn ema(&self, m: f32, theta_q: DevView<'_>, mut theta_k: DevViewMut<'_>) {
        run!(self, "ema", self.ema_impl(m, &theta_q, &mut theta_k))
    }

    fn unscale_check(&self, mut g: DevViewMut<'_>, inv_scale: f32, mut found: DevViewMut<'_>) {
        // A failure here is recorded and fails the step's next fallible call (its metrics read),
        // so a step whose verdict could not be computed is never reported as applied.
        run!(self, "unscale_check", self.unscale_check_impl(&mut g, inv_scale, &mut found))
    }

    fn sgd_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        mut p: DevViewMut<'_>,
        g: DevView<'_>,
        mut mu: DevViewMut<'_>,
        skip: Option<DevView<'_>>,
    ) {
        run!(self, "sgd_step", self.sgd_step_impl([lr, momentum, wd], &mut p, &g, &mut mu, skip.as_ref()))
    }

    fn lars_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        trust: f32,
        mut p: DevViewMut<'_>,
        g: DevView<'_>,
        mut mu: DevViewMut<'_>,
        skip: Option<DevView<'_>>,
    ) {
        run!(
            self,
            "lars_step",
            self.lars_step_impl([lr, momentum, wd, trust], &mut p, &g, &mut mu, skip.as_ref())
        )
    }

    fn lars_step_all(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        eta: f64,
        tensors: &[(usize, bool)],
        mut p: DevViewMut<'_>,
        g: DevView<'_>,
        mut mu: DevViewMut<'_>,
        skip: Option<DevView<'_>>,
    ) {
        let h = optim_ops::Lars { lr, momentum, wd, eta };
        run!(self, "lars_step_all", self.lars_step_all_impl(h, tensors, (&mut p, &g, &mut mu), skip.as_ref()))
    }

    fn adamw_step(
        &self,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        step: u64,
        mut p: DevViewMut<'_>,
        g: DevView<'_>,
        mut m: DevViewMut<'_>,
        mut v: DevViewMut<'_>,
        skip: Option<DevView<'_>>,
    ) {
        let h = optim_ops::AdamW { lr, beta1, beta2, eps, wd, step };
        run!(self, "adamw_step", self.adamw_step_impl(h, &mut p, &g, (&mut m, &mut v), skip.as_ref()))
    }
}
