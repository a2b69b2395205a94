//! `launcher plan` for every preset: the table adds up, the model is ResNet-50 + MoCo v3 heads,
//! overrides change the plan in the right direction, and the seeds' figures are judged.

use moco_proto::presets::PRESETS;
use moco_tests::{assert_contains, plan_rows, run_launcher};

/// ImageNet's size: the paper preset's global batch of 4096 needs more than 2,000 images.
const IMAGENET: &str = "1281167";

fn plan(extra: &[&str]) -> String {
    let mut args = vec!["plan"];
    args.extend_from_slice(extra);
    run_launcher(&args).expect_ok().stdout
}

fn total(stdout: &str) -> f64 {
    plan_rows(stdout).1
}

#[test]
fn every_preset_plans_and_its_table_adds_up() {
    for p in PRESETS {
        let mut args = vec!["--preset", p.name, "--vram", "8GiB"];
        if p.name == "paper" {
            args.extend(["--dataset-size", IMAGENET]);
        }
        let out = plan(&args);
        assert_contains(&out, &["resolved config", "effective batch", "verdict:", "budget (--vram)"]);
        let (rows, total) = plan_rows(&out);
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        for c in [
            "query encoder weights, fp32 master",
            "gradients",
            "optimiser state",
            "momentum encoder, fp32",
            "saved activations",
            "transient peak",
            "cuDNN workspace",
            "CUDA context",
        ] {
            assert!(names.iter().any(|n| n.starts_with(c)), "{}: no {c:?} row in\n{out}", p.name);
        }
        let sum: f64 = rows.iter().map(|r| r.1).sum();
        // Each row is rounded to 0.1 MiB.
        assert!(
            (sum - total).abs() <= 0.05 * rows.len() as f64 + 1e-9,
            "{}: rows sum {sum}, total {total}",
            p.name
        );
        assert_contains(&out, &["allowance, not yet measured on a GPU"]);
    }
}

#[test]
fn the_model_is_resnet50_with_moco_v3_heads() {
    let out = plan(&["--preset", "low-vram"]);
    // torchvision resnet50 has 25,557,032 parameters, of which fc has 2048 x 1000 + 1000.
    let backbone = 25_557_032 - (2048 * 1000 + 1000);
    // MOCO.md: projector 2048-4096-256 with BN1d(4096) affine and an affine-free last BN;
    // predictor 256-4096-256 with BN1d(4096) affine and no last BN.
    let projector = 2048 * 4096 + 2 * 4096 + 4096 * 256;
    let predictor = 256 * 4096 + 2 * 4096 + 4096 * 256;
    assert_contains(
        &out,
        &[
            &format!("backbone {backbone} params"),
            &format!("projector {projector}"),
            &format!("predictor {predictor}"),
            &format!("momentum encoder {}", backbone + projector),
        ],
    );
}

#[test]
fn recompute_and_amp_overrides_change_the_plan() {
    let base = total(&plan(&["--preset", "optimized"]));
    let no_recompute = total(&plan(&["--preset", "optimized", "--no-recompute"]));
    let no_amp = total(&plan(&["--preset", "optimized", "--no-amp"]));
    assert!(no_recompute > base + 1024.0, "recompute off: {no_recompute} vs {base} MiB");
    assert!(no_amp > base + 1024.0, "AMP off: {no_amp} vs {base} MiB");
    let small = total(&plan(&["--preset", "optimized", "--batch", "48", "--queue-size", "76800"]));
    assert!(small < base, "batch 48: {small} vs {base}");
}

#[test]
fn budget_units_and_verdicts() {
    let gib = plan(&["--preset", "optimized", "--vram", "8GiB"]);
    let mib = plan(&["--preset", "optimized", "--vram", "8192MiB"]);
    let gb = plan(&["--preset", "optimized", "--vram", "8GB"]);
    assert_contains(&gib, &["8192.0  8.00 GiB"]);
    assert_contains(&mib, &["8192.0  8.00 GiB"]);
    // 8 GB = 8e9 bytes = 7629.4 MiB.
    assert_contains(&gb, &[&format!("{:.1}", 8e9 / 1048576.0)]);
    // A budget smaller than the fixed parts fits nothing; a large one fits.
    let small = plan(&["--preset", "optimized", "--vram", "1GiB"]);
    assert_contains(&small, &["DOES NOT FIT", "not even a batch of 1"]);
    let big = plan(&["--preset", "optimized", "--vram", "80GiB"]);
    assert_contains(&big, &["verdict: FITS", "largest per-GPU batch that fits"]);
}

#[test]
fn largest_batch_comes_with_queue_sizes_that_suit_it() {
    let out = plan(&["--preset", "optimized", "--vram", "8GiB", "--gpus", "2"]);
    let line =
        out.lines().find(|l| l.starts_with("largest per-GPU batch that fits:")).expect("largest batch line");
    let n: usize = line.split_whitespace().nth(5).and_then(|v| v.parse().ok()).expect("a number");
    // 2 views x n x 2 GPUs x 4 micro-batches: the preset writes the step's keys at once.
    let kps = 2 * n * 2 * 4;
    let q = out.lines().find(|l| l.starts_with("queue sizes for --batch")).expect("queue line");
    let below = 76800 / kps * kps;
    assert!(q.contains(&format!("= {kps}")) && q.contains(&(below + kps).to_string()), "{q}");
    if below > 0 {
        assert!(q.contains(&below.to_string()), "{q}");
    }
}

#[test]
fn the_seeds_figures_are_judged_plainly() {
    let out = plan(&["--preset", "aggressive", "--vram", "8GiB"]);
    assert_contains(&out, &["seeds ~9.2 GB", "seeds ~2.5 GB"]);
    let total_mib = total(&out);
    // The plan says either that the seeds' "won't fit" is wrong or that it agrees.
    if total_mib <= 8192.0 {
        assert_contains(&out, &["wrong that it won't fit"]);
    } else {
        assert_contains(&out, &["agrees that it does not fit"]);
    }
    let low = plan(&["--preset", "low-vram"]);
    assert_contains(&low, &["seeds ~8 GB", "measured ~4.6 GB", "batch (64 images): seeds ~3 GB"]);
}
