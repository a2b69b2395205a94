//! The softmax cross-entropy pieces on fp32 logits: masking (including a fully masked row),
//! per-row max and sum-exp, the backward (labels in the block, absent, and on a masked cell),
//! and the positive-logit gather.

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol, EXACT};

/// exp differs by an ulp or two between CUDA's expf and Rust's, and the row sums run in
/// another order: a few fp32 ulps of the sum.
const SUMEXP: Tol = Tol::both(1e-5);
/// exp(l - lse) - onehot, times the scale: as above; fp16 output rounded once (4.9e-4).
const XENT_BWD: Tol = Tol::new(1e-5, 1e-3);

/// The masked logits, then (row max, row sum-exp) of them.
fn masked<X: Backend>(
    be: &X,
    rows: usize,
    cols: usize,
    logits: &[f32],
    cells: &[(u32, u32)],
) -> Result<[Vec<f32>; 3]> {
    let mut l = be.from_host(logits)?;
    be.mask_cells(cols, full_mut::<X>(&mut l), cells);
    let (max, sum) = be.row_max_sumexp(rows, cols, full::<X>(&l));
    be.sync()?;
    Ok([be.to_host(&l)?, max, sum])
}

#[allow(clippy::too_many_arguments)]
fn xent<X: Backend>(
    be: &X,
    rows: usize,
    cols: usize,
    logits: &[f32],
    lse: &[f32],
    labels: &[i32],
    scale: f32,
) -> Result<[Vec<f32>; 2]> {
    let l = be.from_host(logits)?;
    let mut d = be.zeros(rows * cols)?;
    be.softmax_xent_bwd(rows, cols, full::<X>(&l), lse, labels, scale, full_mut::<X>(&mut d));
    let pos = be.gather_cols(rows, cols, full::<X>(&l), labels);
    be.sync()?;
    Ok([be.to_host(&d)?, pos])
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    let (rows, cols) = (cx.size(6, 64), cx.size(10, 4096));
    // Logits / T with T = 0.2 and unit vectors lie in [-5, 5].
    let logits = cx.gen.normals(rows * cols, 0.0, 2.0);
    // Row 1 fully masked, plus scattered cells (own-image entries) and a repeated cell.
    let mut cells: Vec<(u32, u32)> = (0..cols as u32).map(|c| (1, c)).collect();
    for _ in 0..rows * 2 {
        cells.push((cx.gen.below(rows) as u32, cx.gen.below(cols) as u32));
    }
    cells.push(cells[cells.len() - 1]);
    let (r, c) = both!(cx, masked(rows, cols, &logits, &cells));
    let dims = format!("[{rows}, {cols}]");
    cx.compare(format!("mask_cells {dims}"), EXACT, &r[0], &c[0]);
    cx.compare(format!("row_max_sumexp max (masked, one row fully) {dims}"), EXACT, &r[1], &c[1]);
    cx.compare(format!("row_max_sumexp sum (masked, one row fully) {dims}"), SUMEXP, &r[2], &c[2]);

    // The log-sum-exp the loss would pass back, from the reference's pieces.
    let masked_logits = r[0].clone();
    let lse: Vec<f32> = r[1]
        .iter()
        .zip(&r[2])
        .map(|(&m, &s)| if m == f32::NEG_INFINITY { m } else { m + (s as f64).ln() as f32 })
        .collect();
    // A label in the block, none (-1), and (row 0) a label on a masked cell.
    let mut labels: Vec<i32> = (0..rows).map(|i| if i % 3 == 2 { -1 } else { (i % cols) as i32 }).collect();
    let masked_col = (0..cols).find(|&k| masked_logits[k] == f32::NEG_INFINITY);
    if let Some(k) = masked_col {
        labels[0] = k as i32;
    }
    // The loss scale (2^16) times 2 / N, as the MoCo step passes it.
    let scale = 65536.0 * 2.0 / (rows * 64) as f32;
    let (r, c) = both!(cx, xent(rows, cols, &masked_logits, &lse, &labels, scale));
    cx.compare(format!("softmax_xent_bwd {dims}"), XENT_BWD, &r[0], &c[0]);
    cx.compare(format!("gather_cols {dims}"), EXACT, &r[1], &c[1]);
    Ok(())
}
