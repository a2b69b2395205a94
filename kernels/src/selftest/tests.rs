//! The self-test tested without a GPU: the CPU against itself must agree bit for bit, and a
//! backend with one broken op must fail on that op and nowhere else.

use super::broken::{Broken, Flip};
use super::{run, Options, Scale};
use crate::cpu::Cpu;

/// Every trait op that the self-test must cover (all of them except `name`, `view`,
/// `view_mut`, `buf_len`, `host_mut`, `sync`, `peak_bytes`, which carry no numbers or are
/// covered inside the memory row).
const OPS: &[&str] = &[
    "conv2d_fwd",
    "conv2d_bwd_data",
    "conv2d_bwd_filter",
    "bn_stats",
    "bn_apply",
    "bn_bwd_reduce",
    "bn_bwd_apply",
    "bn_running_update",
    "bn_group_mean",
    "bn_moments_pack",
    "bn_moments_unpack",
    "relu_inplace",
    "relu_bwd",
    "add_inplace",
    "axpby",
    "copy",
    "fill",
    "scale",
    "round_act",
    "maxpool_fwd",
    "maxpool_bwd",
    "avgpool_fwd",
    "avgpool_bwd",
    "linear_fwd",
    "linear_bwd_data",
    "linear_bwd_weight",
    "l2norm_fwd",
    "l2norm_bwd",
    "row_max_sumexp",
    "lse_combine",
    "xent_loss",
    "mask_cells",
    "softmax_xent_bwd",
    "gather_cols",
    "sumsq",
    "sumsq_axpy",
    "ema",
    "unscale_check",
    "sgd_step",
    "lars_step",
    "lars_step_all",
    "adamw_step",
];

#[test]
fn cpu_against_cpu_agrees_bit_for_bit_in_both_precisions() {
    for amp in [false, true] {
        let opts = Options { act_fp16: amp, scale: Scale::Quick, ..Options::default() };
        let report = run(&Cpu { amp }, &Cpu { amp }, &opts).expect("the CPU self-test runs");
        assert!(report.passed(), "amp {amp}:\n{report}");
        for row in &report.rows {
            assert_eq!((row.max_abs, row.max_rel), (0.0, 0.0), "amp {amp}: {} is not bit-identical", row.op);
        }
        for op in OPS {
            assert!(report.rows.iter().any(|r| r.op_name() == *op), "no row tests {op}:\n{report}");
        }
        let memory = report.rows.first().map(|r| r.op.clone()).unwrap_or_default();
        for part in ["act_from_host", "from_host", "to_host", "zeros", "write", "buf_len"] {
            assert!(memory.contains(part), "the memory row does not cover {part}: {memory}");
        }
    }
}

#[test]
fn a_broken_op_fails_the_self_test_on_that_op_only() {
    for flip in [Flip::ConvBwdFilter, Flip::BnApply, Flip::SoftmaxXentBwd, Flip::LarsStep, Flip::UnscaleCheck]
    {
        let broken = Broken { inner: Cpu { amp: false }, flip };
        let report = run(&Cpu { amp: false }, &broken, &Options::default()).expect("the self-test runs");
        assert!(!report.passed(), "{flip:?} went unnoticed:\n{report}");
        let failed: Vec<&str> = report.failures().map(|r| r.op.as_str()).collect();
        assert!(
            failed.iter().all(|op| op.starts_with(flip.op())),
            "{flip:?} made other ops fail: {failed:?}"
        );
        assert!(report.rows.iter().any(|r| r.pass), "the other ops still pass");
        let printed = report.to_string();
        assert!(printed.contains("FAIL") && printed.contains(flip.op()), "{printed}");
    }
}

#[test]
fn the_fp16_tolerances_accept_one_rounding_and_reject_two_ulps_of_bias() {
    // What the fp16 tolerance of a single-rounding op (1e-3) means: the CPU rounding its fp32
    // result once passes, a result off by 2 fp16 ulps (~2e-3 relative) does not.
    use super::harness::{errors, round_f16};
    let exact: Vec<f32> = (1..200).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
    let r: Vec<f64> = exact.iter().map(|&v| v as f64).collect();
    let once: Vec<f64> = round_f16(&exact).iter().map(|&v| v as f64).collect();
    assert!(errors(&r, &once).1 <= 1e-3);
    let biased: Vec<f64> = exact.iter().map(|&v| v as f64 * (1.0 + 2.0 * 2f64.powi(-10))).collect();
    assert!(errors(&r, &biased).1 > 1e-3);
}

#[test]
fn an_error_in_an_op_ends_the_run_with_a_failing_row() {
    let broken = Broken { inner: Cpu { amp: false }, flip: Flip::Zeros };
    let report = run(&Cpu { amp: false }, &broken, &Options::default()).expect("errors become rows");
    assert!(!report.passed());
    let last = report.rows.last().expect("a row for the error");
    assert!(last.op.contains("run aborted") && last.note.contains("test refusal"), "{last:?}");
    assert_eq!(report.failures().count(), 1, "the run stops at the first error:\n{report}");
}
