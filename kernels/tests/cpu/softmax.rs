//! Softmax cross-entropy pieces: the loss assembled from row_max_sumexp and gather_cols,
//! differentiated by finite differences against softmax_xent_bwd (masked cells and a row
//! whose positive lives in another block included), and the block decomposition the
//! distributed log-sum-exp relies on.

use crate::util::{dot, fd_check, uniform};
use moco_kernels::cpu::softmax::{gather_cols, mask_cells, row_max_sumexp, softmax_xent_bwd};

const ROWS: usize = 4;
const COLS: usize = 6;
const LABELS: [i32; ROWS] = [2, -1, 0, 5];
const MASKED: [(u32, u32); 3] = [(0, 1), (1, 4), (3, 0)];

/// lse per row from the (max, sum) pieces.
fn lse(rows: usize, cols: usize, logits: &[f32]) -> Vec<f32> {
    let (mx, sum) = row_max_sumexp(rows, cols, logits);
    mx.iter().zip(&sum).map(|(m, s)| m + s.ln()).collect()
}

/// L = mean over rows of (lse - logit[label]) (a row with label -1 contributes lse alone:
/// its positive is in another block), exactly as the MoCo step assembles it.
fn loss(logits: &[f32]) -> f64 {
    let l = lse(ROWS, COLS, logits);
    let pos = gather_cols(ROWS, COLS, logits, &LABELS);
    l.iter().zip(&pos).map(|(a, b)| (*a - *b) as f64).sum::<f64>() / ROWS as f64
}

fn masked_logits() -> Vec<f32> {
    let mut logits: Vec<f32> = uniform(500, ROWS * COLS).iter().map(|v| 2.0 * v).collect();
    mask_cells(COLS, &mut logits, &MASKED);
    logits
}

#[test]
fn softmax_xent_backward_matches_finite_differences() {
    let logits = masked_logits();
    let lse_v = lse(ROWS, COLS, &logits);
    let mut grad = vec![f32::NAN; ROWS * COLS];
    softmax_xent_bwd(ROWS, COLS, &logits, &lse_v, &LABELS, 1.0 / ROWS as f32, &mut grad);
    for &(r, c) in &MASKED {
        assert_eq!(grad[r as usize * COLS + c as usize], 0.0, "masked cell ({r}, {c})");
    }
    // Finite differences over the unmasked cells only (a -inf cell cannot be perturbed).
    let open: Vec<usize> = (0..ROWS * COLS).filter(|i| logits[*i] != f32::NEG_INFINITY).collect();
    // Smooth; with STEP = 1e-3 truncation ~1e-7, and the f32 lse (~1e-7 absolute) over the
    // 2e-3 step gives ~1e-4 noise; gradients are ~0.1 (softmax / 4), so 1e-3 of the largest
    // plus 1e-4 absolute. A missing one-hot or wrong sign is >= 0.05.
    fd_check("softmax xent", &logits, &grad, 1e-3, 1e-4, 1e-3, Some(&open), loss);
}

#[test]
fn softmax_xent_masked_label_and_scale() {
    // A masked cell on the label column still gets exactly 0; `scale` multiplies the rest.
    let logits = [0.0, f32::NEG_INFINITY, 0.0];
    let l = lse(1, 3, &logits);
    assert!((l[0] - 2.0f32.ln()).abs() < 1e-6);
    let mut g = [f32::NAN; 3];
    softmax_xent_bwd(1, 3, &logits, &l, &[1], 4.0, &mut g);
    assert_eq!(g[1], 0.0);
    assert!((g[0] - 2.0).abs() < 1e-6 && (g[2] - 2.0).abs() < 1e-6, "4 * softmax = 2: {g:?}");
    let mut g = [f32::NAN; 3];
    softmax_xent_bwd(1, 3, &logits, &l, &[2], 4.0, &mut g);
    assert!((g[2] - (2.0 - 4.0)).abs() < 1e-6, "label column: 4 * (0.5 - 1): {g:?}");
}

#[test]
fn row_max_sumexp_masked_rows() {
    let inf = f32::NEG_INFINITY;
    let (mx, sum) = row_max_sumexp(2, 3, &[inf, inf, inf, 1.0, inf, 1.0]);
    assert_eq!(mx, vec![inf, 1.0]);
    assert_eq!(sum, vec![0.0, 2.0]);
    let (_, sum) = row_max_sumexp(1, 2, &[1.0, f32::NAN]);
    assert!(sum[0].is_nan(), "a NaN logit must poison its row");
}

/// Splitting the columns into two blocks and combining the (max, sum) pairs with the usual
/// log-sum-exp merge gives the whole row's lse; the gradients of the blocks, each with the
/// label translated (or -1 where the positive lies in the other block), concatenate to the
/// whole row's gradient.
#[test]
fn block_decomposition_matches_whole_rows() {
    let logits = masked_logits();
    let split = 4;
    let block = |lo: usize, hi: usize| -> Vec<f32> {
        (0..ROWS).flat_map(|r| logits[r * COLS + lo..r * COLS + hi].to_vec()).collect()
    };
    let (a, b) = (block(0, split), block(split, COLS));
    let (ma, sa) = row_max_sumexp(ROWS, split, &a);
    let (mb, sb) = row_max_sumexp(ROWS, COLS - split, &b);
    let whole = lse(ROWS, COLS, &logits);
    let combined: Vec<f32> = (0..ROWS)
        .map(|r| {
            let m = ma[r].max(mb[r]);
            m + (sa[r] * (ma[r] - m).exp() + sb[r] * (mb[r] - m).exp()).ln()
        })
        .collect();
    for r in 0..ROWS {
        assert!((combined[r] - whole[r]).abs() < 1e-6, "row {r}: {} vs {}", combined[r], whole[r]);
    }
    let la: Vec<i32> = LABELS.iter().map(|&l| if l >= 0 && (l as usize) < split { l } else { -1 }).collect();
    let lb: Vec<i32> =
        LABELS.iter().map(|&l| if l as usize >= split && l >= 0 { l - split as i32 } else { -1 }).collect();
    let mut ga = vec![0.0; a.len()];
    softmax_xent_bwd(ROWS, split, &a, &whole, &la, 0.25, &mut ga);
    let mut gb = vec![0.0; b.len()];
    softmax_xent_bwd(ROWS, COLS - split, &b, &whole, &lb, 0.25, &mut gb);
    let mut g = vec![0.0; ROWS * COLS];
    softmax_xent_bwd(ROWS, COLS, &logits, &whole, &LABELS, 0.25, &mut g);
    for r in 0..ROWS {
        assert_eq!(&g[r * COLS..r * COLS + split], &ga[r * split..(r + 1) * split], "row {r} block a");
        assert_eq!(
            &g[r * COLS + split..(r + 1) * COLS],
            &gb[r * (COLS - split)..(r + 1) * (COLS - split)],
            "row {r} block b"
        );
    }
    // The positive's logit, and 0 for the row whose label is -1.
    let pos = gather_cols(ROWS, COLS, &logits, &LABELS);
    assert_eq!(pos, vec![logits[2], 0.0, logits[2 * COLS], logits[3 * COLS + 5]]);
    assert!(dot(&g, &g) > 0.0);
}
