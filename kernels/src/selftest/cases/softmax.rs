//! The softmax cross-entropy pieces on fp32 logits: masking (including a fully masked row),
//! per-row max and sum-exp, the backward (labels in the block, absent, and on a masked cell),
//! the positive-logit gather, the distributed log-sum-exp of several blocks' pairs and the loss
//! value.

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol, EXACT};

/// exp differs by an ulp or two between CUDA's expf and Rust's, and the row sums run in
/// another order: a few fp32 ulps of the sum.
const SUMEXP: Tol = Tol::both(1e-5);
/// exp(l - lse) - onehot, times the scale: as above; fp16 output rounded once (4.9e-4).
const XENT_BWD: Tol = Tol::new(1e-5, 1e-3);
/// The combined log-sum-exp: f64 sums of f64 exp in the same order; the device's double `exp`
/// and `log` may differ from the host's in the last bit of a double, far below one f32 ulp.
const LSE: Tol = Tol::both(1e-6);
/// The loss value: the same f64 sum in the same order, rounded to f32 once.
const LOSS: Tol = Tol::both(1e-6);

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
    let (mut max, mut sum) = (be.zeros_master(rows)?, be.zeros_master(rows)?);
    be.row_max_sumexp(rows, cols, full::<X>(&l), full_mut::<X>(&mut max), full_mut::<X>(&mut sum));
    Ok([be.to_host(&l)?, be.to_host(&max)?, be.to_host(&sum)?])
}

/// lse of `parts` blocks' (max, sum) `[parts][rows]`, then the loss of those rows against `pos`.
fn combine<X: Backend>(
    be: &X,
    rows: usize,
    parts: usize,
    pairs: &[Vec<f32>; 2],
    pos: &[f32],
) -> Result<[Vec<f32>; 2]> {
    let (mx, sm) = (be.from_host(&pairs[0])?, be.from_host(&pairs[1])?);
    let mut lse = be.zeros_master(rows)?;
    be.lse_combine(rows, parts, full::<X>(&mx), full::<X>(&sm), full_mut::<X>(&mut lse));
    let pos = be.from_host(pos)?;
    let mut loss = be.zeros_master(1)?;
    be.xent_loss(rows, full::<X>(&lse), full::<X>(&pos), 2.0 * 0.2, full_mut::<X>(&mut loss));
    Ok([be.to_host(&lse)?, be.to_host(&loss)?])
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
    let lse = be.from_host(lse)?;
    let mut d = be.zeros(rows * cols)?;
    be.softmax_xent_bwd(rows, cols, full::<X>(&l), full::<X>(&lse), labels, scale, full_mut::<X>(&mut d));
    let mut pos = be.zeros_master(rows)?;
    be.gather_cols(rows, cols, full::<X>(&l), labels, full_mut::<X>(&mut pos));
    Ok([be.to_host(&d)?, be.to_host(&pos)?])
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

    // Three blocks' pairs (the batch block and two ranks' queue shards), from the reference's
    // row_max_sumexp of column slices; part 2 of row 1 is fully masked (-inf, 0), and row 1 is
    // masked in every part (-inf overall, as the masked logits above make it).
    let parts = 3;
    let split = [0, cols / 3, 2 * cols / 3, cols];
    let mut pairs = [Vec::new(), Vec::new()];
    for p in 0..parts {
        let (a, b) = (split[p], split[p + 1]);
        let block: Vec<f32> = masked_logits.chunks(cols).flat_map(|row| row[a..b].to_vec()).collect();
        let (m, s) = crate::cpu::softmax::row_max_sumexp(rows, b - a, &block);
        pairs[0].extend(m);
        pairs[1].extend(s);
    }
    let pos: Vec<f32> =
        (0..rows).map(|r| if r == 1 { 0.0 } else { masked_logits[r * cols + r % cols] }).collect();
    let (r, c) = both!(cx, combine(rows, parts, &pairs, &pos));
    cx.compare(format!("lse_combine {parts} parts [{rows}]"), LSE, &r[0], &c[0]);
    // Row 1's -inf would make the loss -inf on both sides: leave it out of the loss rows.
    let live: Vec<usize> = (0..rows).filter(|&r| r != 1).collect();
    let pick =
        |v: &[f32]| (0..parts).flat_map(|p| live.iter().map(move |&r| v[p * rows + r])).collect::<Vec<f32>>();
    let live_pairs = [pick(&pairs[0]), pick(&pairs[1])];
    let live_pos: Vec<f32> = live.iter().map(|&r| pos[r]).collect();
    let (r, c) = both!(cx, combine(live.len(), parts, &live_pairs, &live_pos));
    cx.compare(format!("xent_loss [{}]", live.len()), LOSS, &r[1], &c[1]);
    Ok(())
}
