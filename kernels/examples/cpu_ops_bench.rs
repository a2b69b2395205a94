//! Throughput of the CPU backend's GEMM-backed ops on the shapes ResNet-50 + MoCo heads run.
//!
//! ```text
//! cargo run --release -p moco-kernels --example cpu_ops_bench              # tiny: width 0.125, 64 px, batch 32
//! cargo run --release -p moco-kernels --example cpu_ops_bench -- full      # width 1, 224 px, batch 2
//! cargo run --release -p moco-kernels --example cpu_ops_bench -- W PX N    # any width, input size, batch
//! cargo run --release -p moco-kernels --example cpu_ops_bench -- --memory-only [...]  # skip the GEMMs
//! ```
//! Prints, per distinct convolution shape, GFLOP/s of the forward, backward-data and
//! backward-filter (best of several runs after a warm-up), then the whole backbone's conv
//! time per direction, then the linear layers, then the memory-bound ops (BN, ReLU, max pool)
//! in GB/s, then the optimiser phase's whole-parameter passes (SGD, EMA, unscale, zero fill,
//! copy) over the backbone's conv weights. A benchmark, not a test: nothing is asserted.

use moco_kernels::cpu::batchnorm::{bn_apply, bn_bwd_apply, bn_bwd_reduce, bn_stats};
use moco_kernels::cpu::conv::{conv2d_bwd_data, conv2d_bwd_filter, conv2d_fwd};
use moco_kernels::cpu::elementwise::{copy, fill, relu_bwd};
use moco_kernels::cpu::linear::{linear_bwd_data, linear_bwd_weight, linear_fwd};
use moco_kernels::cpu::optim::{ema, sgd_step, unscale_check};
use moco_kernels::cpu::pool::{maxpool_bwd, maxpool_fwd};
use moco_kernels::{ConvShape, PoolShape};
use std::time::{Duration, Instant};

/// torchvision's channel count scaled by the width multiplier (as the model's topology).
fn scaled(c: usize, width: f32) -> usize {
    ((c as f32 * width).round() as usize).max(1)
}

/// Every convolution of ResNet-50 (v1.5: stride on the 3x3) in order, with its name.
fn resnet50_convs(width: f32, px: usize, n: usize) -> Vec<(String, ConvShape)> {
    let conv = |h: usize, c_in: usize, c_out: usize, k: usize, stride: usize| ConvShape {
        n,
        h,
        w: h,
        c_in,
        c_out,
        k,
        stride,
        pad: k / 2,
    };
    let mut out = vec![("stem 7x7/2".to_string(), conv(px, 3, scaled(64, width), 7, 2))];
    let mut h = out[0].1.out_h();
    h = (h + 2 - 3) / 2 + 1; // max pool 3x3/2 pad 1
    let mut c_in = scaled(64, width);
    for (stage, (planes, blocks, stride)) in
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)].into_iter().enumerate()
    {
        let (p, c_out) = (scaled(planes, width), scaled(planes * 4, width));
        for b in 0..blocks {
            let s = if b == 0 { stride } else { 1 };
            let name = |what: &str| format!("layer{}.{b} {what}", stage + 1);
            out.push((name("1x1"), conv(h, c_in, p, 1, 1)));
            out.push((name(&format!("3x3/{s}")), conv(h, p, p, 3, s)));
            let h2 = (h + 2 - 3) / s + 1;
            out.push((name("1x1 expand"), conv(h2, p, c_out, 1, 1)));
            if b == 0 {
                out.push((name(&format!("downsample 1x1/{s}")), conv(h, c_in, c_out, 1, s)));
            }
            h = h2;
            c_in = c_out;
        }
    }
    out
}

/// Best time of `f` over runs totalling at least ~0.3 s (at least 3, after one warm-up).
fn best_time(mut f: impl FnMut()) -> Duration {
    f();
    let (mut best, mut total, mut runs) = (Duration::MAX, Duration::ZERO, 0);
    while runs < 3 || (total < Duration::from_millis(300) && runs < 200) {
        let t = Instant::now();
        f();
        let e = t.elapsed();
        best = best.min(e);
        total += e;
        runs += 1;
    }
    best
}

fn gflops(flops: f64, t: Duration) -> f64 {
    flops / t.as_secs_f64() / 1e9
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
}

