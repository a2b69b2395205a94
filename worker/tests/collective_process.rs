//! The ring between real processes: this test binary re-executes itself (with an environment
//! variable naming the role) to play rank 1.

use moco_worker::collective::{reference, Collective, CollectiveError, RingCollective, RingOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE: &str = "MOCO_RING_TEST_ROLE";
const TOKEN: u64 = 0x5eed;

fn values(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + rank * 104_729) % 100_003) as f32 * 10f32.powi((i % 13) as i32 - 6))
        .collect()
}

fn opts() -> RingOptions {
    RingOptions {
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
        ..RingOptions::default()
    }
}

/// Rank 1's side: print our address, read both addresses, join the ring.
fn child_connect() -> RingCollective {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("RING_ADDR {}", l.local_addr().expect("addr"));
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("peers on stdin");
    let peers: Vec<SocketAddr> = line.split_whitespace().map(|a| a.parse().expect("address")).collect();
    RingCollective::connect_with(1, 2, l, &peers, TOKEN, opts()).expect("rank 1 connects")
}

/// Start rank 1 as a child running `test` in `role`; returns it, its stdin and rank 0's ring.
fn start_pair(test: &str, role: &str) -> (Child, ChildStdin, RingCollective) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start rank 1");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test <name> ... " without a newline before the test runs, so the
            // address can follow it on the same line.
            if let Some(a) = line.split("RING_ADDR ").nth(1) {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let child_addr = rx.recv_timeout(Duration::from_secs(60)).expect("rank 1 prints its address");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{} {child_addr}", l.local_addr().expect("addr")).expect("send peers");
    let peers = [l.local_addr().expect("addr"), child_addr.parse().expect("address")];
    let ring = RingCollective::connect_with(0, 2, l, &peers, TOKEN, opts()).expect("rank 0 connects");
    (child, stdin, ring)
}

#[test]
fn ring_all_reduce_world2_real_processes() {
    const LENS: [usize; 4] = [1, 999, 262_145, 3_000_017]; // up to 12 MB, 23 segments
    let check = |ring: &RingCollective| {
        for len in LENS {
            let mut buf = values(ring.rank(), len);
            ring.all_reduce_sum_f32(&mut buf).expect("all_reduce");
            let want = reference::all_reduce_sum_f32(&[values(0, len), values(1, len)]);
            assert!(buf.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "len {len}");
            assert_eq!(buf.len(), want.len());
        }
    };
    if std::env::var(ROLE).as_deref() == Ok("all_reduce") {
        return check(&child_connect());
    }
    let (mut child, _stdin, ring) = start_pair("ring_all_reduce_world2_real_processes", "all_reduce");
    check(&ring);
    assert!(child.wait().expect("rank 1 exits").success(), "rank 1 failed its own check");
}

#[test]
fn killed_peer_process_is_a_disconnect_error_not_a_hang() {
    let mut buf = vec![1.0f32; 4 << 20]; // 16 MB per call
    if std::env::var(ROLE).as_deref() == Ok("loop") {
        let ring = child_connect();
        while ring.all_reduce_sum_f32(&mut buf).is_ok() {}
        return;
    }
    let (mut child, _stdin, ring) =
        start_pair("killed_peer_process_is_a_disconnect_error_not_a_hang", "loop");
    ring.all_reduce_sum_f32(&mut buf).expect("first call, both alive");
    let killed_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let k = killed_at.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        child.kill().expect("kill rank 1");
        *k.lock().expect("lock") = Some(Instant::now());
        child.wait().expect("reap rank 1")
    });
    let err = loop {
        if let Err(e) = ring.all_reduce_sum_f32(&mut buf) {
            break e;
        }
    };
    let status = killer.join().expect("killer");
    assert!(!status.success());
    let since_kill = killed_at.lock().expect("lock").map(|t| t.elapsed());
    assert!(matches!(err, CollectiveError::PeerDisconnected { rank: 1, .. }), "{err:?}");
    // The ring timeout is 30 s: a disconnect seen sooner came from the closed socket.
    assert!(since_kill.is_some_and(|d| d < Duration::from_secs(20)), "{since_kill:?}");
}
