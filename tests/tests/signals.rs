//! A second signal stops at once, through the real binaries: a worker that already got one
//! SIGTERM (and is finishing its step) exits at the second with 128 + the signal and says why,
//! and the run resumes from its newest checkpoint, which is whole; a launcher given a second
//! SIGINT kills its workers at once, exits with 130 and says so (it used to blame "out of
//! memory" on the SIGKILL it sent itself).

use moco_tests::{assert_contains, launcher, spawn_stderr_lines, wait_for_line, worker, TempDir};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Slower steps than TINY_RUN (64 px, batch 16) so that a step outlasts the gap between the
/// two signals: 128 tiles, 8 steps per epoch on one rank, a checkpoint every epoch.
const RUN: &[&str] = &[
    "--device",
    "cpu",
    "--preset",
    "tiny",
    "--data",
    "synthetic:128:64",
    "--batch",
    "16",
    "--queue-size",
    "64",
    "--image-size",
    "64",
    "--epochs",
    "100",
    "--checkpoint-every",
    "1",
];

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The step of `RUN/checkpoints/latest`.
fn latest_step(out: &Path) -> u64 {
    let name = std::fs::read_to_string(out.join("checkpoints/latest")).expect("a checkpoint was saved");
    name.trim().trim_start_matches("step-").parse().unwrap_or_else(|_| panic!("latest names {name:?}"))
}

#[test]
fn a_second_sigterm_stops_a_worker_at_once_and_its_checkpoint_resumes() {
    let dir = TempDir::new("second-signal");
    let out = dir.path().join("run");
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend(["--steps", "100000", "--log-every", "1", "--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&worker(), &args);
    let mut seen = Vec::new();
    // Past the first checkpoint (step 8), into the next epoch.
    assert!(wait_for_line(&rx, "step      9/", Duration::from_secs(120), &mut seen), "{}", seen.join("\n"));
    kill(child.id(), "-TERM");
    std::thread::sleep(Duration::from_millis(100));
    kill(child.id(), "-TERM");
    let status =
        wait_exit(&mut child, Duration::from_secs(20)).expect("the worker stops at the second SIGTERM");
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(128 + 15), "{text}");
    assert_contains(&text, &["stop requested", "second signal: stopping at once", "newest checkpoint"]);
    // The newest checkpoint is whole: the same command resumes from it and finishes.
    let step = latest_step(&out);
    let more = (step + 2).to_string();
    let mut again: Vec<&str> = RUN.to_vec();
    again.extend(["--steps", &more, "--out", out.to_str().unwrap()]);
    let o = Command::new(worker()).args(&again).stdin(Stdio::null()).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert_contains(
        &e,
        &[&format!("resuming from {}", out.join(format!("checkpoints/step-{step:06}")).display())],
    );
}

#[test]
fn a_second_sigint_to_the_launcher_stops_the_workers_at_once_without_blaming_memory() {
    let dir = TempDir::new("second-sigint");
    let out = dir.path().join("run");
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend(["--workers", "2", "--steps", "100000", "--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&launcher(), &args);
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&rx, "checkpoint saved:", Duration::from_secs(120), &mut seen),
        "{}",
        seen.join("\n")
    );
    let pids: Vec<u32> = seen
        .iter()
        .filter(|l| l.starts_with("rank ") && l.contains(": pid "))
        .filter_map(|l| l.split(": pid ").nth(1).and_then(|p| p.split_whitespace().next()?.parse().ok()))
        .collect();
    assert_eq!(pids.len(), 2, "{seen:?}");
    // To the launcher alone, as `kill -INT` from a job script would.
    kill(child.id(), "-INT");
    std::thread::sleep(Duration::from_millis(150));
    kill(child.id(), "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(20)).expect("the launcher stops at once");
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert_contains(&text, &["second interrupt", "stopped at once", "without saving", "resume"]);
    assert!(!text.contains("out of memory"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    for p in pids {
        assert!(!alive(p), "worker {p} outlived the launcher\n{text}");
    }
}
