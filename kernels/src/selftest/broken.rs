//! A deliberately broken backend for testing the self-test: the CPU backend with the sign of
//! one op's output flipped (or its verdict inverted), so a test can check that the self-test
//! fails exactly there.

use crate::backend::Backend;
use crate::cpu::{Cpu, HostBuf};
use crate::error::Result;
use crate::shapes::{ConvShape, PoolShape};
use std::ops::Range;

/// Which op is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    ConvBwdFilter,
    BnApply,
    SoftmaxXentBwd,
    LarsStep,
    UnscaleCheck,
    /// `zeros` fails as a refused allocation would.
    Zeros,
}

impl Flip {
    /// The `Backend` method name, as the report's rows start with it.
    pub fn op(self) -> &'static str {
        match self {
            Flip::ConvBwdFilter => "conv2d_bwd_filter",
            Flip::BnApply => "bn_apply",
            Flip::SoftmaxXentBwd => "softmax_xent_bwd",
            Flip::LarsStep => "lars_step",
            Flip::UnscaleCheck => "unscale_check",
            Flip::Zeros => "zeros",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Broken {
    pub inner: Cpu,
    pub flip: Flip,
}

fn negate(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = -*v);
}

impl Backend for Broken {
    type Buf = HostBuf;
    type View<'a> = &'a [f32];
    type ViewMut<'a> = &'a mut [f32];

