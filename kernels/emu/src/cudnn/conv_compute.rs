//! The arithmetic of the three convolutions, straight from the definition (no im2col):
//!
//!   y[n, k, p, q] = sum over c in k's group, r, s of
//!                   x[n, c, p * stride_h + r * dil_h - pad_h, q * stride_w + s * dil_w - pad_w]
//!                   * w'[k, c, r, s]
//!
//! with x taken as zero outside the image, and w' = w for CROSS_CORRELATION, w flipped in r
//! and s for CONVOLUTION. Backward data is the adjoint in x, backward filter the adjoint in w.
//!
//! Each operand is first gathered into an f32 working copy in a layout that makes the
//! innermost loop an axpy over contiguous memory (vectorised): x and y as NHWC, the filter as
//! [group][r][s][c][k] for the forward pass and [group][r][s][k][c] for backward data. Work is
//! split with rayon over rows of the output, so every sum runs in one fixed order (the result
//! does not depend on the thread count). The result is blended into the destination last:
//! out = alpha * result + beta * out, with out not read when beta == 0.

use super::problem::Problem;
use crate::elem::{axpy, blend, dot, Elem};
use rayon::prelude::*;

/// Gathers a tensor (dims and strides in N, C, H, W order) into a packed NHWC f32 copy.
///
/// # Safety
/// The tensor's extent at `base` lies in live device memory.
unsafe fn gather_nhwc(base: usize, ty: Elem, dims: [usize; 4], st: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = dims;
    let mut out = vec![0.0f32; n * h * w * c];
    out.par_chunks_mut(w * c).enumerate().for_each(|(nh, row)| {
        let (ni, hi) = (nh / h, nh % h);
        for wi in 0..w {
            for ci in 0..c {
                let idx = ni * st[0] + ci * st[1] + hi * st[2] + wi * st[3];
                // SAFETY: idx is inside the tensor's checked extent.
                row[wi * c + ci] = unsafe { ty.load(base, idx) };
            }
        }
    });
    out
}

/// Blends a packed NHWC result into a tensor: t = alpha * vals + beta * t.
///
/// # Safety
/// The tensor's extent at `base` lies in live device memory that nothing else accesses now.
unsafe fn scatter_nhwc(
    base: usize,
    ty: Elem,
    dims: [usize; 4],
    st: [usize; 4],
    vals: &[f32],
    alpha: f32,
    beta: f32,
) {
    let [n, c, h, w] = dims;
    // Serial: strides may make elements overlap, and then writes from two threads would race.
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    let idx = ni * st[0] + ci * st[1] + hi * st[2] + wi * st[3];
                    let acc = vals[((ni * h + hi) * w + wi) * c + ci];
                    // SAFETY: idx is inside the tensor's checked extent.
                    let v = blend(alpha, acc, beta, || unsafe { ty.load(base, idx) });
                    // SAFETY: as above, and the memory is this op's alone while it runs.
                    unsafe { ty.store(base, idx, v) };
                }
            }
        }
    }
}

/// The filter tap of stored element (r, s) as the cross-correlation sees it.
fn tap(pr: &Problem, r: usize, s: usize) -> (usize, usize) {
    if pr.flip {
        (pr.r - 1 - r, pr.s - 1 - s)
    } else {
        (r, s)
    }
}

/// The correlation filter w' in f32, as [group][r][s][c][k] (`k_inner`) or [group][r][s][k][c].
///
/// # Safety
/// The filter at `base` (`pr.w_len()` elements) lies in live device memory.
unsafe fn pack_filter(pr: &Problem, base: usize, k_inner: bool) -> Vec<f32> {
    let (cg, kg) = (pr.cg(), pr.kg());
    let mut out = vec![0.0f32; pr.w_len()];
    for k in 0..pr.k {
        let (g, kl) = (k / kg, k % kg);
        for c in 0..cg {
            for r in 0..pr.r {
                for s in 0..pr.s {
                    // SAFETY: w_index of in-range (k, c, r, s) lies in the checked filter.
                    let v = unsafe { pr.ty.load(base, pr.w_index(k, c, r, s)) };
                    let (rr, ss) = tap(pr, r, s);
                    let rs = (g * pr.r + rr) * pr.s + ss;
                    let at = if k_inner { (rs * cg + c) * kg + kl } else { (rs * kg + kl) * cg + c };
                    out[at] = v;
                }
            }
        }
    }
    out
}

