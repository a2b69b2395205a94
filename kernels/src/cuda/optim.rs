//! Launches of `cu/optim.cu`: EMA, gradient unscale with the inf/NaN flag, SGD / LARS / AdamW
//! on flat fp32 master weights (each optionally writing the fp16 copy in the same pass), and
//! the sums of squares for LARS. Compiled, not yet run on a GPU.
//!
//! Device flags are fp32 0/1 values in device memory: `found_inf` (set by `unscale_check`,
//! zeroed by the caller before a step) and `skip` (optional; non-zero makes a step a no-op), so
//! a step with overflowed gradients can be skipped without the host reading the flag.

use crate::cuda::launch::{expect_len, to_i32, Grid, Kernel, KernelDef, Param::*, BLOCK};
use crate::cuda::sources::{self, KernelSource};
use crate::error::{KernelError, Result};
use crate::launch;
use cudarc::driver::{CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use half::f16;
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::OPTIM;

pub static EMA: KernelDef = KernelDef { name: "ema_f32", params: &[I32, F32, Ptr, Ptr, Ptr] };
pub static UNSCALE_CHECK: KernelDef = KernelDef { name: "unscale_check_f32", params: &[I32, F32, Ptr, Ptr] };
pub static SGD_STEP: KernelDef =
    KernelDef { name: "sgd_step_f32", params: &[I32, F32, F32, F32, Ptr, Ptr, Ptr, Ptr, Ptr] };
pub static SUMSQ_PARTIAL: KernelDef =
    KernelDef { name: "sumsq_segments_partial_f32", params: &[I32, Ptr, Ptr, I32, F32, Ptr, Ptr, Ptr] };
pub static SUMSQ_FINALIZE: KernelDef =
    KernelDef { name: "sumsq_segments_finalize", params: &[I32, Ptr, Ptr, Ptr] };
pub static LARS_TRUST: KernelDef = KernelDef { name: "lars_trust", params: &[I32, F32, Ptr, Ptr, Ptr, Ptr] };
pub static LARS_STEP: KernelDef = KernelDef {
    name: "lars_step_f32",
    params: &[I32, Ptr, Ptr, I32, Ptr, Ptr, F32, F32, F32, Ptr, Ptr, Ptr, Ptr, Ptr],
};
pub static ADAMW_STEP: KernelDef = KernelDef {
    name: "adamw_step_f32",
    params: &[I32, F32, F32, F32, F32, F32, F32, F32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr],
};

pub static LARS_STEP_SCALAR: KernelDef =
    KernelDef { name: "lars_step_scalar_f32", params: &[I32, F32, F32, F32, F32, Ptr, Ptr, Ptr, Ptr, Ptr] };
pub static SUMSQ_RANGE_PARTIAL: KernelDef =
    KernelDef { name: "sumsq_partial_f32", params: &[I32, I32, F32, Ptr, Ptr, Ptr] };

pub static DEFS: &[&KernelDef] = &[
    &EMA,
    &UNSCALE_CHECK,
    &SGD_STEP,
    &SUMSQ_PARTIAL,
    &SUMSQ_FINALIZE,
    &LARS_TRUST,
    &LARS_STEP,
    &ADAMW_STEP,
    &LARS_STEP_SCALAR,
    &SUMSQ_RANGE_PARTIAL,
];

/// Most partial sums one [`Optim::sumsq_range`] produces (the host adds them in order).
pub const MAX_RANGE_PARTIALS: usize = 1024;

/// Elements per block of [`Optim::sumsq_range`] for `n` elements: a function of `n` only, so
/// the summation order (and the result) is the same on every card.
pub fn range_chunk(n: usize) -> usize {
    SEGMENT_CHUNK.max(n.div_ceil(MAX_RANGE_PARTIALS))
}

/// Elements per block of the segment kernels (16 per thread at 256 threads).
pub const SEGMENT_CHUNK: usize = 16 * BLOCK as usize;

/// Host-side segment tables: element starts and block starts, `n_seg + 1` entries each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentTables {
    pub seg_start: Vec<i32>,
    pub block_start: Vec<i32>,
}

