//! `launcher bench`: the figures it prints, the JSON line scripts/compare.sh joins with the
//! PyTorch reference's, the trace and results files it writes, and a clear refusal of
//! `--device cuda` where there is no CUDA.

use moco_tests::{assert_contains, run_launcher, TempDir};

/// A bench small enough for CI: ResNet-50 at 1/8 width on 64 px tiles, 8 images per step.
const SMALL: &[&str] = &[
    "bench",
    "--device",
    "cpu",
    "--preset",
    "tiny",
    "--batch",
    "8",
    "--queue-size",
    "64",
    "--data",
    "synthetic:64:64",
    "--threads",
    "1",
    "--steps",
    "3",
    "--warmup",
    "1",
    "--loader-batches",
    "2",
];

#[test]
fn prints_the_figures_and_a_json_line_with_the_reference_keys() {
    let dir = TempDir::new("bench");
    let trace = dir.path().join("trace.json");
    let results = dir.path().join("results/bench.md");
    let mut args = SMALL.to_vec();
    let (t, r) = (trace.to_str().unwrap(), results.to_str().unwrap());
    args.extend(["--feed", "pool", "--trace", t, "--results", r]);
    let out = run_launcher(&args).expect_ok();
    assert_contains(&out.stdout, &["median step", "images/s", "peak memory", "phase share", "loader"]);

    let last = out.stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).expect("the last stdout line is JSON");
    // The keys of scripts/pytorch_reference.py's line, with this run's values.
    assert_eq!(v["bench"], "moco_rs");
    assert_eq!((v["batch"].as_u64(), v["steps"].as_u64(), v["warmup"].as_u64()), (Some(8), Some(3), Some(1)));
    assert_eq!(
        (v["image_size"].as_u64(), v["queue"].as_u64(), v["dim"].as_u64()),
        (Some(64), Some(64), Some(64))
    );
    assert_eq!(v["threads"].as_u64(), Some(1));
    assert_eq!(v["feed"], "pool");
    let step = v["median_step_s"].as_f64().unwrap();
    let ips = v["images_per_s"].as_f64().unwrap();
    assert!(step > 0.0 && (ips - 8.0 / step).abs() < 0.01 * ips, "images/s {ips} vs 8 / {step}");
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > v["baseline_rss_bytes"].as_u64().unwrap());
    assert_eq!(v["peak_memory_kind"], "process_peak_rss");
    assert!(v["loader_pairs_per_s"].as_f64().unwrap() > 0.0);
    let shares = v["phase_share"].as_object().unwrap();
    for p in ["data", "forward", "backward", "comm", "optimizer", "other"] {
        assert!(shares.contains_key(p), "no {p} in {shares:?}");
    }
    let sum: f64 = shares.values().map(|s| s.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-3, "shares add up to {sum}");
    assert!(
        shares["forward"].as_f64().unwrap() > 0.1 && shares["backward"].as_f64().unwrap() > 0.1,
        "{shares:?}"
    );

    // The trace has the warm-up and timed steps' phases, on rank 0.
    let tr: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let fwd = tr.as_array().unwrap().iter().filter(|e| e["ph"] == "X" && e["name"] == "forward").count();
    assert_eq!(fwd, 4, "one forward span per step (1 warm-up + 3 timed)");
    assert!(tr.as_array().unwrap().iter().all(|e| e["pid"] == 0));
    // The results file holds the command and the same JSON line.
    let md = std::fs::read_to_string(&results).unwrap();
    assert_contains(&md, &["## launcher bench", "--trace", last]);
}

#[test]
fn the_live_loader_feed_reports_data_wait() {
    let mut args = SMALL.to_vec();
    args.extend(["--feed", "loader"]);
    let out = run_launcher(&args).expect_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["feed"], "loader");
    assert!(v["phase_share"]["data"].as_f64().is_some());
}

#[test]
fn cuda_runs_or_is_refused_clearly_never_faked() {
    let mut args = SMALL.to_vec();
    args[2] = "cuda";
    let out = run_launcher(&args);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    if out.ok() {
        // A machine with a working CUDA backend: the figures are the GPU's.
        let v: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            (v["device"].as_str(), v["peak_memory_kind"].as_str()),
            (Some("cuda"), Some("arena_peak_live"))
        );
    } else {
        assert_contains(&out.stderr, &["--device cuda", "cannot start", "Nothing was measured"]);
        assert!(!out.stdout.contains("median_step_s"), "no figures may be printed: {}", out.stdout);
    }
}