/// The input coordinate filter tap `t` of output position `o` reads, if inside the image.
#[inline]
fn input_at(o: usize, t: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + t * dil).checked_sub(pad).filter(|&i| i < size)
}

/// The output position whose tap `t` reads input coordinate `i`, if any.
#[inline]
fn output_at(i: usize, t: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    let o = (i + pad).checked_sub(t * dil)?;
    (o % stride == 0 && o / stride < size).then_some(o / stride)
}

/// y = alpha * conv(x, w) + beta * y.
///
/// # Safety
/// x, w and y lie in live device memory (checked when queued); y is not accessed by anyone
/// else while this runs.
pub unsafe fn forward(pr: &Problem, x: usize, w: usize, y: usize, alpha: f32, beta: f32) {
    let (c, k, cg, kg) = (pr.c, pr.k, pr.cg(), pr.kg());
    // SAFETY: per this function's contract.
    let (xp, wp) = unsafe { (gather_nhwc(x, pr.ty, pr.x_dims(), pr.x_strides), pack_filter(pr, w, true)) };
    let mut yp = vec![0.0f32; pr.n * pr.p * pr.q * k];
    if alpha != 0.0 {
        yp.par_chunks_mut(pr.q * k).enumerate().for_each(|(np, row)| {
            let (n, p) = (np / pr.p, np % pr.p);
            for q in 0..pr.q {
                let acc = &mut row[q * k..(q + 1) * k];
                for r in 0..pr.r {
                    let Some(ih) = input_at(p, r, pr.stride[0], pr.dilation[0], pr.pad[0], pr.h) else {
                        continue;
                    };
                    for s in 0..pr.s {
                        let Some(iw) = input_at(q, s, pr.stride[1], pr.dilation[1], pr.pad[1], pr.w) else {
                            continue;
                        };
                        let xpix = &xp[((n * pr.h + ih) * pr.w + iw) * c..][..c];
                        for g in 0..pr.groups {
                            let accg = &mut acc[g * kg..(g + 1) * kg];
                            let wrs = &wp[((g * pr.r + r) * pr.s + s) * cg * kg..][..cg * kg];
                            for (cl, wrow) in wrs.chunks_exact(kg).enumerate() {
                                axpy(accg, xpix[g * cg + cl], wrow);
                            }
                        }
                    }
                }
            }
        });
    }
    // SAFETY: per this function's contract.
    unsafe { scatter_nhwc(y, pr.ty, pr.y_dims(), pr.y_strides, &yp, alpha, beta) };
}

/// Below this many channels per group, backward data sums over k with dot products instead
/// of axpys over c (an axpy over 3 channels, as in the stem, does not vectorise).
const NARROW_C: usize = 8;

/// dx = alpha * conv_transpose(dy, w) + beta * dx.
///
/// # Safety
/// As `forward`, with dx the output.
pub unsafe fn backward_data(pr: &Problem, w: usize, dy: usize, dx: usize, alpha: f32, beta: f32) {
    let (c, k, cg, kg) = (pr.c, pr.k, pr.cg(), pr.kg());
    let narrow = cg < NARROW_C;
    // SAFETY: per this function's contract.
    let (dyp, wp) =
        unsafe { (gather_nhwc(dy, pr.ty, pr.y_dims(), pr.y_strides), pack_filter(pr, w, narrow)) };
    let mut dxp = vec![0.0f32; pr.n * pr.h * pr.w * c];
    if alpha != 0.0 {
        dxp.par_chunks_mut(pr.w * c).enumerate().for_each(|(nh, row)| {
            let (n, h) = (nh / pr.h, nh % pr.h);
            for wi in 0..pr.w {
                let acc = &mut row[wi * c..(wi + 1) * c];
                for r in 0..pr.r {
                    let Some(p) = output_at(h, r, pr.stride[0], pr.dilation[0], pr.pad[0], pr.p) else {
                        continue;
                    };
                    for s in 0..pr.s {
                        let Some(q) = output_at(wi, s, pr.stride[1], pr.dilation[1], pr.pad[1], pr.q) else {
                            continue;
                        };
                        let dypix = &dyp[((n * pr.p + p) * pr.q + q) * k..][..k];
                        for g in 0..pr.groups {
                            let accg = &mut acc[g * cg..(g + 1) * cg];
                            let wrs = &wp[((g * pr.r + r) * pr.s + s) * kg * cg..][..kg * cg];
                            let dyg = &dypix[g * kg..(g + 1) * kg];
                            if narrow {
                                // wrs is [c][k]: one dot product over k per input channel.
                                for (a, wrow) in accg.iter_mut().zip(wrs.chunks_exact(kg)) {
                                    *a += dot(dyg, wrow);
                                }
                            } else {
                                // wrs is [k][c]: one axpy over c per output channel.
                                for (d, wrow) in dyg.iter().zip(wrs.chunks_exact(cg)) {
                                    axpy(accg, *d, wrow);
                                }
                            }
                        }
                    }
                }
            }
        });
    }
    // SAFETY: per this function's contract.
    unsafe { scatter_nhwc(dx, pr.ty, pr.x_dims(), pr.x_strides, &dxp, alpha, beta) };
}

