//! The op set: exactly what ResNet-50 + the MoCo heads + the MoCo step need, once per backend.
//!
//! The model, the MoCo step, the optimisers and the loss scaler are written once against this
//! trait; the CPU backend (`cpu/`) is the reference every other backend is tested against.
//!
//! Conventions (every backend):
//! - A `Buf` holds `f32`-valued elements in device memory. A backend may store activations in
//!   lower precision (fp16 on CUDA); `round_act` is where the CPU emulates that rounding.
//! - Views address a contiguous range of a `Buf`, so flat parameter/gradient buffers can be
//!   cut into per-tensor views without copies.
//! - Activations are NHWC (`[n, h, w, c]`, i.e. `[m, c]` rows with `m = n*h*w`); conv weights
//!   OHWI; linear weights `[out, in]`.
//! - Ops that produce an activation or an activation gradient OVERWRITE their output.
//!   Ops that produce a PARAMETER gradient (`*_bwd_filter`, `linear_bwd_weight`, the BN
//!   gamma/beta sums added by the caller) ACCUMULATE into it, so two views and several
//!   micro-batches sum into one gradient buffer that the optimiser step clears.
//! - Results of the training step stay on the device (loss pieces, the log-sum-exp, the loss
//!   value, the inf/NaN flag), so a step reads the host only once, for its metrics. The few
//!   reductions that return host values (`sumsq`, `unscale_check`) wait for the device.

use crate::error::Result;
use crate::shapes::{ConvShape, PoolShape};
use std::ops::Range;

pub trait Backend: Send + Sync {
    /// Device storage of f32-valued elements.
    type Buf: Send;
    /// Read-only view of a contiguous range of a `Buf`.
    type View<'a>
    where
        Self: 'a;
    /// Writable view of a contiguous range of a `Buf`.
    type ViewMut<'a>
    where
        Self: 'a;

    fn name(&self) -> &'static str;

