//! L2 normalisation: finite differences of the backward, the forward by hand, the zero row.

use crate::util::{assert_close, dot, fd_check, uniform};
use moco_kernels::cpu::l2norm::{l2norm_bwd, l2norm_fwd};

#[test]
fn l2norm_backward_matches_finite_differences() {
    let (n, d) = (3, 8);
    let x = uniform(400, n * d);
    let r = uniform(401, n * d);
    let (mut y, mut norm) = (vec![0.0; n * d], vec![0.0; n]);
    l2norm_fwd(n, d, &x, &mut y, &mut norm);
    let mut dx = vec![f32::NAN; n * d];
    l2norm_bwd(n, d, &y, &norm, &r, &mut dx);
    // Smooth with |x| ~ 1.6 per row: truncation ~STEP^2 / |x|^3 ~ 1e-6 at STEP = 1e-3, fp32
    // rounding of 8 outputs ~1e-7 * 3 / 2e-3 ~ 1.5e-4; 1e-3 of the largest gradient (~1).
    let loss = |xp: &[f32]| {
        let (mut yp, mut np) = (vec![0.0; n * d], vec![0.0; n]);
        l2norm_fwd(n, d, xp, &mut yp, &mut np);
        dot(&r, &yp)
    };
    fd_check("l2norm", &x, &dx, 1e-3, 1e-5, 1e-3, None, loss);
}

/// [3, 4] / 5 = [0.6, 0.8]; a zero row divides by 1e-12 and stays zero (F.normalize).
#[test]
fn l2norm_forward_by_hand() {
    let (mut y, mut norm) = ([0.0; 4], [0.0; 2]);
    l2norm_fwd(2, 2, &[3.0, 4.0, 0.0, 0.0], &mut y, &mut norm);
    assert_close("y", &y, &[0.6, 0.8, 0.0, 0.0], 0.0, 1e-7);
    assert_eq!(norm, [5.0, 1e-12]);
}
