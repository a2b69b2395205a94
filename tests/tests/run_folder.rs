//! The run folder through the real binaries: one owner at a time (a launcher, or rank 0 of
//! workers started by hand).

use moco_tests::{assert_contains, launcher, run_launcher, worker, TempDir, TINY_RUN};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--device", "cpu", "--workers", "1"].iter().map(|s| s.to_string()).collect();
    v.extend(TINY_RUN.iter().map(|s| s.to_string()));
    v.extend(["--out".to_string(), out.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Start `exe` in the background; its stderr lines arrive on a channel.
fn spawn(exe: &Path, args: &[String]) -> (Child, Receiver<String>) {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launcher starts");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Read lines until one contains `needle` (panics with what was seen after 60 s).
fn wait_for(rx: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(needle) {
                    return seen;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw:\n{seen}");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn a_second_launcher_on_a_busy_run_folder_is_refused_and_told_who_holds_it() {
    let dir = TempDir::new("lock");
    let out = dir.path().join("run");
    // Long enough to still be training when the second launcher starts.
    let (mut first, rx) = spawn(&launcher(), &args(&out, &["--epochs", "1000", "--checkpoint-every", "0"]));
    wait_for(&rx, " loss ");
    let err = run_launcher(&args(&out, &["--steps", "2"]).iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .expect_err();
    assert_contains(
        &err,
        &["this run folder is in use by another run", &format!("pid {} on host", first.id())],
    );
    signal(&first, "-INT");
    let status = first.wait().unwrap();
    assert!(status.code().is_some(), "the first launcher exits by itself: {status:?}");
    // Its lock went with it: the folder can be used (and resumed) again.
    let r = run_launcher(
        &args(&out, &["--epochs", "1000", "--steps", "3"]).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let r = r.expect_ok();
    assert!(!r.stderr.contains("ended without releasing"), "{}", r.stderr);
}

#[test]
fn a_hand_started_rank_0_owns_the_folder_and_a_killed_owner_does_not_block_it() {
    let dir = TempDir::new("lock-stale");
    let out = dir.path().join("run");
    // A worker started by hand (one rank, no launcher) owns its run folder as rank 0.
    let mut a: Vec<String> = TINY_RUN.iter().map(|s| s.to_string()).collect();
    a.extend(["--device", "cpu", "--epochs", "1000", "--checkpoint-every", "0", "--out"].map(String::from));
    a.push(out.display().to_string());
    let (mut worker, rx) = spawn(&worker(), &a);
    wait_for(&rx, " loss ");
    let quick = args(&out, &["--steps", "2"]);
    let quick: Vec<&str> = quick.iter().map(|s| s.as_str()).collect();
    let err = run_launcher(&quick).expect_err();
    assert_contains(&err, &["in use by another run", &format!("pid {} on host", worker.id())]);
    // Killed, it cannot release anything; the kernel drops its lock, and its note is left.
    signal(&worker, "-KILL");
    worker.wait().unwrap();
    let r = run_launcher(&quick).expect_ok();
    assert_contains(&r.stderr, &["ended without releasing it", &format!("pid {} on host", worker.id())]);
}
