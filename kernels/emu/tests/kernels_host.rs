//! The host twins of kernels/cu against naive Rust references written from each kernel's
//! documented semantics, launched with the shapes the project uses (kernels/src/cuda/*.rs).

mod common;

use common::{elems, launch, p, Arg::*, Rng, BLOCK};
use half::f16;
use moco_emu::kernels;

fn close(got: f32, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1.0);
    assert!((f64::from(got) - want).abs() <= tol, "{what}: got {got}, want {want} (tol {tol})");
}

#[test]
fn relu_inplace_f16_and_axpby_f32_match_the_reference() {
    let mut rng = Rng::new(1);
    let n = 100_003;
    let orig: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.uniform(-4.0, 4.0))).collect();
    let mut x = orig.clone();
    launch("relu_inplace_f16", elems(n, 64), BLOCK, &[I(n as i32), p(&mut x)]).unwrap();
    for (i, (&got, &o)) in x.iter().zip(&orig).enumerate() {
        let want = if o.to_f32() > 0.0 { o } else { f16::ZERO };
        assert_eq!(got.to_f32(), want.to_f32(), "relu at {i}");
    }

    let xs: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let y0: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut xv = xs.clone();
    let mut y = y0.clone();
    let (alpha, beta) = (0.75f32, -1.25f32);
    launch("axpby_f32", elems(n, 100), BLOCK, &[I(n as i32), F(alpha), p(&mut xv), F(beta), p(&mut y)])
        .unwrap();
    for i in 0..n {
        assert_eq!(y[i], alpha * xs[i] + beta * y0[i], "axpby at {i}");
    }
}

fn row_max_sumexp_case(rows: usize, cols: usize, grid: u32, block: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut logits: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-20.0, 20.0)).collect();
    // Masked cells, a fully masked row, and a row whose only unmasked cell is its last.
    for (i, l) in logits.iter_mut().enumerate() {
        if i % 7 == 3 {
            *l = f32::NEG_INFINITY;
        }
    }
    logits[cols..2 * cols].fill(f32::NEG_INFINITY);
    logits[2 * cols..3 * cols - 1].fill(f32::NEG_INFINITY);
    logits[3 * cols - 1] = 5.0;
    let mut row_max = vec![0f32; rows];
    let mut row_sum = vec![0f32; rows];
    launch(
        "row_max_sumexp_f32",
        [grid, 1, 1],
        [block, 1, 1],
        &[I(rows as i32), I(cols as i32), p(&mut logits), p(&mut row_max), p(&mut row_sum)],
    )
    .unwrap();
    for r in 0..rows {
        let row = &logits[r * cols..(r + 1) * cols];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(row_max[r], m, "max of row {r}");
        let want: f64 = if m == f32::NEG_INFINITY {
            0.0
        } else {
            row.iter().map(|&l| (f64::from(l) - f64::from(m)).exp()).sum()
        };
        close(row_sum[r], want, 1e-5, &format!("sum of row {r} (grid {grid}, block {block})"));
    }
    assert_eq!(row_sum[1], 0.0, "a fully masked row sums to 0");
    assert_eq!(row_sum[2], 1.0, "a row with one unmasked cell sums to exp(0)");
}

#[test]
fn row_max_sumexp_matches_the_reference_with_shuffles_and_shared_memory() {
    // Fewer blocks than rows: each block reuses its shared pairs for several rows.
    row_max_sumexp_case(37, 1000, 16, 256, 2);
    // Two warps, more columns than threads, one block per row.
    row_max_sumexp_case(9, 5000, 9, 64, 3);
}