impl SegmentTables {
    /// Tables for tensors of the given lengths laid out back to back in one flat buffer.
    pub fn from_lens(lens: &[usize]) -> Result<Self> {
        const OP: &str = "segments";
        if lens.is_empty() {
            return Err(KernelError::Shape { op: OP, detail: "no tensors".into() });
        }
        let mut seg_start = Vec::with_capacity(lens.len() + 1);
        let mut block_start = Vec::with_capacity(lens.len() + 1);
        let (mut elems, mut blocks) = (0usize, 0usize);
        seg_start.push(0);
        block_start.push(0);
        for &len in lens {
            elems += len;
            blocks += len.div_ceil(SEGMENT_CHUNK);
            seg_start.push(to_i32(OP, "total elements", elems)?);
            block_start.push(to_i32(OP, "total blocks", blocks)?);
        }
        Ok(SegmentTables { seg_start, block_start })
    }

    pub fn n_seg(&self) -> usize {
        self.seg_start.len() - 1
    }
    pub fn total_elems(&self) -> usize {
        self.seg_start[self.n_seg()] as usize
    }
    pub fn total_blocks(&self) -> usize {
        self.block_start[self.n_seg()] as usize
    }
}

/// The segment tables in device memory, with their validated host copy. Built once per flat
/// buffer layout (the model's parameter list does not change during a run).
#[derive(Debug)]
pub struct Segments {
    host: SegmentTables,
    seg_start: CudaSlice<i32>,
    block_start: CudaSlice<i32>,
}

impl Segments {
    pub fn upload(stream: &Arc<CudaStream>, host: SegmentTables) -> Result<Self> {
        let up = |v: &Vec<i32>| {
            stream.clone_htod(v).map_err(|e| KernelError::Cuda { op: "segments", detail: format!("{e:?}") })
        };
        Ok(Segments { seg_start: up(&host.seg_start)?, block_start: up(&host.block_start)?, host })
    }

    pub fn host(&self) -> &SegmentTables {
        &self.host
    }

    fn config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.host.total_blocks().max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// The optimiser kernels of one device.
#[derive(Debug)]
pub struct Optim {
    grid: Grid,
    ema: Kernel,
    unscale_check: Kernel,
    sgd_step: Kernel,
    sumsq_partial: Kernel,
    sumsq_finalize: Kernel,
    lars_trust: Kernel,
    lars_step: Kernel,
    adamw_step: Kernel,
    lars_step_scalar: Kernel,
    sumsq_range_partial: Kernel,
}

fn check_flag(op: &'static str, what: &str, len: usize) -> Result<()> {
    expect_len(op, what, len, 1)
}

impl Optim {
    pub fn load(module: &Arc<CudaModule>, grid: Grid) -> Result<Self> {
        Ok(Optim {
            grid,
            ema: Kernel::load(module, &EMA)?,
            unscale_check: Kernel::load(module, &UNSCALE_CHECK)?,
            sgd_step: Kernel::load(module, &SGD_STEP)?,
            sumsq_partial: Kernel::load(module, &SUMSQ_PARTIAL)?,
            sumsq_finalize: Kernel::load(module, &SUMSQ_FINALIZE)?,
            lars_trust: Kernel::load(module, &LARS_TRUST)?,
            lars_step: Kernel::load(module, &LARS_STEP)?,
            adamw_step: Kernel::load(module, &ADAMW_STEP)?,
            lars_step_scalar: Kernel::load(module, &LARS_STEP_SCALAR)?,
            sumsq_range_partial: Kernel::load(module, &SUMSQ_RANGE_PARTIAL)?,
        })
    }

