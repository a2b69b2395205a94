//! How runs end, through the real binaries: exit codes (0 finished, 75 stopped on a signal
//! with its checkpoint saved: see checkpoints.rs and processes.rs, 1 failed, 2 bad flags),
//! `--steps` outside the schedule, metrics.jsonl after a resume from an older step, and a
//! closed stdout pipe.

use moco_tests::{assert_contains, launcher, run_launcher, worker, TempDir, TINY_RUN};
use std::path::Path;
use std::process::{Command, Stdio};

fn run(out: &Path, extra: &[&str]) -> moco_tests::Ran {
    let mut a = vec!["--device", "cpu", "--workers", "1"];
    a.extend(TINY_RUN);
    a.extend(["--out", out.to_str().unwrap()]);
    a.extend(extra);
    run_launcher(&a)
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn steps_zero_is_refused_and_steps_past_the_schedule_say_so() {
    let dir = TempDir::new("steps");
    let out = dir.path().join("run");
    let r = run(&out, &["--steps", "0"]);
    assert_eq!(r.code, Some(2), "bad flags: {}", r.stderr);
    assert_contains(&r.stderr, &["--steps", "0 is not in 1.."]);
    let w = Command::new(worker()).args(["--device", "cpu", "--steps", "0"]).output().unwrap();
    assert_eq!(w.status.code(), Some(2));
    // 128 tiles, batch 8, one rank: 16 steps per epoch, so one epoch is 16 steps.
    let r = run(&out, &["--epochs", "1", "--steps", "50"]).expect_ok();
    assert_contains(
        &r.stderr,
        &["--steps 50 is past the end of the schedule (16 steps = 1 epochs)", "raise --epochs"],
    );
    assert!(out.join("checkpoints/step-000016/meta.json").is_file());
    // A failed run exits with 1.
    let r = run(
        &dir.path().join("other"),
        &["--steps", "2", "--resume", dir.path().join("nothing").to_str().unwrap()],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
}

#[test]
fn a_resume_from_an_older_step_cuts_the_metrics_back_to_it() {
    let dir = TempDir::new("metrics-cut");
    let out = dir.path().join("run");
    run(&out, &["--steps", "3"]).expect_ok();
    run(&out, &["--steps", "6"]).expect_ok();
    assert_eq!(metric_steps(&out), [1, 2, 3, 4, 5, 6]);
    let s3 = out.join("checkpoints/step-000003");
    run(&out, &["--resume", s3.to_str().unwrap(), "--steps", "5"]).expect_ok();
    assert_eq!(metric_steps(&out), [1, 2, 3, 4, 5], "no step appears twice");
}

#[test]
fn eval_into_a_closed_pipe_does_not_panic() {
    let dir = TempDir::new("pipe");
    let out = dir.path().join("run");
    run(&out, &["--steps", "2"]).expect_ok();
    // `launcher eval ... | head -1` with head already gone: every write to stdout fails.
    let mut child = Command::new(launcher())
        .args(["eval", "--checkpoint", out.to_str().unwrap(), "--data", "synthetic:64:64"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(done.status.code(), Some(0), "{err}");
    // The work after the print still happened: the table went into the run's summary.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("kNN"), "{summary}");
}