/// Channels per backward-filter task: the largest of 16, 8, 4, 2, 1 that divides C and still
/// leaves a few tasks per thread (each task reads all of dy once).
fn channel_block(pr: &Problem) -> usize {
    let want = 2 * rayon::current_num_threads().max(1);
    [16, 8, 4, 2].into_iter().find(|&b| pr.c.is_multiple_of(b) && pr.r * pr.s * pr.c / b >= want).unwrap_or(1)
}

/// dw = alpha * correlation(x, dy) + beta * dw.
///
/// # Safety
/// As `forward`, with dw the output.
pub unsafe fn backward_filter(pr: &Problem, x: usize, dy: usize, dw: usize, alpha: f32, beta: f32) {
    let (c, k, cg, kg) = (pr.c, pr.k, pr.cg(), pr.kg());
    // SAFETY: per this function's contract.
    let (xp, dyp) = unsafe {
        (gather_nhwc(x, pr.ty, pr.x_dims(), pr.x_strides), gather_nhwc(dy, pr.ty, pr.y_dims(), pr.y_strides))
    };
    // The gradient of the correlation filter w', as [r][s][c][k of c's group].
    let mut acc = vec![0.0f32; pr.r * pr.s * c * kg];
    if alpha != 0.0 {
        let cb = channel_block(pr);
        acc.par_chunks_mut(cb * kg).enumerate().for_each(|(task, block)| {
            let (rs, c0) = (task / (c / cb), task % (c / cb) * cb);
            let (r, s) = (rs / pr.s, rs % pr.s);
            for n in 0..pr.n {
                for p in 0..pr.p {
                    let Some(ih) = input_at(p, r, pr.stride[0], pr.dilation[0], pr.pad[0], pr.h) else {
                        continue;
                    };
                    for q in 0..pr.q {
                        let Some(iw) = input_at(q, s, pr.stride[1], pr.dilation[1], pr.pad[1], pr.w) else {
                            continue;
                        };
                        let xpix = &xp[((n * pr.h + ih) * pr.w + iw) * c..][..c];
                        let dypix = &dyp[((n * pr.p + p) * pr.q + q) * k..][..k];
                        for (cc, row) in block.chunks_exact_mut(kg).enumerate() {
                            let ci = c0 + cc;
                            let g = ci / cg;
                            axpy(row, xpix[ci], &dypix[g * kg..(g + 1) * kg]);
                        }
                    }
                }
            }
        });
    }
    // Serial store into the filter's layout (filters are small).
    for kk in 0..k {
        let (g, kl) = (kk / kg, kk % kg);
        for cl in 0..cg {
            for r in 0..pr.r {
                for s in 0..pr.s {
                    let (rr, ss) = tap(pr, r, s);
                    let v = acc[((rr * pr.s + ss) * c + g * cg + cl) * kg + kl];
                    let idx = pr.w_index(kk, cl, r, s);
                    // SAFETY: idx lies in the checked filter, which is this op's alone now.
                    let out = blend(alpha, v, beta, || unsafe { pr.ty.load(dw, idx) });
                    // SAFETY: as above.
                    unsafe { pr.ty.store(dw, idx, out) };
                }
            }
        }
    }
}
