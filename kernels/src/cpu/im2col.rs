//! im2col and col2im for NHWC activations and OHWI weights (serial: callers run them inside
//! their own parallel tasks, one chunk each, so the column matrix stays in that core's cache
//! between being written and being multiplied).
//!
//! The column matrix of a convolution has one row per output pixel `(img, oy, ox)` and
//! `K = k * k * c_in` columns ordered `(ky, kx, ci)`: exactly the layout of one OHWI filter,
//! so `y = col . W^T` with W viewed as `[c_out, K]` row-major. For a fixed `(oy, ox, ky)` the
//! in-range taps `kx` read consecutive pixels of one input row, which in NHWC is one
//! contiguous run of memory: im2col copies runs, col2im adds runs.

use super::simd::avx2_fn;
use crate::shapes::ConvShape;

/// Columns of the column matrix: `k * k * c_in`.
pub fn col_width(s: &ConvShape) -> usize {
    s.k * s.k * s.c_in
}

/// The range `[lo, hi)` of kernel taps `t` for which `base + t` lies in `[0, size)`
/// (empty, with lo = hi, when none does).
#[inline]
fn tap_range(base: isize, k: usize, size: usize) -> (usize, usize) {
    let lo = (-base).clamp(0, k as isize) as usize;
    let hi = (size as isize - base).clamp(lo as isize, k as isize) as usize;
    (lo, hi)
}

avx2_fn! {
/// Fills `col` (`[rows.len(), K]`) with the column-matrix rows `rows` of the whole batch
/// `x` (`[n, h, w, c_in]`); row r is output pixel (img, oy, ox) = (r / (oh*ow), ...).
/// Padding taps are written as zeros, so every element of `col` is overwritten.
pub fn im2col_rows(s: &ConvShape, x: &[f32], rows: std::ops::Range<usize>, col: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let kw = col_width(s);
    assert_eq!(x.len(), s.x_len(), "im2col: x is not the batch of {s:?}");
    assert!(rows.end <= s.n * oh * ow, "im2col: rows {rows:?} beyond the output of {s:?}");
    assert_eq!(col.len(), rows.len() * kw, "im2col: col must be [{}, {kw}]", rows.len());
    let kc = s.k * s.c_in;
    let img_len = s.h * s.w * s.c_in;
    // The output pixel of the first row, then stepped along (no division per row).
    let (mut img, mut oy, mut ox) = (rows.start / (oh * ow), rows.start % (oh * ow) / ow, rows.start % ow);
    for dst in col.chunks_exact_mut(kw.max(1)).take(rows.len()) {
        let x_img = &x[img * img_len..(img + 1) * img_len];
        let base_y = (oy * s.stride) as isize - s.pad as isize;
        let base_x = (ox * s.stride) as isize - s.pad as isize;
        let (ky_lo, ky_hi) = tap_range(base_y, s.k, s.h);
        let (kx_lo, kx_hi) = tap_range(base_x, s.k, s.w);
        dst[..ky_lo * kc].fill(0.0);
        dst[ky_hi * kc..].fill(0.0);
        for ky in ky_lo..ky_hi {
            let seg = &mut dst[ky * kc..(ky + 1) * kc];
            seg[..kx_lo * s.c_in].fill(0.0);
            seg[kx_hi * s.c_in..].fill(0.0);
            if kx_lo < kx_hi {
                let iy = (base_y + ky as isize) as usize;
                let ix_lo = (base_x + kx_lo as isize) as usize;
                let src = (iy * s.w + ix_lo) * s.c_in;
                seg[kx_lo * s.c_in..kx_hi * s.c_in]
                    .copy_from_slice(&x_img[src..src + (kx_hi - kx_lo) * s.c_in]);
            }
        }
        ox += 1;
        if ox == ow {
            ox = 0;
            oy += 1;
            if oy == oh {
                oy = 0;
                img += 1;
            }
        }
    }
}
}

avx2_fn! {
/// Overwrites `dx` (`[n_img, h, w, c_in]`, whole images) with the adjoint of im2col of the
/// same images: every input pixel gets the sum of the column entries copied from it. `col`
/// is those images' column matrix, `[n_img * oh * ow, K]`.
///
/// Gathers per input row (img, iy) from the output rows whose windows cover it, so each
/// element is written by one loop in one fixed order (ky, then ox, then kx).
pub fn col2im(s: &ConvShape, col: &[f32], n_img: usize, dx: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let kw = col_width(s);
    assert_eq!(dx.len(), n_img * s.h * s.w * s.c_in, "col2im: dx must hold {n_img} images of {s:?}");
    assert_eq!(col.len(), n_img * oh * ow * kw, "col2im: col must be [{}, {kw}]", n_img * oh * ow);
    let kc = s.k * s.c_in;
    for (r, dx_row) in dx.chunks_exact_mut((s.w * s.c_in).max(1)).enumerate() {
        let (img, iy) = (r / s.h, r % s.h);
        dx_row.fill(0.0);
        for ky in 0..s.k {
            // The output row whose tap ky lands on input row iy: oy * stride - pad + ky = iy.
            let t = iy as isize + s.pad as isize - ky as isize;
            if t < 0 || t % s.stride as isize != 0 {
                continue;
            }
            let oy = t as usize / s.stride;
            if oy >= oh {
                continue;
            }
            let col_row = &col[(img * oh + oy) * ow * kw..(img * oh + oy + 1) * ow * kw];
            for ox in 0..ow {
                let base_x = (ox * s.stride) as isize - s.pad as isize;
                let (kx_lo, kx_hi) = tap_range(base_x, s.k, s.w);
                if kx_lo >= kx_hi {
                    continue;
                }
                let src = &col_row[ox * kw + ky * kc + kx_lo * s.c_in..ox * kw + ky * kc + kx_hi * s.c_in];
                let ix_lo = (base_x + kx_lo as isize) as usize;
                let dst = &mut dx_row[ix_lo * s.c_in..ix_lo * s.c_in + src.len()];
                for (d, v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
        }
    }
}
}