    // ---- memory ----
    /// A zeroed ACTIVATION buffer (activations, activation gradients, compute copies of the
    /// weights): fp16 on CUDA under AMP.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// An activation buffer whose contents are UNSPECIFIED (the CPU backend hands out a
    /// recycled buffer as it is, or NaN in debug builds), for an output that an op overwrites
    /// in full before anything reads it; never for one an op accumulates into. Saves the
    /// zero fill of [`Backend::zeros`]. The default is `zeros`.
    fn alloc(&self, len: usize) -> Result<Self::Buf> {
        self.zeros(len)
    }
    /// A zeroed fp32 buffer for state that must keep full precision: master weights, gradient
    /// accumulation, optimiser moments, BN statistics and their sums.
    fn zeros_master(&self, len: usize) -> Result<Self::Buf> {
        self.zeros(len)
    }
    /// An activation buffer (the input images) from host data.
    fn act_from_host(&self, data: &[f32]) -> Result<Self::Buf> {
        self.from_host(data)
    }
    /// An fp32 buffer from host data (master weights, statistics, queue).
    #[allow(clippy::wrong_self_convention)]
    fn from_host(&self, data: &[f32]) -> Result<Self::Buf>;
    /// A buffer that STORES fp16 from host data (the fp16 queue shard and its saved rows):
    /// values are rounded to fp16, nearest even. A backend with fp16 storage (CUDA) holds
    /// them in 2 bytes; the default, for backends whose buffers are f32 (the CPU), holds the
    /// rounded values in f32, so every backend reads the same numbers back. Ops writing into
    /// such a buffer round on CUDA (the staging conversion); on the CPU the caller rounds
    /// what it writes (see the worker's queue shard).
    #[allow(clippy::wrong_self_convention)]
    fn half_from_host(&self, data: &[f32]) -> Result<Self::Buf> {
        let rounded: Vec<f32> = data.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        self.from_host(&rounded)
    }
    fn to_host(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// `buf[range]` to the host (gradient buckets). The default copies the whole buffer;
    /// backends override it where that matters.
    fn to_host_range(&self, buf: &Self::Buf, range: Range<usize>) -> Result<Vec<f32>> {
        Ok(self.to_host(buf)?[range].to_vec())
    }
    /// Overwrite `buf[range]` with `data` (host to device).
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[f32]) -> Result<()>;
    fn buf_len(buf: &Self::Buf) -> usize;
    fn view<'a>(buf: &'a Self::Buf, range: Range<usize>) -> Self::View<'a>;
    fn view_mut<'a>(buf: &'a mut Self::Buf, range: Range<usize>) -> Self::ViewMut<'a>;
    /// Zero-copy host access where the device memory is host memory (the CPU backend).
    fn host_mut(buf: &mut Self::Buf) -> Option<&mut [f32]>;
    /// Waits for all queued work and returns the first error any op hit since the last check.
    /// Ops that return `()` queue work on an asynchronous device and record their failures
    /// (CUDA); call this once per step. The CPU backend fails eagerly and has nothing to report.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Highest number of bytes of device memory this backend's buffers held at once (the
    /// measured peak a memory plan is compared with); 0 where it is not measured (CPU).
    fn peak_bytes(&self) -> u64 {
        0
    }

    // ---- convolution (no bias) ----
    /// y = conv(x, w). x `[n,h,w,c_in]`, w OHWI, y `[n,oh,ow,c_out]`.
    fn conv2d_fwd(&self, s: &ConvShape, x: Self::View<'_>, w: Self::View<'_>, y: Self::ViewMut<'_>);
    /// dx = conv_transpose(dy, w).
    fn conv2d_bwd_data(&self, s: &ConvShape, dy: Self::View<'_>, w: Self::View<'_>, dx: Self::ViewMut<'_>);
    /// dw += correlation(x, dy).
    fn conv2d_bwd_filter(&self, s: &ConvShape, x: Self::View<'_>, dy: Self::View<'_>, dw: Self::ViewMut<'_>);

    // ---- batch norm over [m, c] rows ----
    /// Per-channel mean and biased variance of x `[m, c]`.
    fn bn_stats(
        &self,
        m: usize,
        c: usize,
        x: Self::View<'_>,
        mean: Self::ViewMut<'_>,
        var: Self::ViewMut<'_>,
    );
    /// y = (x - mean) / sqrt(var + eps) * gamma + beta, then ReLU if `relu`.
    /// gamma/beta absent = affine-free (gamma 1, beta 0).
    #[allow(clippy::too_many_arguments)]
    fn bn_apply(
        &self,
        m: usize,
        c: usize,
        x: Self::View<'_>,
        mean: Self::View<'_>,
        var: Self::View<'_>,
        eps: f32,
        gamma: Option<Self::View<'_>>,
        beta: Option<Self::View<'_>>,
        relu: bool,
        y: Self::ViewMut<'_>,
    );
    /// Per-channel sums for the backward: sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat),
    /// where xhat = (x - mean)/sqrt(var + eps). Overwrites both. (These are also dbeta and
    /// dgamma; under SyncBN they are all-reduced before `bn_bwd_apply`.)
    #[allow(clippy::too_many_arguments)]
    fn bn_bwd_reduce(
        &self,
        m: usize,
        c: usize,
        x: Self::View<'_>,
        dy: Self::View<'_>,
        mean: Self::View<'_>,
        var: Self::View<'_>,
        eps: f32,
        sum_dy: Self::ViewMut<'_>,
        sum_dy_xhat: Self::ViewMut<'_>,
    );
    /// dx = gamma * invstd * (dy - sum_dy/count - xhat * sum_dy_xhat/count), where `count` is
    /// the number of rows the statistics were taken over (all ranks' rows under SyncBN).
    #[allow(clippy::too_many_arguments)]
    fn bn_bwd_apply(
        &self,
        m: usize,
        c: usize,
        count: usize,
        x: Self::View<'_>,
        dy: Self::View<'_>,
        mean: Self::View<'_>,
        var: Self::View<'_>,
        eps: f32,
        gamma: Option<Self::View<'_>>,
        sum_dy: Self::View<'_>,
        sum_dy_xhat: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    );
    /// running = (1 - momentum) * running + momentum * batch stat, with the variance made
    /// unbiased (var * count / (count - 1)) as PyTorch does. `running` is `[2c]`: the running
    /// mean followed by the running variance (the layout of the model's running-stat buffer).
    #[allow(clippy::too_many_arguments)]
    fn bn_running_update(
        &self,
        c: usize,
        mean: Self::View<'_>,
        var: Self::View<'_>,
        count: usize,
        momentum: f32,
        running: Self::ViewMut<'_>,
    );

    /// y `[c]` = the average of the `groups` rows of x `[groups, c]`, accumulated in group order
    /// as `x / groups` (SplitBatchNorm: the key side's shuffle-BN groups update the running
    /// statistics with the average of their statistics, computed without leaving the device).
    fn bn_group_mean(&self, groups: usize, c: usize, x: Self::View<'_>, y: Self::ViewMut<'_>);
    /// SyncBN's exchange buffer from this rank's biased moments: `packed` `[2c]` = `[mean,
    /// var + mean * mean]` (fp32, each operation rounded on its own: no fused multiply-add), so
    /// that one sum over ranks of `packed` gives what the global moments need.
    fn bn_moments_pack(&self, c: usize, mean: Self::View<'_>, var: Self::View<'_>, packed: Self::ViewMut<'_>);
    /// The global moments from `packed` summed over `world` ranks: `mean = s / world`,
    /// `var = max(s2 / world - mean * mean, 0)` (fp32, each operation rounded on its own).
    fn bn_moments_unpack(
        &self,
        c: usize,
        world: usize,
        packed: Self::View<'_>,
        mean: Self::ViewMut<'_>,
        var: Self::ViewMut<'_>,
    );

    // ---- elementwise ----
    fn relu_inplace(&self, x: Self::ViewMut<'_>);
    /// dx = dy where y > 0 else 0 (y is the ReLU output).
    fn relu_bwd(&self, y: Self::View<'_>, dy: Self::View<'_>, dx: Self::ViewMut<'_>);
    /// y += x.
    fn add_inplace(&self, x: Self::View<'_>, y: Self::ViewMut<'_>);
    /// y = alpha * x + beta * y.
    fn axpby(&self, alpha: f32, x: Self::View<'_>, beta: f32, y: Self::ViewMut<'_>);
    fn copy(&self, x: Self::View<'_>, y: Self::ViewMut<'_>);
    fn fill(&self, x: Self::ViewMut<'_>, value: f32);
    fn scale(&self, x: Self::ViewMut<'_>, alpha: f32);
    /// Round to fp16 and back in place when the backend emulates AMP (CPU); a no-op otherwise.
    fn round_act(&self, x: Self::ViewMut<'_>);

    // ---- pooling ----
    /// 3x3/2 pad 1 max pool.
    fn maxpool_fwd(&self, s: &PoolShape, x: Self::View<'_>, y: Self::ViewMut<'_>);
    /// Routes each dy to the first maximal input of its window (recomputed from x); dx overwritten.
    fn maxpool_bwd(&self, s: &PoolShape, x: Self::View<'_>, dy: Self::View<'_>, dx: Self::ViewMut<'_>);
    /// y[n, c] = mean over hw of x[n, hw, c].
    fn avgpool_fwd(&self, n: usize, hw: usize, c: usize, x: Self::View<'_>, y: Self::ViewMut<'_>);
    fn avgpool_bwd(&self, n: usize, hw: usize, c: usize, dy: Self::View<'_>, dx: Self::ViewMut<'_>);

    // ---- linear (no bias) and logits ----
    /// y[n, out] = x[n, in] . w[out, in]^T. Also computes logits q . k^T.
    fn linear_fwd(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: Self::View<'_>,
        w: Self::View<'_>,
        y: Self::ViewMut<'_>,
    );
    /// dx[n, in] = dy[n, out] . w[out, in] (overwrites dx).
    fn linear_bwd_data(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        dy: Self::View<'_>,
        w: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    );
    /// dw[out, in] += dy^T . x.
    fn linear_bwd_weight(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: Self::View<'_>,
        dy: Self::View<'_>,
        dw: Self::ViewMut<'_>,
    );

    // ---- L2 normalisation over rows of [n, d] ----
    /// y = x / max(|x|, 1e-12) (F.normalize); `norm[n]` keeps max(|x|, 1e-12) for the backward.
    fn l2norm_fwd(
        &self,
        n: usize,
        d: usize,
        x: Self::View<'_>,
        y: Self::ViewMut<'_>,
        norm: Self::ViewMut<'_>,
    );
    /// dx = (dy - y * <y, dy>) / norm.
    fn l2norm_bwd(
        &self,
        n: usize,
        d: usize,
        y: Self::View<'_>,
        norm: Self::View<'_>,
        dy: Self::View<'_>,
        dx: Self::ViewMut<'_>,
    );

    // ---- softmax cross-entropy pieces (the distributed log-sum-exp is assembled from these) ----
    /// Per row of logits `[rows, cols]`: max and sum(exp(l - max)), skipping -inf entries
    /// (masked), into `max[rows]` and `sum[rows]` (fp32). A fully masked row gives max = -inf,
    /// sum = 0.
    fn row_max_sumexp(
        &self,
        rows: usize,
        cols: usize,
        logits: Self::View<'_>,
        max: Self::ViewMut<'_>,
        sum: Self::ViewMut<'_>,
    );
    /// The distributed log-sum-exp: lse[r] over `parts` blocks of columns from each block's
    /// (max, sum-exp) pair of row r; `max` and `sum` are `[parts][rows]`. Parts with max = -inf
    /// contribute nothing; the sum runs in f64 in part order.
    fn lse_combine(
        &self,
        rows: usize,
        parts: usize,
        max: Self::View<'_>,
        sum: Self::View<'_>,
        lse: Self::ViewMut<'_>,
    );
    /// out[0] = factor * mean over rows of (lse - pos), summed in f64 in row order: one loss
    /// term, left on the device.
    fn xent_loss(
        &self,
        rows: usize,
        lse: Self::View<'_>,
        pos: Self::View<'_>,
        factor: f32,
        out: Self::ViewMut<'_>,
    );
    /// Set logits[r, c] = -inf for every (r, c) in `cells` (host list).
    fn mask_cells(&self, cols: usize, logits: Self::ViewMut<'_>, cells: &[(u32, u32)]);
    /// Own-image masking from device-side dataset indices: logits[r, c] = -inf wherever
    /// `row_idx[r] >= 0`, `row_idx[r] == col_idx[c]` and `c != positives + r` (row r's positive
    /// column is kept; None: no positive in this block).
    /// `row_idx` `[rows]` and `col_idx` `[cols]` hold integer-valued fp32 indices on the device.
    fn mask_own_image(
        &self,
        rows: usize,
        cols: usize,
        row_idx: Self::View<'_>,
        col_idx: Self::View<'_>,
        positives: Option<usize>,
        logits: Self::ViewMut<'_>,
    );
    /// dlogits = scale * (exp(logits - lse[row]) - onehot(label[row])), label -1 = none in this
    /// block; -inf logits give 0. `lse` (fp32, on the device) and `labels` (host) have `rows`
    /// entries.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_bwd(
        &self,
        rows: usize,
        cols: usize,
        logits: Self::View<'_>,
        lse: Self::View<'_>,
        labels: &[i32],
        scale: f32,
        dlogits: Self::ViewMut<'_>,
    );
    /// out[r] = logits[r, label[r]] for rows with label >= 0 (else 0); out is fp32 `[rows]`.
    fn gather_cols(
        &self,
        rows: usize,
        cols: usize,
        logits: Self::View<'_>,
        labels: &[i32],
        out: Self::ViewMut<'_>,
    );

    // ---- the MoCo queue shard, with its write pointer on the device ----
    /// The fused pointer-advance enqueue: with p = `ptr[0]`, writes `keys` (`[b, dim]`) and
    /// `key_idx` (`[b]`, b = its length) at rows `[p, p + b)` of `queue` (`[rows, dim]`) and
    /// `queue_idx` (`[rows]`), and sets `ptr[0] = (p + b) % rows`, without the host knowing p.
    /// The rows it overwrites go to `saved_keys` (`[b, dim]`) and `saved_idx` (`[b]`) and p to
    /// `saved_ptr[0]` (always, also when refused), so a skipped step can be undone.
    /// The indices and the pointer are integer-valued fp32 (exact below 2^24). When b does not
    /// divide `rows` or p is not an integer multiple of b in `[0, rows)` (a corrupted pointer),
    /// nothing is written and `error[0]` is set to the code [`describe_queue_error`] explains;
    /// the caller reads it with the step's metrics. `keys` may be in any precision; `half`
    /// says the queue stores fp16 (it was made by `half_from_host`): the keys are rounded to
    /// fp16 (nearest even) as they are written, on every backend (CUDA's buffer is fp16 and must
    /// agree with `half`; the CPU's holds the rounded values in f32).
    #[allow(clippy::too_many_arguments)]
    fn queue_enqueue(
        &self,
        rows: usize,
        dim: usize,
        half: bool,
        keys: Self::View<'_>,
        key_idx: Self::View<'_>,
        queue: Self::ViewMut<'_>,
        queue_idx: Self::ViewMut<'_>,
        ptr: Self::ViewMut<'_>,
        error: Self::ViewMut<'_>,
        saved: [Self::ViewMut<'_>; 3],
    );

    // ---- optimiser pieces on flat fp32 buffers ----
    /// Sum of squares (in f64) of x, to the host: LARS norms, gradient norms.
    fn sumsq(&self, x: Self::View<'_>) -> f64;
    /// Sum of squares (in f64) of (y + alpha * x), to the host: the LARS update norm |g + wd*p|.
    fn sumsq_axpy(&self, alpha: f32, x: Self::View<'_>, y: Self::View<'_>) -> f64;
    /// theta_k = m * theta_k + (1 - m) * theta_q.
    fn ema(&self, m: f32, theta_q: Self::View<'_>, theta_k: Self::ViewMut<'_>);
    /// g *= inv_scale; sets `found[0]` (fp32, on the device) to 1 if any element of g is inf
    /// or NaN (before or after), and leaves it as it was otherwise, so several calls OR into
    /// one flag that the caller zeroed.
    fn unscale_check(&self, g: Self::ViewMut<'_>, inv_scale: f32, found: Self::ViewMut<'_>);
    /// PyTorch SGD: d = g + wd*p; mu = momentum*mu + d; p -= lr * mu. The optimiser steps do
    /// nothing when `skip` (one fp32 flag on the device, e.g. the inf/NaN verdict) is non-zero,
    /// so an overflowed step is skipped without the host reading the verdict first.
    #[allow(clippy::too_many_arguments)]
    fn sgd_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        p: Self::ViewMut<'_>,
        g: Self::View<'_>,
        mu: Self::ViewMut<'_>,
        skip: Option<Self::View<'_>>,
    );
    /// LARS with a precomputed trust ratio: d = (g + wd*p) * trust; mu = momentum*mu + d;
    /// p -= lr * mu. (trust = 1 and wd = 0 for the excluded 1-D tensors.)
    #[allow(clippy::too_many_arguments)]
    fn lars_step(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        trust: f32,
        p: Self::ViewMut<'_>,
        g: Self::View<'_>,
        mu: Self::ViewMut<'_>,
        skip: Option<Self::View<'_>>,
    );
    /// LARS on every tensor of a flat buffer in one call (MoCo v3's LARS and its exclusions):
    /// tensor s is the next `tensors[s].0` elements of p, g and mu. An adapting tensor
    /// (`tensors[s].1`) steps with d = (g + wd*p) * trust, trust = eta * |p| / |g + wd*p| (f64
    /// norms; 1 when either is 0); an excluded one (BN gammas/betas) with wd = 0 and trust = 1;
    /// then mu = momentum*mu + d; p -= lr * mu. The norms and trust ratios stay on the device
    /// (one segmented reduction); nothing changes when `skip` is set.
    #[allow(clippy::too_many_arguments)]
    fn lars_step_all(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        eta: f64,
        tensors: &[(usize, bool)],
        p: Self::ViewMut<'_>,
        g: Self::View<'_>,
        mu: Self::ViewMut<'_>,
        skip: Option<Self::View<'_>>,
    );
    /// PyTorch AdamW (decoupled wd; bias correction with 1-based `step`).
    #[allow(clippy::too_many_arguments)]
    fn adamw_step(
        &self,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        step: u64,
        p: Self::ViewMut<'_>,
        g: Self::View<'_>,
        m: Self::ViewMut<'_>,
        v: Self::ViewMut<'_>,
        skip: Option<Self::View<'_>>,
    );
}

/// Error codes of [`Backend::queue_enqueue`] (the same on every backend; see cu/queue.cu).
pub mod queue_error {
    /// The keys per enqueue do not divide the shard's rows.
    pub const DIVISIBILITY: f32 = 1.0;
    /// The device pointer is not an integer multiple of the keys per enqueue in [0, rows).
    pub const POINTER: f32 = 2.0;
    /// The CUDA kernel was launched with more than one block.
    pub const LAUNCH: f32 = 3.0;
}

/// What a queue error flag written by [`Backend::queue_enqueue`] means.
pub fn describe_queue_error(code: f32) -> &'static str {
    if code == 0.0 {
        "no error"
    } else if code == queue_error::DIVISIBILITY {
        "the keys per enqueue do not divide the queue shard's rows"
    } else if code == queue_error::POINTER {
        "the queue's write pointer is not a multiple of the keys per enqueue inside the shard (corrupted)"
    } else if code == queue_error::LAUNCH {
        "the enqueue kernel was launched with more than one block"
    } else {
        "unknown queue error code"
    }
}
