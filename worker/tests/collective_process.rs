//! The ring between real processes: this test binary re-executes itself (with an environment
//! variable naming the role) to play ranks 1..world.

use moco_worker::collective::{reference, Collective, CollectiveError, RingCollective, RingOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE: &str = "MOCO_RING_TEST_ROLE";
const RANK: &str = "MOCO_RING_TEST_RANK";
const WORLD: &str = "MOCO_RING_TEST_WORLD";
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

/// A child rank's side: print our address, read every rank's address, join the ring. The
/// rank and world size come from the environment the parent set.
fn child_connect() -> RingCollective {
    let num = |v: &str| std::env::var(v).ok().and_then(|s| s.parse::<usize>().ok()).expect(v);
    let (rank, world) = (num(RANK), num(WORLD));
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("RING_ADDR {}", l.local_addr().expect("addr"));
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("peers on stdin");
    let peers: Vec<SocketAddr> = line.split_whitespace().map(|a| a.parse().expect("address")).collect();
    RingCollective::connect_with(rank, world, l, &peers, TOKEN, opts()).expect("child rank connects")
}

/// Start ranks 1..world as children running `test` in `role`; returns them with their stdins
/// (kept open until the test ends) and rank 0's ring.
fn start_group(test: &str, role: &str, world: usize) -> (Vec<(Child, ChildStdin)>, RingCollective) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for rank in 1..world {
        let mut child = Command::new(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(RANK, rank.to_string())
            .env(WORLD, world.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a child rank");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints "test <name> ... " without a newline before the test runs, so
                // the address can follow it on the same line.
                if let Some(a) = line.split("RING_ADDR ").nth(1) {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("child rank prints its address");
        addrs.push(addr.parse::<SocketAddr>().expect("address"));
        let stdin = child.stdin.take().expect("stdin");
        children.push((child, stdin));
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut peers = vec![l.local_addr().expect("addr")];
    peers.extend(addrs);
    let line = peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
    for (_, stdin) in children.iter_mut() {
        writeln!(stdin, "{line}").expect("send peers");
    }
    let ring = RingCollective::connect_with(0, world, l, &peers, TOKEN, opts()).expect("rank 0 connects");
    (children, ring)
}

/// Every rank checks all-reduce, all-gather, reduce-scatter and broadcast at odd lengths against
/// the single-process reference, bit for bit.
fn check_collectives(ring: &RingCollective) {
    // 1 and a prime below any world size; odd lengths around and across pipeline segments; up to
    // 12 MB.
    const LENS: [usize; 5] = [1, 3, 999, 262_145, 3_000_017];
    let world = ring.world();
    for len in LENS {
        let mut buf = values(ring.rank(), len);
        ring.all_reduce_sum_f32(&mut buf).expect("all_reduce");
        let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, len)).collect();
        let want = reference::all_reduce_sum_f32(&inputs);
        assert_eq!(buf.len(), want.len());
        assert!(
            buf.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "world {world} len {len} rank {}",
            ring.rank()
        );
    }
    let me = ring.rank();
    for len in [1, 3, 4_097] {
        let mut gathered = vec![f32::NAN; len * world];
        ring.all_gather_f32(&values(me, len), &mut gathered).expect("all_gather");
        let want = reference::all_gather(&(0..world).map(|r| values(r, len)).collect::<Vec<_>>());
        assert_eq!(bits(&gathered), bits(&want), "all_gather world {world} len {len} rank {me}");

        let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, len * world)).collect();
        let mut chunk = vec![f32::NAN; len];
        ring.reduce_scatter_sum_f32(&inputs[me], &mut chunk).expect("reduce_scatter");
        let want = reference::reduce_scatter_sum_f32(&inputs, me, len);
        assert_eq!(bits(&chunk), bits(&want), "reduce_scatter world {world} len {len} rank {me}");

        let root = world - 1;
        let mut buf = values(me, len);
        ring.broadcast_f32(&mut buf, root).expect("broadcast");
        assert_eq!(bits(&buf), bits(&values(root, len)), "broadcast world {world} len {len} rank {me}");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn collectives_in_processes(test: &str, world: usize) {
    if std::env::var(ROLE).as_deref() == Ok("all_reduce") {
        return check_collectives(&child_connect());
    }
    let (children, ring) = start_group(test, "all_reduce", world);
    check_collectives(&ring);
    for (rank, (mut child, stdin)) in children.into_iter().enumerate() {
        drop(stdin);
        assert!(child.wait().expect("child exits").success(), "rank {} failed its own check", rank + 1);
    }
}

#[test]
fn ring_collectives_world2_real_processes() {
    collectives_in_processes("ring_collectives_world2_real_processes", 2);
}

#[test]
fn ring_collectives_world3_real_processes() {
    collectives_in_processes("ring_collectives_world3_real_processes", 3);
}

#[test]
fn ring_collectives_world4_real_processes() {
    collectives_in_processes("ring_collectives_world4_real_processes", 4);
}

#[test]
fn killed_peer_process_is_a_disconnect_error_not_a_hang() {
    let mut buf = vec![1.0f32; 4 << 20]; // 16 MB per call
    if std::env::var(ROLE).as_deref() == Ok("loop") {
        let ring = child_connect();
        while ring.all_reduce_sum_f32(&mut buf).is_ok() {}
        return;
    }
    let (mut children, ring) = start_group("killed_peer_process_is_a_disconnect_error_not_a_hang", "loop", 2);
    let (mut child, _stdin) = children.pop().expect("rank 1");
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
