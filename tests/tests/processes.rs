//! The worker group with real processes: the launcher with 2 CPU workers, a worker killed with
//! SIGKILL, a hung (stopped) worker, SIGINT, a busy port, strangers on the rendezvous port, and ranks started by hand
//! and through SLURM's environment.

use moco_tests::{
    assert_contains, clear_rank_env, launcher, run_launcher, spawn_stderr_lines, wait_for_line, worker,
    TempDir, TINY_RUN,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Small, quick runs: 128 synthetic tiles, batch 8, a queue that fits 2 workers.
const BASE: &[&str] = &["--device", "cpu"];

/// `BASE` plus the shared smallest training config.
fn quick() -> Vec<&'static str> {
    [BASE, TINY_RUN].concat()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn pids(seen: &[String]) -> Vec<u32> {
    seen.iter()
        .filter_map(|l| l.strip_prefix("rank ").and_then(|r| r.split("pid ").nth(1)))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn two_cpu_workers_train_and_write_metrics() {
    let dir = TempDir::new("two");
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "4", "--out", out.to_str().unwrap()]);
    let r = run_launcher(&args).expect_ok();
    assert_contains(&r.stderr, &["2 worker(s)", "rank 0: pid", "rank 1: pid", "done: 4 steps"]);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["step"], 4);
    assert!(lines.iter().all(|m| m["loss"].as_f64().is_some_and(f64::is_finite)));
    assert!(out.join("logs/rank-0.log").exists() || out.join("logs").is_dir());
}

#[test]
fn killed_worker_stops_the_group_and_is_named() {
    let dir = TempDir::new("kill");
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "100000", "--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&launcher(), &args);
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&rx, "step 1/", Duration::from_secs(60), &mut seen),
        "no progress:\n{}",
        seen.join("\n")
    );
    let p = pids(&seen);
    assert_eq!(p.len(), 2, "{seen:?}");
    kill(p[1], "-9");
    let t0 = Instant::now();
    let status = wait_exit(&mut child, Duration::from_secs(20)).expect("the launcher stops within seconds");
    assert!(!status.success());
    assert!(t0.elapsed() < Duration::from_secs(20));
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    let text = seen.join("\n");
    assert_contains(
        &text,
        &[&format!("rank 1 (pid {})", p[1]), "killed by signal 9", "all workers were stopped"],
    );
    // No orphans: the surviving rank is gone too.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!alive(p[0]), "rank 0 (pid {}) outlived the group", p[0]);
}

#[test]
fn a_hung_worker_is_found_by_its_missing_heartbeat_and_the_group_stopped() {
    let dir = TempDir::new("hung");
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "100000", "--heartbeat-timeout", "5"]);
    args.extend(["--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&launcher(), &args);
    let mut seen = Vec::new();
    assert!(wait_for_line(&rx, "step 1/", Duration::from_secs(60), &mut seen), "{}", seen.join("\n"));
    let p = pids(&seen);
    assert_eq!(p.len(), 2, "{seen:?}");
    // SIGSTOP: the process lives on but neither trains nor beats, as a worker stuck in a driver
    // call would; its socket stays open, so only the heartbeat can tell.
    kill(p[1], "-STOP");
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("the launcher notices the hang");
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    let text = seen.join("\n");
    assert!(!status.success(), "{text}");
    assert_contains(&text, &[&format!("rank 1 (pid {})", p[1]), "sent no heartbeat for 5 s"]);
    std::thread::sleep(Duration::from_millis(500));
    for pid in p {
        // A stopped process still dies of SIGKILL; anything left would be an orphan.
        assert!(!alive(pid), "worker {pid} outlived the group\n{text}");
        kill(pid, "-CONT");
    }
}

#[test]
fn sigint_finishes_the_step_and_exits_cleanly() {
    let dir = TempDir::new("sigint");
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "100000", "--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&launcher(), &args);
    let mut seen = Vec::new();
    assert!(wait_for_line(&rx, "step 1/", Duration::from_secs(60), &mut seen), "{}", seen.join("\n"));
    kill(child.id(), "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("the launcher stops after SIGINT");
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    // 75: stopped on a signal with the checkpoint saved.
    assert_eq!(status.code(), Some(75), "{}", seen.join("\n"));
    assert_contains(&seen.join("\n"), &["stopped on request"]);
    for p in pids(&seen) {
        assert!(!alive(p), "worker {p} still running");
    }
}

#[test]
fn busy_port_is_a_clear_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = TempDir::new("busy");
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "1", "--master-port", &port, "--out", out.to_str().unwrap()]);
    let e = run_launcher(&args).expect_err();
    assert_contains(&e, &["port is in use", "--master-port"]);
}