fn bench_convs(width: f32, px: usize, n: usize) {
    let layers = resnet50_convs(width, px, n);
    let mut distinct: Vec<(ConvShape, Vec<String>)> = Vec::new();
    for (name, s) in &layers {
        match distinct.iter_mut().find(|(d, _)| d == s) {
            Some((_, names)) => names.push(name.clone()),
            None => distinct.push((*s, vec![name.clone()])),
        }
    }
    println!(
        "ResNet-50 convolutions, width {width}, {px} px, batch {n}: {} layers, {} distinct shapes",
        layers.len(),
        distinct.len()
    );
    println!(
        "{:<28} {:>4} {:>9} {:>5} {:>5} {:>8} | {:>8} {:>8} {:>8}  GFLOP/s",
        "first layer (count)", "k/s", "in hxw", "c_in", "c_out", "MFLOP", "fwd", "bwd_data", "bwd_filt"
    );
    let mut totals = [Duration::ZERO; 3];
    let mut total_flops = 0.0;
    for (s, names) in &distinct {
        let flops = 2.0 * s.y_len() as f64 * (s.k * s.k * s.c_in) as f64;
        let (x, w, dy) = (data(s.x_len(), 1), data(s.w_len(), 2), data(s.y_len(), 3));
        let (mut y, mut dx, mut dw) = (vec![0.0; s.y_len()], vec![0.0; s.x_len()], vec![0.0; s.w_len()]);
        let t = [
            best_time(|| conv2d_fwd(s, &x, &w, &mut y)),
            best_time(|| conv2d_bwd_data(s, &dy, &w, &mut dx)),
            best_time(|| conv2d_bwd_filter(s, &x, &dy, &mut dw)),
        ];
        for (tot, t) in totals.iter_mut().zip(&t) {
            *tot += *t * names.len() as u32;
        }
        total_flops += flops * names.len() as f64;
        println!(
            "{:<28} {:>4} {:>9} {:>5} {:>5} {:>8.1} | {:>8.1} {:>8.1} {:>8.1}",
            format!("{} ({})", names[0], names.len()),
            format!("{}/{}", s.k, s.stride),
            format!("{}x{}", s.h, s.w),
            s.c_in,
            s.c_out,
            flops / 1e6,
            gflops(flops, t[0]),
            gflops(flops, t[1]),
            gflops(flops, t[2]),
        );
    }
    println!(
        "all {} convs, one pass: {:.1} GFLOP each way; fwd {:.1} ms ({:.1} GFLOP/s), bwd_data {:.1} ms ({:.1}), bwd_filter {:.1} ms ({:.1})",
        layers.len(),
        total_flops / 1e9,
        totals[0].as_secs_f64() * 1e3,
        gflops(total_flops, totals[0]),
        totals[1].as_secs_f64() * 1e3,
        gflops(total_flops, totals[1]),
        totals[2].as_secs_f64() * 1e3,
        gflops(total_flops, totals[2]),
    );
}

fn bench_linears(n: usize, feat: usize) {
    // MoCo v3 heads at reduced width (projector feat -> 4*feat -> 4*feat -> feat/2, predictor
    // feat/2 -> 4*feat -> feat/2) and the logits against the batch keys and a 4096-key queue.
    let (hid, dim) = (4 * feat, feat / 2);
    let shapes = [
        ("projector 1", n, feat, hid),
        ("projector 2", n, hid, hid),
        ("projector 3", n, hid, dim),
        ("predictor 1", n, dim, hid),
        ("predictor 2", n, hid, dim),
        ("logits vs batch keys", n, dim, 2 * n),
        ("logits vs queue 4096", n, dim, 4096),
    ];
    println!("\nLinear layers (batch {n}):");
    println!(
        "{:<22} {:>6} {:>6} {:>6} {:>8} | {:>8} {:>8} {:>8}  GFLOP/s",
        "layer", "n", "in", "out", "MFLOP", "fwd", "bwd_data", "bwd_wt"
    );
    for (name, n, d_in, d_out) in shapes {
        let flops = 2.0 * (n * d_in * d_out) as f64;
        let (x, w, dy) = (data(n * d_in, 4), data(d_out * d_in, 5), data(n * d_out, 6));
        let (mut y, mut dx, mut dw) = (vec![0.0; n * d_out], vec![0.0; n * d_in], vec![0.0; d_out * d_in]);
        let t = [
            best_time(|| linear_fwd(n, d_in, d_out, &x, &w, &mut y)),
            best_time(|| linear_bwd_data(n, d_in, d_out, &dy, &w, &mut dx)),
            best_time(|| linear_bwd_weight(n, d_in, d_out, &x, &dy, &mut dw)),
        ];
        println!(
            "{name:<22} {n:>6} {d_in:>6} {d_out:>6} {:>8.2} | {:>8.1} {:>8.1} {:>8.1}",
            flops / 1e6,
            gflops(flops, t[0]),
            gflops(flops, t[1]),
            gflops(flops, t[2]),
        );
    }
}