#[test]
fn bn_stats_partial_and_finalize_match_the_reference() {
    let mut rng = Rng::new(4);
    let (m, c, rows_per_chunk) = (1000usize, 70usize, 128usize);
    let chunks = m.div_ceil(rows_per_chunk);
    // A mean far from zero: the Welford merge must not cancel catastrophically.
    let mut x: Vec<f16> =
        (0..m * c).map(|i| f16::from_f32(10.0 + (i % c) as f32 * 0.1 + rng.uniform(-2.0, 2.0))).collect();
    let mut part_mean = vec![0f32; chunks * c];
    let mut part_m2 = vec![0f32; chunks * c];
    launch(
        "bn_stats_partial_f16",
        [c.div_ceil(32) as u32, chunks as u32, 1],
        [32, 8, 1],
        &[I(m as i32), I(c as i32), I(rows_per_chunk as i32), p(&mut x), p(&mut part_mean), p(&mut part_m2)],
    )
    .unwrap();
    let (mut mean, mut var) = (vec![0f32; c], vec![0f32; c]);
    launch(
        "bn_stats_finalize",
        elems(c, 64),
        BLOCK,
        &[
            I(m as i32),
            I(c as i32),
            I(rows_per_chunk as i32),
            I(chunks as i32),
            p(&mut part_mean),
            p(&mut part_m2),
            p(&mut mean),
            p(&mut var),
        ],
    )
    .unwrap();
    for ch in 0..c {
        let vals: Vec<f64> = (0..m).map(|r| f64::from(x[r * c + ch].to_f32())).collect();
        let mu = vals.iter().sum::<f64>() / m as f64;
        let v = vals.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / m as f64;
        close(mean[ch], mu, 1e-6, &format!("mean of channel {ch}"));
        close(var[ch], v, 1e-5, &format!("var of channel {ch}"));
        // Level 1 alone: chunk 0's mean.
        let mu0 = (0..rows_per_chunk).map(|r| f64::from(x[r * c + ch].to_f32())).sum::<f64>()
            / rows_per_chunk as f64;
        close(part_mean[ch], mu0, 1e-6, &format!("chunk 0 mean of channel {ch}"));
    }
}

#[test]
fn unscale_check_scales_and_flags_inf_and_nan_with_a_warp_vote() {
    let n = 10_000usize;
    let mut rng = Rng::new(5);
    let base: Vec<f32> = (0..n).map(|_| rng.uniform(-100.0, 100.0)).collect();
    // (element made non-finite, inv_scale, expected flag)
    type Case = (Option<(usize, f32)>, f32, i32);
    let cases: [Case; 5] = [
        (None, 0.5, 0),
        (Some((7777, f32::NAN)), 0.5, 1),
        (Some((0, f32::INFINITY)), 0.5, 1),
        (Some((9999, f32::NEG_INFINITY)), 0.5, 1),
        // Finite before, inf after scaling.
        (Some((4242, 3.0e38)), 4.0, 1),
    ];
    for (bad, inv_scale, want_flag) in cases {
        let mut g = base.clone();
        if let Some((i, v)) = bad {
            g[i] = v;
        }
        let before = g.clone();
        let mut flag = [0f32];
        launch(
            "unscale_check_f32",
            elems(n, 8),
            BLOCK,
            &[I(n as i32), F(inv_scale), p(&mut g), p(&mut flag)],
        )
        .unwrap();
        assert_eq!(flag[0], want_flag as f32, "flag for {bad:?} x {inv_scale}");
        for i in 0..n {
            let want = before[i] * inv_scale;
            assert!(g[i] == want || (g[i].is_nan() && want.is_nan()), "g[{i}] = {}, want {want}", g[i]);
        }
    }
}

fn l2norm_case(n: usize, d: usize, grid: u32) {
    let mut rng = Rng::new(6 + d as u64);
    let mut x: Vec<f32> = (0..n * d).map(|_| rng.uniform(-3.0, 3.0)).collect();
    x[d..2 * d].fill(0.0); // a zero row: the norm clamps to 1e-12
    let mut y = vec![0f32; n * d];
    let mut norm = vec![0f32; n];
    launch(
        "l2norm_fwd_f32",
        [grid, 1, 1],
        BLOCK,
        &[I(n as i32), I(d as i32), p(&mut x), p(&mut y), p(&mut norm)],
    )
    .unwrap();
    for r in 0..n {
        let row = &x[r * d..(r + 1) * d];
        let nrm = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt().max(1e-12);
        close(norm[r], nrm, 1e-6, &format!("norm of row {r}"));
        for j in 0..d {
            close(y[r * d + j], f64::from(row[j]) / nrm, 1e-6, &format!("y[{r}, {j}]"));
        }
    }
}

#[test]
fn l2norm_fwd_matches_the_reference() {
    // Fewer blocks than rows: block_sum runs repeatedly in one block.
    l2norm_case(5, 256, 3);
    // More blocks than rows: blocks 5..7 have no row, never synchronise and take the
    // plain-call path, while blocks 0..4 need fibers, in the same launch.
    l2norm_case(5, 100, 8);
}

