//! L2 normalisation over the rows of `[n, d]` (F.normalize), forward and backward.
//! Row sums in f64; rows in parallel.

use rayon::prelude::*;

/// The smallest norm F.normalize divides by.
pub const L2_EPS: f32 = 1e-12;

/// y = x / max(|x|, 1e-12) per row; `norm[row]` keeps max(|x|, 1e-12) for the backward.
pub fn l2norm_fwd(n: usize, d: usize, x: &[f32], y: &mut [f32], norm: &mut [f32]) {
    assert!(x.len() == n * d && y.len() == n * d, "l2norm_fwd: x and y must be [{n}, {d}]");
    assert_eq!(norm.len(), n, "l2norm_fwd: norm must have {n} elements");
    if d == 0 {
        norm.fill(L2_EPS);
        return;
    }
    y.par_chunks_mut(d).zip(x.par_chunks(d)).zip(norm.par_iter_mut()).for_each(|((yr, xr), nr)| {
        let ss: f64 = xr.iter().map(|v| *v as f64 * *v as f64).sum();
        let nrm = (ss.sqrt() as f32).max(L2_EPS);
        *nr = nrm;
        yr.iter_mut().zip(xr).for_each(|(y, x)| *y = x / nrm);
    });
}

/// dx = (dy - y * <y, dy>) / norm per row (the Jacobian of x / |x| applied to dy, written
/// with the forward's output y); dx overwritten.
pub fn l2norm_bwd(n: usize, d: usize, y: &[f32], norm: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(
        y.len() == n * d && dy.len() == n * d && dx.len() == n * d,
        "l2norm_bwd: y, dy, dx must be [{n}, {d}]"
    );
    assert_eq!(norm.len(), n, "l2norm_bwd: norm must have {n} elements");
    if d == 0 {
        return;
    }
    dx.par_chunks_mut(d).zip(y.par_chunks(d)).zip(dy.par_chunks(d)).zip(norm.par_iter()).for_each(
        |(((dxr, yr), dyr), nrm)| {
            let dot = yr.iter().zip(dyr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32;
            for ((dx, y), g) in dxr.iter_mut().zip(yr).zip(dyr) {
                *dx = (g - y * dot) / nrm;
            }
        },
    );
}
