//! Choosing the device through the real binaries: `--device cuda` trains or is refused with a
//! clear error (never a panic, never a silent CPU run), `--gpus N` without a driver is refused
//! with the doctor's advice, and `--vram-limit` refuses a config whose memory plan does not fit
//! before any worker starts. CI machines have no GPU; on one with a driver the CUDA branches run.

use moco_tests::{assert_contains, run_launcher, worker, TempDir, TINY_RUN};
use std::process::{Command, Stdio};

fn driver() -> bool {
    moco_kernels::cuda::probe_driver().is_ok()
}

/// Two quick steps of `tiny` on 128 small synthetic tiles.
const BASE: &[&str] = &["--steps", "2"];

/// `BASE` plus the shared smallest training config.
fn quick() -> Vec<&'static str> {
    [BASE, TINY_RUN].concat()
}

#[test]
fn a_plan_over_the_vram_limit_is_refused_before_anything_starts() {
    let d = TempDir::new("vram-limit");
    let out = d.path().join("run");
    // `optimized` on two GPUs under a budget, with any further flags.
    let optimized = |limit: &str, extra: &[&str]| {
        let mut args =
            vec!["--device", "cuda", "--gpus", "2", "--preset", "optimized", "--data", "synthetic"];
        args.extend(["--vram-limit", limit, "--out", out.to_str().unwrap()]);
        args.extend(extra);
        run_launcher(&args)
    };
    let r = optimized("4GiB", &[]);
    assert!(!r.ok());
    assert_contains(
        &r.stderr,
        &[
            "more than --vram-limit 4.00 GiB",
            "use --batch 64 or smaller",
            "memory plan per GPU: preset optimized, 2 rank(s), batch 96 per GPU",
            "DOES NOT FIT",
        ],
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(!out.exists(), "a refused run must not create its run folder");
    // Within the limit, the plan is no obstacle: what happens next depends on the driver.
    let r = optimized("8GiB", &["--steps", "1"]);
    assert!(!r.stderr.contains("more than --vram-limit"), "{}", r.stderr);
}

#[test]
fn cuda_trains_or_is_refused_clearly() {
    let d = TempDir::new("device-cuda");
    let out = d.path().join("run");
    let mut args = vec!["--device", "cuda", "--out", out.to_str().unwrap()];
    args.extend(quick());
    let r = run_launcher(&args);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    if driver() {
        // A GPU machine: it trains on CUDA, or the backend says why it cannot start.
        assert!(r.ok() || r.stderr.contains("--device cuda"), "{}", r.stderr);
    } else {
        assert!(!r.ok());
        assert_contains(&r.stderr, &["--device cuda: no CUDA driver found", "--device cpu"]);
        assert!(!r.stderr.contains("step "), "no step may run: {}", r.stderr);
    }

    // The worker alone refuses before joining a group (no rendezvous to wait for).
    let t0 = std::time::Instant::now();
    let w = Command::new(worker())
        .args(["--device", "cuda", "--out", d.path().join("w").to_str().unwrap()])
        .args(quick())
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("SLURM_PROCID")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if !driver() {
        assert!(!w.status.success());
        assert_contains(&err, &["--device cuda", "no NVIDIA driver", "use --device cpu"]);
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    }
}

#[test]
fn gpus_without_a_driver_are_refused_with_the_doctors_advice() {
    if driver() {
        return; // the GPU machine trains on its GPUs; covered by the CUDA branches above
    }
    let d = TempDir::new("gpus-cpu");
    let out = d.path().join("run");
    let mut args = vec!["--gpus", "2", "--out", out.to_str().unwrap()];
    args.extend(quick());
    let r = run_launcher(&args);
    assert!(!r.ok(), "no driver, --gpus 2: must not train CPU ranks: {}", r.stderr);
    assert_contains(
        &r.stderr,
        &[
            "--gpus 2: no NVIDIA driver could be loaded",
            "NVIDIA driver",
            "nvidia-smi",
            "--device cpu --workers N",
        ],
    );
    assert!(!r.stderr.contains("step "), "no step may run: {}", r.stderr);
    assert!(!out.exists(), "a refused run must not create its run folder");
    // Saying so trains on the CPU.
    let mut args = vec!["--device", "cpu", "--workers", "2", "--out", out.to_str().unwrap()];
    args.extend(quick());
    let r = run_launcher(&args).expect_ok();
    assert_contains(&r.stderr, &["2 worker(s) on the cpu", "done: 2 steps"]);
}

#[test]
fn a_vram_limit_without_a_unit_is_a_clear_error() {
    let w = Command::new(worker()).args(["--device", "cpu", "--vram-limit", "8"]).output().unwrap();
    assert!(!w.status.success());
    assert_contains(&String::from_utf8_lossy(&w.stderr), &["\"8\" has no unit", "8GiB"]);
}
