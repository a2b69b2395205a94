//! Elementwise ops: ReLU's backward by finite differences, the others by hand, and fp16
//! rounding (AMP emulation).

use crate::util::{dot, fd_check, uniform};
use moco_kernels::cpu::elementwise::{add_inplace, axpby, relu_bwd, relu_inplace, round_f16, scale};

#[test]
fn relu_backward_matches_finite_differences() {
    // Values at least 0.1 away from the kink, so a 1e-3 step never crosses it.
    let x: Vec<f32> = uniform(600, 40).iter().map(|v| if *v >= 0.0 { v + 0.1 } else { v - 0.1 }).collect();
    let r = uniform(601, 40);
    let mut y = x.clone();
    relu_inplace(&mut y);
    let mut dx = vec![f32::NAN; 40];
    relu_bwd(&y, &r, &mut dx);
    // Piecewise linear without a switch inside the step: exact up to rounding of x +- 1e-3.
    fd_check("relu", &x, &dx, 1e-3, 1e-5, 1e-4, None, |xp| {
        let mut yp = xp.to_vec();
        relu_inplace(&mut yp);
        dot(&r, &yp)
    });
    assert!(dx.iter().zip(&x).any(|(d, x)| *x < 0.0 && *d == 0.0), "some inputs must be cut");
}

#[test]
fn relu_passes_nan_and_zero_gradient_at_zero() {
    let mut y = [f32::NAN, -1.0, 0.0, 2.0];
    relu_inplace(&mut y);
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 0.0, 2.0]);
    let mut dx = [9.0; 4];
    relu_bwd(&[0.0, 0.0, 0.0, 2.0], &[1.0, 1.0, 1.0, 1.0], &mut dx);
    assert_eq!(dx, [0.0, 0.0, 0.0, 1.0], "the gradient at 0 is 0, as PyTorch's");
}

#[test]
fn vector_ops_by_hand() {
    let mut y = [1.0, 2.0];
    add_inplace(&[0.5, -4.0], &mut y);
    assert_eq!(y, [1.5, -2.0]);
    axpby(2.0, &[1.0, 3.0], 0.5, &mut y);
    assert_eq!(y, [2.75, 5.0]);
    let mut poisoned = [f32::NAN, f32::INFINITY];
    axpby(2.0, &[1.0, 3.0], 0.0, &mut poisoned);
    assert_eq!(poisoned, [2.0, 6.0], "beta = 0 overwrites without reading y");
    scale(&mut y, -2.0);
    assert_eq!(y, [-5.5, -10.0]);
}

/// fp16 has 10 mantissa bits: 1 + 2^-11 is a tie and rounds to even (1.0); 1 + 3 * 2^-11
/// rounds up to 1 + 2^-9; 65520 overflows to inf; subnormals keep 2^-24 steps.
#[test]
fn round_f16_by_hand() {
    let mut x = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65520.0, -3.0 * 2f32.powi(-25), 0.1];
    round_f16(&mut x);
    assert_eq!(x[0], 1.0);
    assert_eq!(x[1], 1.0 + 2f32.powi(-9));
    assert_eq!(x[2], f32::INFINITY);
    assert_eq!(x[3], -2.0 * 2f32.powi(-24));
    assert_eq!(x[4], 0.099975586);
}
