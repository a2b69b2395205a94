//! Every split of work depends on the shape only, so results are bit-identical whatever the
//! thread count (contract 4: a resumed run continues bit-identically on the CPU).

use crate::util::uniform;
use moco_kernels::cpu::batchnorm::{bn_bwd_reduce, bn_stats};
use moco_kernels::cpu::conv::{conv2d_bwd_data, conv2d_bwd_filter, conv2d_fwd};
use moco_kernels::cpu::linear::{linear_bwd_weight, linear_fwd};
use moco_kernels::cpu::optim::{sumsq, sumsq_axpy};
use moco_kernels::ConvShape;

/// The outputs of the reducing and GEMM-backed ops on shapes big enough to be split, and
/// the f64 sums of squares (compared in f64: rounding to f32 would hide their last bits).
fn run_all() -> (Vec<Vec<f32>>, [f64; 2]) {
    let mut out = Vec::new();
    for s in [
        ConvShape { n: 4, h: 24, w: 24, c_in: 16, c_out: 24, k: 3, stride: 1, pad: 1 },
        ConvShape { n: 4, h: 32, w: 32, c_in: 3, c_out: 8, k: 7, stride: 2, pad: 3 },
        ConvShape { n: 4, h: 16, w: 16, c_in: 32, c_out: 16, k: 1, stride: 1, pad: 0 },
    ] {
        let (x, w, dy) = (uniform(800, s.x_len()), uniform(801, s.w_len()), uniform(802, s.y_len()));
        let mut y = vec![0.0; s.y_len()];
        conv2d_fwd(&s, &x, &w, &mut y);
        let mut dx = vec![0.0; s.x_len()];
        conv2d_bwd_data(&s, &dy, &w, &mut dx);
        let mut dw = vec![0.0; s.w_len()];
        conv2d_bwd_filter(&s, &x, &dy, &mut dw);
        out.extend([y, dx, dw]);
    }
    let (n, d_in, d_out) = (64, 512, 384);
    let (x, w, dy) = (uniform(810, n * d_in), uniform(811, d_out * d_in), uniform(812, n * d_out));
    let mut y = vec![0.0; n * d_out];
    linear_fwd(n, d_in, d_out, &x, &w, &mut y);
    let mut dw = vec![0.0; d_out * d_in];
    linear_bwd_weight(n, d_in, d_out, &x, &dy, &mut dw);
    out.extend([y, dw]);
    let (m, c) = (20_000, 24);
    let (x, dy) = (uniform(820, m * c), uniform(821, m * c));
    let (mut mean, mut var, mut s1, mut s2) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    bn_stats(m, c, &x, &mut mean, &mut var);
    bn_bwd_reduce(m, c, &x, &dy, &mean, &var, 1e-5, &mut s1, &mut s2);
    out.extend([mean, var, s1, s2]);
    (out, [sumsq(&x), sumsq_axpy(0.1, &x, &dy)])
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let with_threads =
        |t: usize| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(run_all);
    let (one, sums_one) = with_threads(1);
    for t in [3, 4] {
        let (many, sums_many) = with_threads(t);
        assert_eq!(
            sums_one.map(f64::to_bits),
            sums_many.map(f64::to_bits),
            "sums of squares, 1 vs {t} threads"
        );
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            let same = a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "output {i} differs between 1 and {t} threads");
        }
    }
}