#[test]
fn sumsq_partial_reduces_doubles_through_warp_shuffles() {
    let mut rng = Rng::new(7);
    let (n, chunk) = (5000usize, 1024usize);
    let blocks = n.div_ceil(chunk);
    let mut x: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut y: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut partial = vec![0f64; blocks];
    let alpha = 0.5f32;
    launch(
        "sumsq_partial_f32",
        [blocks as u32, 1, 1],
        BLOCK,
        &[I(n as i32), I(chunk as i32), F(alpha), p(&mut x), p(&mut y), p(&mut partial)],
    )
    .unwrap();
    for (b, &got) in partial.iter().enumerate() {
        let want: f64 = (b * chunk..n.min((b + 1) * chunk))
            .map(|i| {
                let v = y[i] + alpha * x[i];
                f64::from(v) * f64::from(v)
            })
            .sum();
        assert!((got - want).abs() <= 1e-12 * want.max(1.0), "partial {b}: {got} vs {want}");
    }
}

#[test]
fn queue_enqueue_writes_the_rows_advances_the_pointer_and_refuses_bad_state() {
    let (rows, dim, b) = (8usize, 4usize, 2usize);
    let mut queue = vec![f16::from_f32(-1.0); rows * dim];
    let mut queue_idx = vec![-1f32; rows];
    let mut enqueue = |ptr: f32, grid: u32, b: i32, tag: f32| {
        let mut keys: Vec<f16> =
            (0..b.max(0) as usize * dim).map(|i| f16::from_f32(tag + i as f32)).collect();
        let mut key_idx: Vec<f32> = (0..b.max(0)).map(|i| 100.0 * tag + i as f32).collect();
        let (mut p_dev, mut err) = ([ptr], [0f32]);
        let (mut sk, mut si, mut sp) =
            (vec![f16::ZERO; b.max(0) as usize * dim], vec![0f32; b.max(0) as usize], [0f32]);
        launch(
            "queue_enqueue_f16",
            [grid, 1, 1],
            [1024, 1, 1],
            &[
                I(rows as i32),
                I(dim as i32),
                I(b),
                p(&mut keys),
                p(&mut key_idx),
                p(&mut queue),
                p(&mut queue_idx),
                p(&mut p_dev),
                p(&mut err),
                p(&mut sk),
                p(&mut si),
                p(&mut sp),
            ],
        )
        .unwrap();
        (p_dev[0], err[0], queue.clone(), queue_idx.clone())
    };
    let (ptr, err, q, qi) = enqueue(2.0, 1, b as i32, 1.0);
    assert_eq!((ptr, err), (4.0, 0.0));
    for r in 0..rows {
        for j in 0..dim {
            let want = if (2..4).contains(&r) { 1.0 + ((r - 2) * dim + j) as f32 } else { -1.0 };
            assert_eq!(q[r * dim + j].to_f32(), want, "queue[{r}, {j}]");
        }
        let want = if (2..4).contains(&r) { 100.0 + (r as f32 - 2.0) } else { -1.0 };
        assert_eq!(qi[r], want, "queue_idx[{r}]");
    }
    // The last slot wraps the pointer to 0.
    let (ptr, err, q, qi) = enqueue(6.0, 1, b as i32, 2.0);
    assert_eq!((ptr, err), (0.0, 0.0));
    assert_eq!((q[6 * dim].to_f32(), qi[7]), (2.0, 201.0));
    // Refusals write nothing: a corrupted pointer (not a multiple of b, out of range,
    // negative, fractional, NaN), a batch that does not divide the rows, and a launch with
    // more than one block.
    let before = (q.clone(), qi.clone());
    for (ptr_in, grid, bb, code) in [
        (3.0, 1, 2, 2.0),
        (8.0, 1, 2, 2.0),
        (-2.0, 1, 2, 2.0),
        (2.5, 1, 2, 2.0),
        (f32::NAN, 1, 2, 2.0),
        (0.0, 1, 3, 1.0),
        (0.0, 1, 0, 1.0),
        (0.0, 2, 2, 3.0),
    ] {
        let (ptr, err, q, qi) = enqueue(ptr_in, grid, bb, 9.0);
        assert_eq!((ptr.to_bits(), err), (ptr_in.to_bits(), code), "ptr {ptr_in}, grid {grid}, b {bb}");
        assert!(q == before.0 && qi == before.1, "nothing written for error {code}");
    }
}

