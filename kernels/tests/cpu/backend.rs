//! The `Backend` implementation of the CPU: memory ops, AMP emulation, and the trait's
//! overwrite/accumulate contract observed through the trait.

use moco_kernels::cpu::Cpu;
use moco_kernels::{Backend, ConvShape, KernelError};

#[test]
fn memory_ops() {
    let be = Cpu { amp: false };
    let mut buf = be.zeros(5).unwrap();
    assert_eq!(Cpu::buf_len(&buf), 5);
    be.write(&mut buf, 2, &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(be.to_host(&buf).unwrap(), vec![0.0, 0.0, 1.0, 2.0, 3.0]);
    let err = be.write(&mut buf, 3, &[1.0, 2.0, 3.0]).unwrap_err();
    assert!(matches!(err, KernelError::Shape { op: "write", .. }), "{err}");
    assert_eq!(Cpu::view(&buf, 2..4), &[1.0, 2.0]);
    Cpu::view_mut(&mut buf, 0..1)[0] = 7.0;
    Cpu::host_mut(&mut buf).unwrap()[1] = 8.0;
    assert_eq!(be.from_host(&buf).unwrap(), vec![7.0, 8.0, 1.0, 2.0, 3.0]);
}

#[test]
fn round_act_only_under_amp() {
    let x = [1.0 + 2f32.powi(-12), 1e5];
    let mut a = x;
    Cpu { amp: false }.round_act(&mut a);
    assert_eq!(a, x, "no rounding without AMP");
    Cpu { amp: true }.round_act(&mut a);
    assert_eq!(a, [1.0, f32::INFINITY], "fp16 rounding (and overflow) under AMP");
}

/// Activation outputs are overwritten, parameter gradients accumulated, through the trait.
#[test]
fn overwrite_and_accumulate_contract() {
    let be = Cpu::default();
    let s = ConvShape { n: 1, h: 3, w: 3, c_in: 2, c_out: 2, k: 3, stride: 1, pad: 1 };
    let x: Vec<f32> = (0..s.x_len()).map(|i| (i as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..s.w_len()).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut y = vec![f32::NAN; s.y_len()];
    be.conv2d_fwd(&s, &x, &w, &mut y);
    assert!(y.iter().all(|v| v.is_finite()), "y overwritten");
    let mut dx = vec![f32::NAN; s.x_len()];
    be.conv2d_bwd_data(&s, &y, &w, &mut dx);
    assert!(dx.iter().all(|v| v.is_finite()), "dx overwritten");
    let mut dw = vec![0.0; s.w_len()];
    be.conv2d_bwd_filter(&s, &x, &y, &mut dw);
    let mut dw2 = vec![1.0; s.w_len()];
    be.conv2d_bwd_filter(&s, &x, &y, &mut dw2);
    for (a, b) in dw.iter().zip(&dw2) {
        assert!((b - (a + 1.0)).abs() <= 1e-5 * a.abs().max(1.0), "dw accumulates: {b} vs {a} + 1");
    }
}
