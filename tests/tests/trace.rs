//! `--trace FILE` on a training run: one Chrome-trace file per rank, every phase of the step in
//! it, each rank its own pid; and `--nsys`, which wraps each worker in `nsys profile`.

use moco_tests::{assert_contains, run_launcher, TempDir, TINY_RUN};

#[test]
fn training_writes_a_chrome_trace_per_rank_with_every_phase() {
    let dir = TempDir::new("trace");
    let trace = dir.path().join("trace.json");
    let out = dir.path().join("run");
    let mut args = vec!["--device", "cpu", "--workers", "2", "--steps", "3"];
    args.extend(TINY_RUN);
    args.extend(["--trace", trace.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let r = run_launcher(&args).expect_ok();
    assert_contains(&r.stderr, &["done: 3 steps"]);
    assert!(!trace.exists(), "two ranks must not share one file");
    for rank in 0..2u64 {
        let path = dir.path().join(format!("trace.rank{rank}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let events: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert!(spans.iter().all(|e| e["pid"] == rank && e["dur"].as_f64().is_some_and(|d| d >= 0.0)));
        for phase in ["data", "forward", "backward", "comm", "optimizer", "checkpoint"] {
            assert!(spans.iter().any(|e| e["name"] == phase), "rank {rank}: no {phase} span");
        }
        // Three steps: three optimiser updates on every rank.
        assert_eq!(spans.iter().filter(|e| e["name"] == "optimizer").count(), 3, "rank {rank}");
    }
}

/// `--nsys` puts every worker under `nsys profile`, one report per rank in the run's logs. A
/// stand-in `nsys` on PATH records its arguments and runs the worker it was given, as the real
/// one does (Nsight Systems is not installed on CI machines).
#[test]
fn nsys_wraps_every_worker_with_one_report_per_rank() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("nsys");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.path().join("nsys-calls.txt");
    let fake = bin.join("nsys");
    // nsys profile --trace=... --force-overwrite=true -o OUT PROGRAM ARGS...
    std::fs::write(&fake, format!("#!/bin/sh\necho \"$@\" >> '{}'\nshift 5\nexec \"$@\"\n", calls.display()))
        .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("run");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut args = vec!["--device", "cpu", "--workers", "2", "--steps", "2", "--nsys"];
    args.extend(TINY_RUN);
    args.extend(["--out", out.to_str().unwrap()]);
    let r = std::process::Command::new(moco_tests::launcher())
        .args(&args)
        .env("PATH", &path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert_contains(&err, &["done: 2 steps"]);
    let text = std::fs::read_to_string(&calls).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{text}");
    for (rank, line) in lines.iter().enumerate() {
        let report = out.join("logs").join(format!("rank{rank}"));
        assert!(line.starts_with("profile --trace=cuda,nvtx,osrt --force-overwrite=true -o "), "{line}");
        assert!(line.contains(&format!("-o {} ", report.display())), "{line}");
        assert!(line.contains("/worker ") && line.contains("--device cpu"), "{line}");
    }
}
