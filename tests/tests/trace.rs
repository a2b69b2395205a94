//! `--trace FILE` on a training run: one Chrome-trace file per rank, every phase of the step in
//! it, each rank its own pid.

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