    fn name(&self) -> &'static str {
        "broken-cpu"
    }
    fn zeros(&self, len: usize) -> Result<HostBuf> {
        if self.flip == Flip::Zeros {
            return Err(crate::error::KernelError::OutOfMemory(format!("test refusal of {len} elements")));
        }
        self.inner.zeros(len)
    }
    fn zeros_master(&self, len: usize) -> Result<HostBuf> {
        self.inner.zeros_master(len)
    }
    fn act_from_host(&self, data: &[f32]) -> Result<HostBuf> {
        self.inner.act_from_host(data)
    }
    fn from_host(&self, data: &[f32]) -> Result<HostBuf> {
        self.inner.from_host(data)
    }
    fn to_host(&self, buf: &HostBuf) -> Result<Vec<f32>> {
        self.inner.to_host(buf)
    }
    fn write(&self, buf: &mut HostBuf, offset: usize, data: &[f32]) -> Result<()> {
        self.inner.write(buf, offset, data)
    }
    fn buf_len(buf: &HostBuf) -> usize {
        buf.len()
    }
    fn view(buf: &HostBuf, range: Range<usize>) -> &[f32] {
        &buf[range]
    }
    fn view_mut(buf: &mut HostBuf, range: Range<usize>) -> &mut [f32] {
        &mut buf[range]
    }
    fn host_mut(buf: &mut HostBuf) -> Option<&mut [f32]> {
        Some(buf)
    }
    fn conv2d_fwd(&self, s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
        self.inner.conv2d_fwd(s, x, w, y)
    }
    fn conv2d_bwd_data(&self, s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        self.inner.conv2d_bwd_data(s, dy, w, dx)
    }
    fn conv2d_bwd_filter(&self, s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        self.inner.conv2d_bwd_filter(s, x, dy, &mut *dw);
        if self.flip == Flip::ConvBwdFilter {
            negate(dw);
        }
    }
    fn bn_stats(&self, m: usize, c: usize, x: &[f32], mean: &mut [f32], var: &mut [f32]) {
        self.inner.bn_stats(m, c, x, mean, var)
    }
    fn bn_apply(
        &self,
        m: usize,
        c: usize,
        x: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
        gamma: Option<&[f32]>,
        beta: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        self.inner.bn_apply(m, c, x, mean, var, eps, gamma, beta, relu, &mut *y);
        if self.flip == Flip::BnApply {
            negate(y);
        }
    }
    fn bn_bwd_reduce(
        &self,
        m: usize,
        c: usize,
        x: &[f32],
        dy: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
        sum_dy: &mut [f32],
        sum_dy_xhat: &mut [f32],
    ) {
        self.inner.bn_bwd_reduce(m, c, x, dy, mean, var, eps, sum_dy, sum_dy_xhat)
    }
    fn bn_bwd_apply(
        &self,
        m: usize,
        c: usize,
        count: usize,
        x: &[f32],
        dy: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
        gamma: Option<&[f32]>,
        sum_dy: &[f32],
        sum_dy_xhat: &[f32],
        dx: &mut [f32],
    ) {
        self.inner.bn_bwd_apply(m, c, count, x, dy, mean, var, eps, gamma, sum_dy, sum_dy_xhat, dx)
    }
    fn bn_running_update(
        &self,
        c: usize,
        mean: &[f32],
        var: &[f32],
        count: usize,
        momentum: f32,
        running: &mut [f32],
    ) {
        self.inner.bn_running_update(c, mean, var, count, momentum, running)
    }
    fn bn_group_mean(&self, groups: usize, c: usize, x: &[f32], y: &mut [f32]) {
        self.inner.bn_group_mean(groups, c, x, y)
    }
    fn bn_moments_pack(&self, c: usize, mean: &[f32], var: &[f32], packed: &mut [f32]) {
        self.inner.bn_moments_pack(c, mean, var, packed)
    }
    fn bn_moments_unpack(&self, c: usize, world: usize, packed: &[f32], mean: &mut [f32], var: &mut [f32]) {
        self.inner.bn_moments_unpack(c, world, packed, mean, var)
    }
    fn relu_inplace(&self, x: &mut [f32]) {
        self.inner.relu_inplace(x)
    }
    fn relu_bwd(&self, y: &[f32], dy: &[f32], dx: &mut [f32]) {
        self.inner.relu_bwd(y, dy, dx)
    }
    fn add_inplace(&self, x: &[f32], y: &mut [f32]) {
        self.inner.add_inplace(x, y)
    }
    fn axpby(&self, alpha: f32, x: &[f32], beta: f32, y: &mut [f32]) {
        self.inner.axpby(alpha, x, beta, y)
    }
    fn copy(&self, x: &[f32], y: &mut [f32]) {
        self.inner.copy(x, y)
    }
    fn fill(&self, x: &mut [f32], value: f32) {
        self.inner.fill(x, value)
    }
    fn scale(&self, x: &mut [f32], alpha: f32) {
        self.inner.scale(x, alpha)
    }
    fn round_act(&self, x: &mut [f32]) {
        self.inner.round_act(x)
    }
    fn maxpool_fwd(&self, s: &PoolShape, x: &[f32], y: &mut [f32]) {
        self.inner.maxpool_fwd(s, x, y)
    }
    fn maxpool_bwd(&self, s: &PoolShape, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        self.inner.maxpool_bwd(s, x, dy, dx)
    }
    fn avgpool_fwd(&self, n: usize, hw: usize, c: usize, x: &[f32], y: &mut [f32]) {
        self.inner.avgpool_fwd(n, hw, c, x, y)
    }
    fn avgpool_bwd(&self, n: usize, hw: usize, c: usize, dy: &[f32], dx: &mut [f32]) {
        self.inner.avgpool_bwd(n, hw, c, dy, dx)
    }
    fn linear_fwd(&self, n: usize, d_in: usize, d_out: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
        self.inner.linear_fwd(n, d_in, d_out, x, w, y)
    }
    fn linear_bwd_data(&self, n: usize, d_in: usize, d_out: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        self.inner.linear_bwd_data(n, d_in, d_out, dy, w, dx)
    }
    fn linear_bwd_weight(&self, n: usize, d_in: usize, d_out: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        self.inner.linear_bwd_weight(n, d_in, d_out, x, dy, dw)
    }
    fn l2norm_fwd(&self, n: usize, d: usize, x: &[f32], y: &mut [f32], norm: &mut [f32]) {
        self.inner.l2norm_fwd(n, d, x, y, norm)
    }
    fn l2norm_bwd(&self, n: usize, d: usize, y: &[f32], norm: &[f32], dy: &[f32], dx: &mut [f32]) {
        self.inner.l2norm_bwd(n, d, y, norm, dy, dx)
    }
    fn row_max_sumexp(&self, rows: usize, cols: usize, logits: &[f32], max: &mut [f32], sum: &mut [f32]) {
        self.inner.row_max_sumexp(rows, cols, logits, max, sum)
    }
    fn lse_combine(&self, rows: usize, parts: usize, max: &[f32], sum: &[f32], lse: &mut [f32]) {
        self.inner.lse_combine(rows, parts, max, sum, lse)
    }
    fn xent_loss(&self, rows: usize, lse: &[f32], pos: &[f32], factor: f32, out: &mut [f32]) {
        self.inner.xent_loss(rows, lse, pos, factor, out)
    }
    fn mask_cells(&self, cols: usize, logits: &mut [f32], cells: &[(u32, u32)]) {
        self.inner.mask_cells(cols, logits, cells)
    }
    fn mask_own_image(
        &self,
        rows: usize,
        cols: usize,
        row_idx: &[f32],
        col_idx: &[f32],
        positives: Option<usize>,
        logits: &mut [f32],
    ) {
        self.inner.mask_own_image(rows, cols, row_idx, col_idx, positives, logits)
    }
    #[allow(clippy::too_many_arguments)]
    fn queue_enqueue(
        &self,
        rows: usize,
        dim: usize,
        half: bool,
        keys: &[f32],
        key_idx: &[f32],
        queue: &mut [f32],
        queue_idx: &mut [f32],
        ptr: &mut [f32],
        error: &mut [f32],
        saved: [&mut [f32]; 3],
    ) {
        self.inner.queue_enqueue(rows, dim, half, keys, key_idx, queue, queue_idx, ptr, error, saved)
    }
    fn softmax_xent_bwd(
        &self,
        rows: usize,
        cols: usize,
        logits: &[f32],
        lse: &[f32],
        labels: &[i32],
        scale: f32,
        dlogits: &mut [f32],
    ) {
        self.inner.softmax_xent_bwd(rows, cols, logits, lse, labels, scale, &mut *dlogits);
        if self.flip == Flip::SoftmaxXentBwd {
            negate(dlogits);
        }
    }
    fn gather_cols(&self, rows: usize, cols: usize, logits: &[f32], labels: &[i32], out: &mut [f32]) {
        self.inner.gather_cols(rows, cols, logits, labels, out)
    }
    fn sumsq(&self, x: &[f32]) -> f64 {
        self.inner.sumsq(x)
    }
    fn sumsq_axpy(&self, alpha: f32, x: &[f32], y: &[f32]) -> f64 {
        self.inner.sumsq_axpy(alpha, x, y)
    }
    fn ema(&self, m: f32, theta_q: &[f32], theta_k: &mut [f32]) {
        self.inner.ema(m, theta_q, theta_k)
    }
    fn unscale_check(&self, g: &mut [f32], inv_scale: f32, found: &mut [f32]) {
        let mut bad = [0.0f32];
        self.inner.unscale_check(g, inv_scale, &mut bad);
        if (bad[0] != 0.0) != (self.flip == Flip::UnscaleCheck) {
            found[0] = 1.0;
        }
    }
    fn sgd_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        p: &mut [f32],
        g: &[f32],
        mu: &mut [f32],
        skip: Option<&[f32]>,
    ) {
        self.inner.sgd_step(lr, momentum, wd, p, g, mu, skip)
    }
    fn lars_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        trust: f32,
        p: &mut [f32],
        g: &[f32],
        mu: &mut [f32],
        skip: Option<&[f32]>,
    ) {
        // The bug: the update goes the wrong way.
        let lr = if self.flip == Flip::LarsStep { -lr } else { lr };
        self.inner.lars_step(lr, momentum, wd, trust, p, g, mu, skip)
    }
    fn lars_step_all(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        eta: f64,
        tensors: &[(usize, bool)],
        p: &mut [f32],
        g: &[f32],
        mu: &mut [f32],
        skip: Option<&[f32]>,
    ) {
        self.inner.lars_step_all(lr, momentum, wd, eta, tensors, p, g, mu, skip)
    }
    fn adamw_step(
        &self,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        step: u64,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        skip: Option<&[f32]>,
    ) {
        self.inner.adamw_step(lr, beta1, beta2, eps, wd, step, p, g, m, v, skip)
    }
}