/// The memory-bound ops around the convolutions, in GB/s of activation traffic (elements
/// read + written, 4 bytes each): BN training forward and backward, ReLU backward, max pool.
fn bench_memory_bound(width: f32, px: usize, n: usize) {
    println!("\nMemory-bound ops (GB/s of f32 traffic):");
    let stem = scaled(64, width);
    let (h1, c1) = (px / 4, scaled(256, width));
    for (name, m, c) in [("stem output", n * (px / 2) * (px / 2), stem), ("layer1 output", n * h1 * h1, c1)] {
        let (x, dy) = (data(m * c, 7), data(m * c, 8));
        let (mut mean, mut var, mut s1, mut s2) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        let (gamma, beta) = (vec![1.0; c], vec![0.0; c]);
        let (mut y, mut dx) = (vec![0.0; m * c], vec![0.0; m * c]);
        let gb = |elems: usize, t: Duration| (elems * 4) as f64 / t.as_secs_f64() / 1e9;
        let t_stats = best_time(|| bn_stats(m, c, &x, &mut mean, &mut var));
        let t_apply =
            best_time(|| bn_apply(m, c, &x, &mean, &var, 1e-5, Some(&gamma), Some(&beta), true, &mut y));
        let t_relu = best_time(|| relu_bwd(&y, &dy, &mut dx));
        let t_red = best_time(|| bn_bwd_reduce(m, c, &x, &dy, &mean, &var, 1e-5, &mut s1, &mut s2));
        let t_bwd =
            best_time(|| bn_bwd_apply(m, c, m, &x, &dy, &mean, &var, 1e-5, Some(&gamma), &s1, &s2, &mut dx));
        println!(
            "BN [{m}, {c}] ({name}): stats {:.1}, apply+relu {:.1}, relu_bwd {:.1}, bwd_reduce {:.1}, bwd_apply {:.1}; total {:.2} ms",
            gb(2 * m * c, t_stats),
            gb(2 * m * c, t_apply),
            gb(3 * m * c, t_relu),
            gb(2 * m * c, t_red),
            gb(3 * m * c, t_bwd),
            (t_stats + t_apply + t_relu + t_red + t_bwd).as_secs_f64() * 1e3,
        );
    }
    let s = PoolShape { n, h: px / 2, w: px / 2, c: stem };
    let (x, dy) = (data(s.x_len(), 9), data(s.y_len(), 10));
    let (mut y, mut dx) = (vec![0.0; s.y_len()], vec![0.0; s.x_len()]);
    let t_f = best_time(|| maxpool_fwd(&s, &x, &mut y));
    let t_b = best_time(|| maxpool_bwd(&s, &x, &dy, &mut dx));
    let traffic = (s.x_len() + s.y_len()) * 4;
    println!(
        "max pool {:?}: fwd {:.1} GB/s ({:.2} ms), bwd {:.1} GB/s ({:.2} ms)",
        s,
        traffic as f64 / t_f.as_secs_f64() / 1e9,
        t_f.as_secs_f64() * 1e3,
        (traffic + s.x_len() * 4) as f64 / t_b.as_secs_f64() / 1e9,
        t_b.as_secs_f64() * 1e3,
    );
}

/// The optimiser phase's passes over every parameter, on as many elements as the backbone's
/// convolution weights (the bulk of the parameters), in GB/s of f32 traffic.
fn bench_optimizer(width: f32, px: usize, n: usize) {
    let len: usize = resnet50_convs(width, px, n).iter().map(|(_, s)| s.k * s.k * s.c_in * s.c_out).sum();
    println!("\nWhole-parameter passes over {len} elements (GB/s of f32 traffic, ms):");
    let (mut p, mut g, mut mu, mut k) = (data(len, 11), data(len, 12), data(len, 13), data(len, 14));
    let gb = |elems: usize, t: Duration| {
        format!("{:.1} GB/s ({:.2} ms)", (elems * 4) as f64 / t.as_secs_f64() / 1e9, t.as_secs_f64() * 1e3)
    };
    let t_sgd = best_time(|| sgd_step(1e-9, 0.9, 1e-4, &mut p, &g, &mut mu));
    let t_ema = best_time(|| ema(0.99, &p, &mut k));
    let t_unscale = best_time(|| {
        unscale_check(&mut g, 1.0);
    });
    let t_fill = best_time(|| fill(&mut mu, 0.0));
    let t_copy = best_time(|| copy(&p, &mut k));
    println!(
        "sgd_step {}, ema {}, unscale_check {}, fill {}, copy {}",
        gb(5 * len, t_sgd),
        gb(3 * len, t_ema),
        gb(2 * len, t_unscale),
        gb(len, t_fill),
        gb(2 * len, t_copy)
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let memory_only = args.first().is_some_and(|a| a == "--memory-only");
    if memory_only {
        args.remove(0);
    }
    let (width, px, n) = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["tiny"] => (0.125, 64, 32),
        ["full"] => (1.0, 224, 2),
        [w, px, n] => match (w.parse(), px.parse(), n.parse()) {
            (Ok(w), Ok(px), Ok(n)) => (w, px, n),
            _ => {
                eprintln!("usage: cpu_ops_bench [tiny | full | WIDTH PX BATCH]");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: cpu_ops_bench [tiny | full | WIDTH PX BATCH]");
            std::process::exit(2);
        }
    };
    println!("rayon threads: {}", rayon::current_num_threads());
    if !memory_only {
        bench_convs(width, px, n);
        bench_linears(n, scaled(2048, width));
    }
    bench_memory_bound(width, px, n);
    bench_optimizer(width, px, n);
}