#[test]
fn strangers_on_the_rendezvous_port_are_turned_away() {
    let dir = TempDir::new("garbage");
    let port = free_port();
    let port_s = port.to_string();
    let out = dir.path().join("run");
    let mut args = quick();
    args.extend(["--workers", "2", "--steps", "2", "--master-port", &port_s, "--out", out.to_str().unwrap()]);
    let (mut child, rx) = spawn_stderr_lines(&launcher(), &args);
    // Garbage, then a well-formed frame from another run, as soon as the port is open.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while sent < 2 && Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            if sent == 0 {
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\nhello there, this is not a frame");
            } else {
                let hello = moco_proto::wire::Msg::Hello {
                    rank: None,
                    local_rank: None,
                    host: "x".into(),
                    pid: 1,
                    device: "cpu".into(),
                    world_size: 2,
                    config: "{}".into(),
                };
                let frame =
                    moco_proto::wire::encode_frame(moco_proto::wire::run_token("another-run"), &hello)
                        .unwrap();
                let _ = s.write_all(&frame);
            }
            let mut sink = Vec::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
            let _ = s.read_to_end(&mut sink);
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = wait_exit(&mut child, Duration::from_secs(120)).expect("the run finishes");
    let seen: Vec<String> = rx.try_iter().collect();
    let text = seen.join("\n");
    assert!(status.success(), "{text}");
    assert_contains(&text, &["not a moco-rs peer", "another run", "done: 2 steps"]);
}

fn worker_cmd(extra: &[&str], out: &std::path::Path) -> Command {
    let mut c = Command::new(worker());
    c.args(quick()).args(["--steps", "3", "--log-every", "1", "--out", out.to_str().unwrap()]).args(extra);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    clear_rank_env(&mut c);
    c
}

fn last_loss(stderr: &str) -> String {
    stderr
        .lines()
        .rfind(|l| l.starts_with("step"))
        .and_then(|l| l.split("loss ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn ranks_started_by_hand_and_by_slurm_env_train_together() {
    let dir = TempDir::new("manual");
    let master = format!("127.0.0.1:{}", free_port());
    let r0 = worker_cmd(
        &["--rank", "0", "--world-size", "2", "--master", &master, "--run-id", "by-hand"],
        &dir.path().join("a"),
    )
    .spawn()
    .unwrap();
    let r1 = worker_cmd(
        &["--rank", "1", "--world-size", "2", "--master", &master, "--run-id", "by-hand"],
        &dir.path().join("a"),
    )
    .spawn()
    .unwrap();
    let o0 = r0.wait_with_output().unwrap();
    let o1 = r1.wait_with_output().unwrap();
    let e0 = String::from_utf8_lossy(&o0.stderr).to_string();
    assert!(o0.status.success(), "{e0}");
    assert!(o1.status.success(), "{}", String::from_utf8_lossy(&o1.stderr));
    assert_contains(&e0, &["step      3/3"]);
    let by_hand = last_loss(&e0);

    // The same run through SLURM's variables: ranks from SLURM_PROCID, the master from
    // SLURM_NODELIST and MASTER_PORT.
    let port = free_port().to_string();
    let slurm = |id: &str, out: &str| {
        let mut c = worker_cmd(&["--run-id", "by-hand"], &dir.path().join(out));
        c.env("SLURM_PROCID", id)
            .env("SLURM_NTASKS", "2")
            .env("SLURM_LOCALID", id)
            .env("SLURM_JOB_ID", "77")
            .env("SLURM_NODELIST", "localhost")
            .env("MASTER_PORT", &port);
        c.spawn().unwrap()
    };
    // Every rank shares one run folder (the worker checks this before training).
    let (s0, s1) = (slurm("0", "c"), slurm("1", "c"));
    let (o0, o1) = (s0.wait_with_output().unwrap(), s1.wait_with_output().unwrap());
    let e0 = String::from_utf8_lossy(&o0.stderr).to_string();
    assert!(o0.status.success(), "{e0}");
    assert!(o1.status.success(), "{}", String::from_utf8_lossy(&o1.stderr));
    // Same config, same data order, same seeds: the same losses.
    assert_eq!(last_loss(&e0), by_hand);
}

#[test]
fn a_worker_of_another_run_or_config_is_refused() {
    let dir = TempDir::new("mismatch");
    let master = format!("127.0.0.1:{}", free_port());
    let mut r0 = worker_cmd(
        &["--rank", "0", "--world-size", "2", "--master", &master, "--run-id", "one", "--join-timeout", "8"],
        &dir.path().join("a"),
    )
    .spawn()
    .unwrap();
    // Another run id: turned away by the host.
    let other = worker_cmd(
        &["--rank", "1", "--world-size", "2", "--master", &master, "--run-id", "two", "--join-timeout", "5"],
        &dir.path().join("b"),
    )
    .output()
    .unwrap();
    assert!(!other.status.success());
    let e = String::from_utf8_lossy(&other.stderr);
    assert_contains(&e, &["rendezvous"]);
    // A different config: named field.
    let diff = worker_cmd(
        &["--rank", "1", "--world-size", "2", "--master", &master, "--run-id", "one", "--temperature", "0.5"],
        &dir.path().join("c"),
    )
    .output()
    .unwrap();
    assert!(!diff.status.success());
    assert_contains(&String::from_utf8_lossy(&diff.stderr), &["different config", "temperature"]);
    let _ = r0.kill();
    let _ = r0.wait();
}
