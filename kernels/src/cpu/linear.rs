//! Linear layers without bias (weights `[out, in]`) and the logits q . k^T: three GEMMs.

use super::gemm::{par_sgemm, MatRef};

fn check(op: &str, n: usize, d_in: usize, d_out: usize, x_len: usize, w_len: usize, y_len: usize) {
    assert_eq!(x_len, n * d_in, "{op}: input must be [{n}, {d_in}]");
    assert_eq!(w_len, d_out * d_in, "{op}: weight must be [{d_out}, {d_in}]");
    assert_eq!(y_len, n * d_out, "{op}: output must be [{n}, {d_out}]");
}

/// y[n, out] = x[n, in] . w[out, in]^T (overwritten).
pub fn linear_fwd(n: usize, d_in: usize, d_out: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    check("linear_fwd", n, d_in, d_out, x.len(), w.len(), y.len());
    par_sgemm(n, d_in, d_out, MatRef::rows(x, d_in), MatRef::rows_t(w, d_in), y, false);
}

/// dx[n, in] = dy[n, out] . w[out, in] (overwritten).
pub fn linear_bwd_data(n: usize, d_in: usize, d_out: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check("linear_bwd_data", n, d_in, d_out, dx.len(), w.len(), dy.len());
    par_sgemm(n, d_out, d_in, MatRef::rows(dy, d_out), MatRef::rows(w, d_in), dx, false);
}

/// dw[out, in] += dy^T . x (accumulates).
pub fn linear_bwd_weight(n: usize, d_in: usize, d_out: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    check("linear_bwd_weight", n, d_in, d_out, x.len(), dw.len(), dy.len());
    par_sgemm(d_out, n, d_in, MatRef::rows_t(dy, d_out), MatRef::rows(x, d_in), dw, true);
}