#[test]
fn queue_enqueue_f32_writes_fp32_keys_bit_for_bit() {
    let (rows, dim) = (4usize, 3usize);
    let mut queue = vec![0f32; rows * dim];
    let mut queue_idx = vec![-1f32; rows];
    let mut keys: Vec<f32> = (0..2 * dim).map(|i| 0.1 + i as f32 / 3.0).collect();
    let mut key_idx = vec![5f32, 6.0];
    let (mut ptr, mut err) = ([2f32], [0f32]);
    let (mut sk, mut si, mut sp) = (vec![7f32; 2 * dim], vec![7f32; 2], [7f32]);
    launch(
        "queue_enqueue_f32",
        [1, 1, 1],
        [1024, 1, 1],
        &[
            I(rows as i32),
            I(dim as i32),
            I(2),
            p(&mut keys),
            p(&mut key_idx),
            p(&mut queue),
            p(&mut queue_idx),
            p(&mut ptr),
            p(&mut err),
            p(&mut sk),
            p(&mut si),
            p(&mut sp),
        ],
    )
    .unwrap();
    assert_eq!((ptr[0], err[0]), (0.0, 0.0));
    assert_eq!(&queue[2 * dim..], &keys[..], "fp32 keys unrounded");
    assert_eq!(queue_idx, [-1.0, -1.0, 5.0, 6.0]);
    assert_eq!((sk, si, sp), (vec![0f32; 2 * dim], vec![-1f32; 2], [2f32]), "overwritten rows saved");
}

#[test]
fn float_to_half_rounds_to_nearest_even_like_the_half_crate() {
    let mut inputs: Vec<f32> = Vec::new();
    for bits in 0u16..0x7c00 {
        let lo = f16::from_bits(bits).to_f32();
        let hi = f16::from_bits(bits + 1).to_f32(); // 0x7bff + 1 is inf
        let mid = if hi.is_finite() { (lo + hi) / 2.0 } else { 65520.0 };
        for v in [lo, mid, f32::from_bits(mid.to_bits() - 1), f32::from_bits(mid.to_bits() + 1)] {
            inputs.push(v);
            inputs.push(-v);
        }
    }
    let mut rng = Rng::new(8);
    inputs.extend((0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    inputs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0x7f80_0001), 1e-9, f32::MAX]);
    let n = inputs.len();
    let mut out = vec![f16::ZERO; n];
    launch("cast_f32_to_f16", elems(n, 512), BLOCK, &[I(n as i32), p(&mut inputs), p(&mut out)]).unwrap();
    for (i, (&x, &h)) in inputs.iter().zip(&out).enumerate() {
        assert_eq!(h.to_bits(), f16::from_f32(x).to_bits(), "input {i}: {x:e} ({:#010x})", x.to_bits());
    }
    // Ties go to the even neighbour: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
    assert_eq!(out[inputs.iter().position(|&v| v == 1.0 + 2f32.powi(-11)).unwrap()].to_bits(), 0x3c00);

    let mut halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let mut floats = vec![0f32; halves.len()];
    let n = halves.len();
    launch("cast_f16_to_f32", elems(n, 512), BLOCK, &[I(n as i32), p(&mut halves), p(&mut floats)]).unwrap();
    for (h, f) in halves.iter().zip(&floats) {
        assert_eq!(f.to_bits(), h.to_f32().to_bits(), "half {:#06x}", h.to_bits());
    }
}

#[test]
fn run_refuses_a_wrong_parameter_count_and_an_oversized_block() {
    let twin = kernels::find("scale_f32").unwrap();
    // SAFETY: the call is refused before any parameter would be read.
    let refused = unsafe { kernels::run(twin, [1, 1, 1], [32, 1, 1], 0, &[]) };
    assert!(refused.unwrap_err().contains("parameters"));
    let mut x = [1f32; 4];
    assert!(launch("scale_f32", [1, 1, 1], [2048, 1, 1], &[I(4), F(2.0), p(&mut x)]).is_err());
    assert_eq!(x, [1.0; 4], "nothing ran");
    assert!(kernels::find("no_such_kernel").is_none());
}
