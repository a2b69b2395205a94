//! Softmax cross-entropy pieces over `[rows, cols]` logits. The MoCo loss is a log-sum-exp
//! over columns split across blocks and ranks; these give per-row (max, sum-exp) pairs the
//! caller combines, the positive's logit, and the backward given the combined lse.
//! Masked cells hold -inf and contribute nothing (0 to sums and gradients).

use rayon::prelude::*;

fn check(op: &str, rows: usize, cols: usize, len: usize) {
    assert_eq!(len, rows * cols, "{op}: logits must be [{rows}, {cols}]");
}

/// Per row: max over the non-masked logits and sum(exp(l - max)) over them (summed in f64).
/// A fully masked row gives (-inf, 0). A NaN logit makes its row's sum NaN.
pub fn row_max_sumexp(rows: usize, cols: usize, logits: &[f32]) -> (Vec<f32>, Vec<f32>) {
    check("row_max_sumexp", rows, cols, logits.len());
    if cols == 0 {
        return (vec![f32::NEG_INFINITY; rows], vec![0.0; rows]);
    }
    logits
        .par_chunks(cols)
        .map(|row| {
            let mx = row.iter().fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m });
            if mx == f32::NEG_INFINITY {
                // Every cell masked (NaN cells, if any, never compare greater: make them count).
                let nan = row.iter().any(|l| l.is_nan());
                return (mx, if nan { f32::NAN } else { 0.0 });
            }
            let sum: f64 =
                row.iter().filter(|&&l| l != f32::NEG_INFINITY).map(|&l| ((l - mx) as f64).exp()).sum();
            (mx, sum as f32)
        })
        .unzip()
}

/// logits[r, c] = -inf for every (r, c) in `cells`.
pub fn mask_cells(cols: usize, logits: &mut [f32], cells: &[(u32, u32)]) {
    assert!(cols > 0 || cells.is_empty(), "mask_cells: no columns");
    let rows = logits.len().checked_div(cols).unwrap_or(0);
    check("mask_cells", rows, cols, logits.len());
    for &(r, c) in cells {
        let (r, c) = (r as usize, c as usize);
        assert!(r < rows && c < cols, "mask_cells: cell ({r}, {c}) outside [{rows}, {cols}]");
        logits[r * cols + c] = f32::NEG_INFINITY;
    }
}

/// dlogits = scale * (exp(l - lse[row]) - onehot(label[row])), overwritten. label -1 = the
/// row's positive is not in this block. A masked (-inf) logit gets exactly 0, even on the
/// label column.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_bwd(
    rows: usize,
    cols: usize,
    logits: &[f32],
    lse: &[f32],
    labels: &[i32],
    scale: f32,
    dlogits: &mut [f32],
) {
    check("softmax_xent_bwd", rows, cols, logits.len());
    check("softmax_xent_bwd", rows, cols, dlogits.len());
    assert!(
        lse.len() == rows && labels.len() == rows,
        "softmax_xent_bwd: lse and labels need {rows} elements"
    );
    if cols == 0 {
        return;
    }
    dlogits.par_chunks_mut(cols).zip(logits.par_chunks(cols)).enumerate().for_each(|(r, (dr, lr))| {
        let label = labels[r];
        assert!(
            label >= -1 && (label as i64) < cols as i64,
            "softmax_xent_bwd: label {label} outside -1..{cols}"
        );
        for (c, (d, &l)) in dr.iter_mut().zip(lr).enumerate() {
            *d = if l == f32::NEG_INFINITY {
                0.0
            } else {
                let onehot = if c as i32 == label { 1.0 } else { 0.0 };
                scale * ((l - lse[r]).exp() - onehot)
            };
        }
    });
}

/// logits[r, label[r]] for rows with label >= 0, else 0.
pub fn gather_cols(rows: usize, cols: usize, logits: &[f32], labels: &[i32]) -> Vec<f32> {
    check("gather_cols", rows, cols, logits.len());
    assert_eq!(labels.len(), rows, "gather_cols: labels need {rows} elements");
    labels
        .iter()
        .enumerate()
        .map(|(r, &label)| {
            assert!(
                label >= -1 && (label as i64) < cols as i64,
                "gather_cols: label {label} outside -1..{cols}"
            );
            if label >= 0 {
                logits[r * cols + label as usize]
            } else {
                0.0
            }
        })
        .collect()
}

/// The distributed log-sum-exp of each row from per-block (max, sum-exp) pairs, `max` and `sum`
/// `[parts][rows]`. Parts whose max is -inf (only masked
/// cells) contribute nothing; a row with none left gives -inf. The sum runs in f64 in part
/// order, so every rank and backend combines the blocks the same way.
pub fn lse_combine(rows: usize, parts: usize, max: &[f32], sum: &[f32], lse: &mut [f32]) {
    assert!(
        max.len() == parts * rows && sum.len() == parts * rows,
        "lse_combine: max and sum must be [{parts}][{rows}]"
    );
    assert_eq!(lse.len(), rows, "lse_combine: lse must have {rows} entries");
    for (r, out) in lse.iter_mut().enumerate() {
        let pair = |p: usize| (max[p * rows + r], sum[p * rows + r]);
        let live = || (0..parts).map(pair).filter(|(m, _)| *m != f32::NEG_INFINITY);
        let mx = live().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
        if mx == f32::NEG_INFINITY {
            *out = f32::NEG_INFINITY;
            continue;
        }
        let s: f64 = live().map(|(m, s)| s as f64 * ((m - mx) as f64).exp()).sum();
        *out = mx + s.ln() as f32;
    }
}

/// out[0] = factor * (sum over rows of (lse - pos), in f64, in row order) / rows: one term of the
/// MoCo loss (factor = 2T) from its per-row log-sum-exp and positive logit.
pub fn xent_loss(rows: usize, lse: &[f32], pos: &[f32], factor: f32, out: &mut [f32]) {
    assert!(lse.len() == rows && pos.len() == rows, "xent_loss: lse and pos must have {rows} entries");
    assert_eq!(out.len(), 1, "xent_loss: out is one value");
    let sum: f64 = lse.iter().zip(pos).map(|(l, p)| (*l - *p) as f64).sum();
    out[0] = (sum / rows as f64) as f32 * factor;
}
