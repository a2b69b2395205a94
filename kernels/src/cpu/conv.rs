//! 2-D convolution, no bias: NHWC activations, OHWI weights (`[c_out, k, k, c_in]`).
//!
//! Everything is a GEMM against the weights viewed as `W [c_out, K]`, `K = k * k * c_in`:
//! - forward:         `y[rows, c_out] = col[rows, K] . W^T`
//! - backward data:   `dcol[rows, K] = dy[rows, c_out] . W`, then col2im into dx
//! - backward filter: `dW[c_out, K] += dy^T . col` (accumulates)
//!
//! where `col` is the im2col matrix (one row per output pixel). A 1x1 stride-1 unpadded conv
//! needs no im2col: its column matrix IS x, so its GEMMs run on the activations directly.
//!
//! Work is cut into chunks of output rows (whole images for the backward-data col2im) whose
//! column matrix fits in a core's L2 cache; chunks run in parallel, each building its columns
//! in a pooled scratch buffer and multiplying them while they are still cached. Memory stays
//! bounded by (threads x chunk) for any batch. The backward-filter sums over rows, so chunks
//! are dealt to a fixed number of groups with one partial dW each, added in group order.
//! Every split depends only on the shape, so results are bit-identical from run to run.

use super::gemm::{par_sgemm, MatRef};
use super::im2col::{col2im, col_width, im2col_rows};
use super::scratch::with_scratch;
use crate::shapes::ConvShape;
use rayon::prelude::*;
use std::ops::Range;

/// Target f32 elements of one chunk's column matrix (512 KB: fits a core's L2).
const COL_CHUNK: usize = 128 << 10;
/// Fewest chunks to split a conv into when it has enough rows (for load balance).
const MIN_CHUNKS: usize = 16;
/// Fewest rows per chunk: below this, repacking W per chunk costs more than the product.
const MIN_ROWS: usize = 128;
/// Most f32 elements of backward-filter partials (4 MB), and most partials.
const PARTIAL_BUDGET: usize = 1 << 20;
const MAX_GROUPS: usize = 16;
/// Column-matrix elements per chunk when dW is too large for partials (8 MB).
const BIG_COL_CHUNK: usize = 2 << 20;

/// True when x itself is the column matrix.
fn is_pointwise(s: &ConvShape) -> bool {
    s.k == 1 && s.stride == 1 && s.pad == 0
}

fn check(op: &str, s: &ConvShape, x_len: usize, w_len: usize, y_len: usize) {
    assert!(s.k >= 1 && s.stride >= 1, "{op}: kernel and stride must be >= 1 in {s:?}");
    assert!(
        s.h + 2 * s.pad >= s.k && s.w + 2 * s.pad >= s.k,
        "{op}: kernel larger than padded input in {s:?}"
    );
    assert_eq!(x_len, s.x_len(), "{op}: input length for {s:?}");
    assert_eq!(w_len, s.w_len(), "{op}: weight length for {s:?}");
    assert_eq!(y_len, s.y_len(), "{op}: output length for {s:?}");
}

/// Output rows (pixels) of the whole batch.
fn out_rows(s: &ConvShape) -> usize {
    s.n * s.out_h() * s.out_w()
}

/// Output rows per chunk: columns within COL_CHUNK, at least MIN_CHUNKS chunks when that
/// leaves MIN_ROWS rows each. A function of the shape only.
fn rows_per_chunk(s: &ConvShape) -> usize {
    let total = out_rows(s);
    (COL_CHUNK / col_width(s).max(1)).min(total.div_ceil(MIN_CHUNKS)).max(MIN_ROWS).min(total).max(1)
}

/// Runs `f` on the column-matrix rows `rows`: borrowed from x for a pointwise conv, else
/// built in scratch (in parallel sub-ranges when `par`).
fn with_cols<R>(s: &ConvShape, x: &[f32], rows: Range<usize>, par: bool, f: impl FnOnce(&[f32]) -> R) -> R {
    let kw = col_width(s);
    if is_pointwise(s) {
        return f(&x[rows.start * kw..rows.end * kw]);
    }
    with_scratch(rows.len() * kw, |col| {
        if par && kw > 0 {
            col.par_chunks_mut(MIN_ROWS * kw).enumerate().for_each(|(i, sub)| {
                let r0 = rows.start + i * MIN_ROWS;
                im2col_rows(s, x, r0..r0 + sub.len() / kw, sub);
            });
        } else {
            im2col_rows(s, x, rows.clone(), col);
        }
        f(col)
    })
}