    /// theta_k = m theta_k + (1 - m) theta_q; theta_k16 = fp16(theta_k) when given.
    pub fn ema(
        &self,
        stream: &CudaStream,
        m: f32,
        theta_q: &CudaView<'_, f32>,
        theta_k: &mut CudaViewMut<'_, f32>,
        theta_k16: Option<&mut CudaViewMut<'_, f16>>,
    ) -> Result<()> {
        const OP: &str = "ema";
        let n = to_i32(OP, "theta_k", theta_k.len())?;
        expect_len(OP, "theta_q", theta_q.len(), theta_k.len())?;
        if let Some(t) = &theta_k16 {
            expect_len(OP, "theta_k16", t.len(), theta_k.len())?;
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: theta_q and theta_k hold n floats, theta_k16 (when given) n fp16 values
        // (checked above); an absent copy is passed as null, which the kernel tests.
        unsafe {
            launch!(stream, &self.ema, self.grid.elems(n as usize), &n, &m, theta_q, theta_k, theta_k16)
        }
    }

    /// g *= inv_scale; sets `found_inf` (one device float) to 1 if any element is inf/NaN
    /// before or after. The caller zeroes `found_inf` once per step.
    pub fn unscale_check(
        &self,
        stream: &CudaStream,
        inv_scale: f32,
        g: &mut CudaViewMut<'_, f32>,
        found_inf: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "unscale_check";
        let n = to_i32(OP, "g", g.len())?;
        check_flag(OP, "found_inf", found_inf.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: g holds n floats and found_inf one float (checked above); the kernel only
        // stores 1.0 into found_inf[0].
        unsafe {
            launch!(stream, &self.unscale_check, self.grid.elems(n as usize), &n, &inv_scale, g, found_inf)
        }
    }

    /// PyTorch SGD: d = g + wd p; mu = momentum mu + d; p -= lr mu; p16 = fp16(p) when given.
    /// Does nothing when `skip` is given and non-zero.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_step(
        &self,
        stream: &CudaStream,
        lr: f32,
        momentum: f32,
        wd: f32,
        skip: Option<&CudaView<'_, f32>>,
        p: &mut CudaViewMut<'_, f32>,
        g: &CudaView<'_, f32>,
        mu: &mut CudaViewMut<'_, f32>,
        p16: Option<&mut CudaViewMut<'_, f16>>,
    ) -> Result<()> {
        const OP: &str = "sgd_step";
        let n = to_i32(OP, "p", p.len())?;
        expect_len(OP, "g", g.len(), p.len())?;
        expect_len(OP, "mu", mu.len(), p.len())?;
        if let Some(c) = &p16 {
            expect_len(OP, "p16", c.len(), p.len())?;
        }
        if let Some(s) = skip {
            check_flag(OP, "skip", s.len())?;
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: p, g, mu hold n floats, p16 (when given) n fp16 values, skip (when given) one float
        // (checked above); an absent skip is passed as null, which the kernel tests.
        unsafe {
            launch!(
                stream,
                &self.sgd_step,
                self.grid.elems(n as usize),
                &n,
                &lr,
                &momentum,
                &wd,
                skip,
                p,
                g,
                mu,
                p16
            )
        }
    }

    /// Per-tensor sums of squares of (y + alpha x) (x absent: of y), in double, into `sumsq`
    /// (`n_seg` doubles). `partial` is scratch of `total_blocks` doubles.
    #[allow(clippy::too_many_arguments)]
    pub fn sumsq_segments(
        &self,
        stream: &CudaStream,
        segs: &Segments,
        alpha: f32,
        x: Option<&CudaView<'_, f32>>,
        y: &CudaView<'_, f32>,
        partial: &mut CudaViewMut<'_, f64>,
        sumsq: &mut CudaViewMut<'_, f64>,
    ) -> Result<()> {
        const OP: &str = "sumsq_segments";
        let t = segs.host();
        expect_len(OP, "y", y.len(), t.total_elems())?;
        if let Some(x) = x {
            expect_len(OP, "x", x.len(), t.total_elems())?;
        }
        expect_len(OP, "partial", partial.len(), t.total_blocks())?;
        expect_len(OP, "sumsq", sumsq.len(), t.n_seg())?;
        let n_seg = t.n_seg() as i32;
        let chunk = SEGMENT_CHUNK as i32;
        let (seg_start, block_start) = (segs.seg_start.as_view(), segs.block_start.as_view());
        if t.total_blocks() > 0 {
            // SAFETY: the tables were validated on the host (monotone, ending at the buffer
            // length y and x were checked against) and uploaded unchanged; the grid has
            // exactly total_blocks blocks, one partial each, and partial holds total_blocks
            // doubles.
            unsafe {
                launch!(
                    stream,
                    &self.sumsq_partial,
                    segs.config(),
                    &n_seg,
                    &seg_start,
                    &block_start,
                    &chunk,
                    &alpha,
                    x,
                    y,
                    &mut *partial
                )
            }?;
        }
        let partial = partial.as_view();
        // SAFETY: block_start has n_seg + 1 entries bounded by total_blocks = partial.len();
        // sumsq holds n_seg doubles.
        unsafe {
            launch!(
                stream,
                &self.sumsq_finalize,
                self.grid.elems(t.n_seg()),
                &n_seg,
                &block_start,
                &partial,
                sumsq
            )
        }
    }

    /// `trust[s] = eta |p_s| / |d_s|` for adapting tensors with both norms positive, else 1.
    #[allow(clippy::too_many_arguments)]
    pub fn lars_trust(
        &self,
        stream: &CudaStream,
        eta: f32,
        adapt: &CudaView<'_, i32>,
        p_sumsq: &CudaView<'_, f64>,
        d_sumsq: &CudaView<'_, f64>,
        trust: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "lars_trust";
        let n = to_i32(OP, "trust", trust.len())?;
        expect_len(OP, "adapt", adapt.len(), trust.len())?;
        expect_len(OP, "p_sumsq", p_sumsq.len(), trust.len())?;
        expect_len(OP, "d_sumsq", d_sumsq.len(), trust.len())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: adapt, p_sumsq, d_sumsq and trust all hold n entries (checked above).
        unsafe {
            launch!(
                stream,
                &self.lars_trust,
                self.grid.elems(n as usize),
                &n,
                &eta,
                adapt,
                p_sumsq,
                d_sumsq,
                trust
            )
        }
    }

    /// LARS over every tensor of a flat buffer in one launch: d = adapt ? (g + wd p) trust :
    /// g; mu = momentum mu + d; p -= lr mu; p16 = fp16(p). No-op when `skip` is non-zero.
    #[allow(clippy::too_many_arguments)]
    pub fn lars_step(
        &self,
        stream: &CudaStream,
        segs: &Segments,
        adapt: &CudaView<'_, i32>,
        trust: &CudaView<'_, f32>,
        lr: f32,
        momentum: f32,
        wd: f32,
        skip: Option<&CudaView<'_, f32>>,
        p: &mut CudaViewMut<'_, f32>,
        g: &CudaView<'_, f32>,
        mu: &mut CudaViewMut<'_, f32>,
        p16: Option<&mut CudaViewMut<'_, f16>>,
    ) -> Result<()> {
        const OP: &str = "lars_step";
        let t = segs.host();
        for (what, len, want) in [
            ("p", p.len(), t.total_elems()),
            ("g", g.len(), t.total_elems()),
            ("mu", mu.len(), t.total_elems()),
            ("p16", p16.as_ref().map_or(t.total_elems(), |c| c.len()), t.total_elems()),
            ("adapt", adapt.len(), t.n_seg()),
            ("trust", trust.len(), t.n_seg()),
        ] {
            expect_len(OP, what, len, want)?;
        }
        if let Some(s) = skip {
            check_flag(OP, "skip", s.len())?;
        }
        if t.total_blocks() == 0 {
            return Ok(());
        }
        let n_seg = t.n_seg() as i32;
        let chunk = SEGMENT_CHUNK as i32;
        let (seg_start, block_start) = (segs.seg_start.as_view(), segs.block_start.as_view());
        // SAFETY: the segment tables were validated on the host and end at total_elems, the
        // length of p, g, mu, p16 (checked above); adapt and trust hold n_seg entries; the
        // grid has exactly total_blocks blocks; an absent skip is passed as null.
        unsafe {
            launch!(
                stream,
                &self.lars_step,
                segs.config(),
                &n_seg,
                &seg_start,
                &block_start,
                &chunk,
                adapt,
                trust,
                &lr,
                &momentum,
                &wd,
                skip,
                p,
                g,
                mu,
                p16
            )
        }
    }

    /// PyTorch AdamW with bias corrections for the 1-based `step`; p16 = fp16(p). No-op when
    /// `skip` is non-zero.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_step(
        &self,
        stream: &CudaStream,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        wd: f32,
        step: u64,
        skip: Option<&CudaView<'_, f32>>,
        p: &mut CudaViewMut<'_, f32>,
        g: &CudaView<'_, f32>,
        m: &mut CudaViewMut<'_, f32>,
        v: &mut CudaViewMut<'_, f32>,
        p16: Option<&mut CudaViewMut<'_, f16>>,
    ) -> Result<()> {
        const OP: &str = "adamw_step";
        if step == 0 {
            return Err(KernelError::Shape { op: OP, detail: "step is 1-based; got 0".into() });
        }
        let n = to_i32(OP, "p", p.len())?;
        let p16_len = p16.as_ref().map_or(p.len(), |c| c.len());
        for (what, len) in [("g", g.len()), ("m", m.len()), ("v", v.len()), ("p16", p16_len)] {
            expect_len(OP, what, len, p.len())?;
        }
        if let Some(s) = skip {
            check_flag(OP, "skip", s.len())?;
        }
        if n == 0 {
            return Ok(());
        }
        let (bias_c1, bias_c2) = bias_corrections(beta1, beta2, step);
        // SAFETY: p, g, m, v hold n floats and p16 (when given) n fp16 values (checked above); an absent
        // skip is passed as null, which the kernel tests.
        unsafe {
            launch!(
                stream,
                &self.adamw_step,
                self.grid.elems(n as usize),
                &n,
                &lr,
                &beta1,
                &beta2,
                &eps,
                &wd,
                &bias_c1,
                &bias_c2,
                skip,
                p,
                g,
                m,
                v,
                p16
            )
        }
    }

    /// The LARS step of one tensor with a host-computed trust ratio: d = (g + wd p) trust;
    /// mu = momentum mu + d; p -= lr mu; p16 = fp16(p) when given.
    #[allow(clippy::too_many_arguments)]
    pub fn lars_step_scalar(
        &self,
        stream: &CudaStream,
        lr: f32,
        momentum: f32,
        wd: f32,
        trust: f32,
        skip: Option<&CudaView<'_, f32>>,
        p: &mut CudaViewMut<'_, f32>,
        g: &CudaView<'_, f32>,
        mu: &mut CudaViewMut<'_, f32>,
        p16: Option<&mut CudaViewMut<'_, f16>>,
    ) -> Result<()> {
        const OP: &str = "lars_step";
        let n = to_i32(OP, "p", p.len())?;
        expect_len(OP, "g", g.len(), p.len())?;
        expect_len(OP, "mu", mu.len(), p.len())?;
        if let Some(c) = &p16 {
            expect_len(OP, "p16", c.len(), p.len())?;
        }
        if let Some(s) = skip {
            check_flag(OP, "skip", s.len())?;
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: p, g, mu hold n floats, p16 (when given) n fp16 values and skip (when given)
        // one float (checked above); absent pointers are passed as null, which the kernel tests.
        unsafe {
            launch!(
                stream,
                &self.lars_step_scalar,
                self.grid.elems(n as usize),
                &n,
                &lr,
                &momentum,
                &wd,
                &trust,
                skip,
                p,
                g,
                mu,
                p16
            )
        }
    }

    /// Partial sums of squares of (y + alpha x) (x absent: of y) over one flat range, in
    /// double: `partial[b]` for b < the returned block count, which the caller adds in order.
    /// `partial` needs at least [`MAX_RANGE_PARTIALS`] entries.
    pub fn sumsq_range(
        &self,
        stream: &CudaStream,
        alpha: f32,
        x: Option<&CudaView<'_, f32>>,
        y: &CudaView<'_, f32>,
        partial: &mut CudaViewMut<'_, f64>,
    ) -> Result<usize> {
        const OP: &str = "sumsq";
        let n = to_i32(OP, "y", y.len())?;
        if let Some(x) = x {
            expect_len(OP, "x", x.len(), y.len())?;
        }
        if n == 0 {
            return Ok(0);
        }
        let chunk = range_chunk(y.len());
        let blocks = y.len().div_ceil(chunk);
        if partial.len() < blocks {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!("{} partial slots for {blocks} blocks", partial.len()),
            });
        }
        let chunk_i = chunk as i32;
        let cfg =
            LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: y (and x when given) hold n floats; block b reads [b*chunk, min(n, (b+1)*chunk))
        // and writes partial[b], and partial holds at least `blocks` doubles (checked above);
        // b*chunk + chunk < n + chunk < 2^31.
        unsafe { launch!(stream, &self.sumsq_range_partial, cfg, &n, &chunk_i, &alpha, x, y, partial) }?;
        Ok(blocks)
    }
}

/// (1 - beta1^step, 1 - beta2^step), computed in double: in f32, 1 - 0.999^step loses most of
/// its digits for small steps.
pub fn bias_corrections(beta1: f32, beta2: f32, step: u64) -> (f32, f32) {
    let e = step.min(i32::MAX as u64) as i32;
    ((1.0 - (beta1 as f64).powi(e)) as f32, (1.0 - (beta2 as f64).powi(e)) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_tables_give_each_tensor_blocks_in_proportion() {
        let lens = [64, 0, SEGMENT_CHUNK * 3 + 1, 5];
        let t = SegmentTables::from_lens(&lens).unwrap();
        assert_eq!(
            t.seg_start,
            vec![0, 64, 64, 64 + 3 * SEGMENT_CHUNK as i32 + 1, 70 + 3 * SEGMENT_CHUNK as i32]
        );
        // 1 block, none for the empty tensor, 4, 1.
        assert_eq!(t.block_start, vec![0, 1, 1, 5, 6]);
        assert_eq!(t.n_seg(), 4);
        assert_eq!(t.total_elems(), 70 + 3 * SEGMENT_CHUNK);
        assert_eq!(t.total_blocks(), 6);
    }

    #[test]
    fn segment_tables_refuse_empty_and_oversized_layouts() {
        assert!(SegmentTables::from_lens(&[]).is_err());
        assert!(SegmentTables::from_lens(&[crate::cuda::launch::MAX_ELEMS, 1]).is_err());
    }

    /// The device kernel's segment lookup, mirrored on the host: the largest s with
    /// block_start[s] <= b. Checks the rule the kernel relies on (empty tensors own no block).
    #[test]
    fn every_block_maps_to_a_non_empty_segment() {
        let t = SegmentTables::from_lens(&[10, 0, 0, 9000, 0, 1]).unwrap();
        for b in 0..t.total_blocks() as i32 {
            let s = (0..t.n_seg()).rev().find(|&s| t.block_start[s] <= b).unwrap();
            assert!(t.block_start[s] <= b && b < t.block_start[s + 1], "block {b} -> segment {s}");
            assert!(t.seg_start[s + 1] > t.seg_start[s], "block {b} landed in empty segment {s}");
        }
    }

    #[test]
    fn range_chunks_bound_the_partials_and_cover_the_range() {
        for n in [1, SEGMENT_CHUNK, SEGMENT_CHUNK + 1, 25_557_032, crate::cuda::launch::MAX_ELEMS] {
            let chunk = range_chunk(n);
            let blocks = n.div_ceil(chunk);
            assert!(blocks <= MAX_RANGE_PARTIALS, "{n}: {blocks} blocks");
            assert!(blocks * chunk >= n && (blocks - 1) * chunk < n, "{n}: chunk {chunk}");
        }
    }

    #[test]
    fn bias_corrections_match_the_closed_form() {
        // 0.9 and 0.999 are not exact in f32 (relative errors ~1e-8 and ~1.3e-5 of 1 - beta),
        // so compare with the decimal values at that precision.
        let (c1, c2) = bias_corrections(0.9, 0.999, 1);
        assert!(((c1 - 0.1) / 0.1).abs() < 1e-6, "{c1}");
        assert!(((c2 - 0.001) / 0.001).abs() < 2e-5, "{c2}");
        // Large steps: both corrections approach 1 (0.999^10000 = 4.5e-5).
        let (c1, c2) = bias_corrections(0.9, 0.999, 10_000);
        assert_eq!(c1, 1.0);
        assert!((c2 - (1.0 - 4.5173e-5)).abs() < 1e-6, "{c2}");
    }
}
