//! The rendezvous under hostile conditions, through the real `worker` binary with ranks started
//! by hand: a dozen idle and garbage connections to rank 0's rendezvous port before the workers
//! join must not delay the start (each connection used to hold the rendezvous for 10 s, so a
//! dozen ran past the join timeout), and workers that may not join (another world size, another
//! run id, another config) are refused with the reason, which they print, and which rank 0
//! logs, while the legitimate group goes on and trains.

use moco_tests::{assert_contains, clear_rank_env, worker, TempDir, TINY_RUN};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A hand-started worker of a 2-step tiny CPU run (the environment contract cleared).
fn worker_cmd(extra: &[&str], out: &Path) -> Command {
    let mut c = Command::new(worker());
    c.args(["--device", "cpu"]).args(TINY_RUN);
    c.args(["--steps", "2", "--log-every", "1", "--out", out.to_str().unwrap()]).args(extra);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    clear_rank_env(&mut c);
    c
}

/// Connect to `addr` until it answers (rank 0 starts its rendezvous) or `timeout` passes.
fn connect_when_up(addr: &str, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("rank 0's rendezvous at {addr} never came up: {e}"),
        }
    }
}

#[test]
fn idle_garbage_and_wrong_workers_neither_stall_nor_break_a_hand_started_group() {
    let dir = TempDir::new("rendezvous");
    let master = format!("127.0.0.1:{}", free_port());
    let group = |rank: &str| {
        [
            "--rank",
            rank,
            "--world-size",
            "2",
            "--master",
            master.as_str(),
            "--run-id",
            "rv",
            "--join-timeout",
            "25",
        ]
        .map(String::from)
    };
    let r0 = worker_cmd(&group("0").each_ref().map(|s| s.as_str()), &dir.path().join("run")).spawn().unwrap();

    // Twelve connections that never say Hello, held open while the workers join: six idle,
    // three HTTP-ish garbage, three that stop half-way through a moco-rs frame header.
    let mut squatters = vec![connect_when_up(&master, Duration::from_secs(30))];
    for i in 1..12 {
        let mut s = TcpStream::connect(&master).unwrap();
        if (6..9).contains(&i) {
            s.write_all(b"GET / HTTP/1.0\r\n").unwrap();
        } else if i >= 9 {
            s.write_all(b"MOCO\x02").unwrap();
        }
        squatters.push(s);
    }

    // Workers that may not join: each is refused with the reason and exits with an error.
    let refused = |extra: &[&str], out: &str| {
        let o = worker_cmd(extra, &dir.path().join(out)).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (code, e) =
        refused(&["--rank", "1", "--world-size", "4", "--master", &master, "--run-id", "rv"], "w4");
    assert_eq!(code, Some(1), "{e}");
    assert_contains(&e, &["refused this worker", "--world-size 4", "has 2 workers"]);
    let (code, e) =
        refused(&["--rank", "1", "--world-size", "2", "--master", &master, "--run-id", "other"], "id");
    assert_eq!(code, Some(1), "{e}");
    assert_contains(&e, &["refused this worker", "another run", "\"rv\"", "--run-id"]);
    let (code, e) = refused(
        &["--rank", "1", "--world-size", "2", "--master", &master, "--run-id", "rv", "--temperature", "0.5"],
        "cfg",
    );
    assert_eq!(code, Some(1), "{e}");
    assert_contains(&e, &["refused this worker", "different config", "temperature"]);

    // The real rank 1: the group starts despite the squatters (still connected) and trains.
    let r1 = worker_cmd(&group("1").each_ref().map(|s| s.as_str()), &dir.path().join("run")).spawn().unwrap();
    let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
    drop(squatters);
    let e0 = String::from_utf8_lossy(&o0.stderr).to_string();
    assert!(o0.status.success(), "rank 0: {e0}");
    assert!(o1.status.success(), "rank 1: {}", String::from_utf8_lossy(&o1.stderr));
    assert_contains(&e0, &["step      2/2"]);
    // Rank 0 logged every refusal, naming the reason.
    assert_contains(
        &e0,
        &["rendezvous: refused worker pid", "--world-size 4", "another run", "different config"],
    );
}