/// y = conv(x, w). x `[n, h, w, c_in]`, w `[c_out, k, k, c_in]`, y `[n, oh, ow, c_out]` (overwritten).
pub fn conv2d_fwd(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    check("conv2d_fwd", s, x.len(), w.len(), y.len());
    if y.is_empty() {
        return;
    }
    let kw = col_width(s);
    let per = rows_per_chunk(s);
    let wt = MatRef::rows_t(w, kw); // W^T: [K, c_out]
    y.par_chunks_mut(per * s.c_out).enumerate().for_each(|(i, y_chunk)| {
        let rows = i * per..i * per + y_chunk.len() / s.c_out;
        with_cols(s, x, rows.clone(), false, |col| {
            par_sgemm(rows.len(), kw, s.c_out, MatRef::rows(col, kw), wt, y_chunk, false);
        });
    });
}

/// dx = conv_transpose(dy, w): the gradient of [`conv2d_fwd`] with respect to x (overwritten).
pub fn conv2d_bwd_data(s: &ConvShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check("conv2d_bwd_data", s, dx.len(), w.len(), dy.len());
    if dx.is_empty() {
        return;
    }
    let kw = col_width(s);
    let wm = MatRef::rows(w, kw); // W: [c_out, K]
    let per = rows_per_chunk(s);
    if is_pointwise(s) {
        dx.par_chunks_mut(per * kw).enumerate().for_each(|(i, dx_chunk)| {
            let rows = i * per..i * per + dx_chunk.len() / kw;
            let dy_rows = MatRef::rows(&dy[rows.start * s.c_out..rows.end * s.c_out], s.c_out);
            par_sgemm(rows.len(), s.c_out, kw, dy_rows, wm, dx_chunk, false);
        });
        return;
    }
    // Whole images per task, so col2im's gather never needs another task's columns.
    let (pix, img_len) = (s.out_h() * s.out_w(), s.h * s.w * s.c_in);
    let imgs = (per / pix).clamp(1, s.n);
    dx.par_chunks_mut(imgs * img_len).enumerate().for_each(|(i, dx_imgs)| {
        let count = dx_imgs.len() / img_len;
        let rows = i * imgs * pix..(i * imgs + count) * pix;
        let dy_rows = MatRef::rows(&dy[rows.start * s.c_out..rows.end * s.c_out], s.c_out);
        with_scratch(rows.len() * kw, |dcol| {
            par_sgemm(rows.len(), s.c_out, kw, dy_rows, wm, dcol, false);
            col2im(s, dcol, count, dx_imgs);
        });
    });
}

/// dw += correlation(x, dy): the gradient of [`conv2d_fwd`] with respect to w, ACCUMULATED.
pub fn conv2d_bwd_filter(s: &ConvShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    check("conv2d_bwd_filter", s, x.len(), dw.len(), dy.len());
    let (total, kw, w_len) = (out_rows(s), col_width(s), dw.len());
    if w_len == 0 || total == 0 {
        return;
    }
    // dy^T restricted to some rows: [c_out, rows].
    let dy_t = |rows: &Range<usize>| MatRef::rows_t(&dy[rows.start * s.c_out..rows.end * s.c_out], s.c_out);
    let per = rows_per_chunk(s);
    let chunks = total.div_ceil(per);
    let groups = (PARTIAL_BUDGET / w_len).min(MAX_GROUPS).min(chunks);
    if groups < 2 {
        // One partial would be too large (or one chunk): accumulate chunk by chunk straight
        // into dW, each product split over dW's tiles.
        let per = (BIG_COL_CHUNK / kw.max(1)).max(per);
        for r0 in (0..total).step_by(per) {
            let rows = r0..total.min(r0 + per);
            with_cols(s, x, rows.clone(), true, |col| {
                par_sgemm(s.c_out, rows.len(), kw, dy_t(&rows), MatRef::rows(col, kw), dw, true);
            });
        }
        return;
    }
    with_scratch(groups * w_len, |partials| {
        // Group g owns chunks [g * chunks / groups, (g + 1) * chunks / groups), at least one,
        // and sums them into its partial, kept TRANSPOSED ([K, c_out] = col^T . dy): with
        // c_out as the short side of the output the gemm kernels run at full speed on the
        // thin layers (the [c_out, K] orientation hits slow paths for some chunk sizes).
        partials.par_chunks_mut(w_len).enumerate().for_each(|(g, part)| {
            for (j, c) in (g * chunks / groups..(g + 1) * chunks / groups).enumerate() {
                let rows = c * per..total.min((c + 1) * per);
                let dy_rows = MatRef::rows(&dy[rows.start * s.c_out..rows.end * s.c_out], s.c_out);
                with_cols(s, x, rows.clone(), false, |col| {
                    par_sgemm(kw, rows.len(), s.c_out, MatRef::rows_t(col, kw), dy_rows, part, j > 0);
                });
            }
        });
        // dw[o, t] += sum over groups, in group order, of partial[t, o].
        let partials = &*partials;
        dw.par_chunks_mut(kw).enumerate().for_each(|(o, dw_row)| {
            for part in partials.chunks_exact(w_len) {
                for (t, d) in dw_row.iter_mut().enumerate() {
                    *d += part[t * s.c_out + o];
                }
            }
        });
    });
}
