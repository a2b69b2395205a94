//! A failing peer is an error, never a hang or a panic: dead peers, hung peers, wrong runs,
//! strangers on the port, and ranks that disagree about a call.

use moco_worker::collective::{on_local_ring, Collective, CollectiveError, RingCollective, RingOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn opts(timeout_ms: u64) -> RingOptions {
    RingOptions {
        timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(10),
        ..RingOptions::default()
    }
}

fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let addrs = ls.iter().map(|l| l.local_addr().expect("addr")).collect();
    (ls, addrs)
}

#[test]
fn dropped_peer_is_a_disconnect_error_on_the_others_not_a_hang() {
    // Rank 2 leaves right after setup; ranks 0 and 1 are in a 32 MB all-reduce. The timeout is
    // 30 s, so an error well before it can only come from noticing the closed connection.
    let start = Instant::now();
    let out = on_local_ring(3, opts(30_000), |c| {
        if c.rank() == 2 {
            drop(c);
            return None;
        }
        let mut buf = vec![1.0f32; 8 << 20];
        let first = c.all_reduce_sum_f32(&mut buf).err();
        let later = c.all_reduce_sum_f32(&mut buf[..10]).err();
        Some((first, later))
    })
    .expect("ring connects");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    for (rank, got) in out.into_iter().take(2).enumerate() {
        let (first, later) = got.expect("ranks 0 and 1 ran");
        match first {
            Some(CollectiveError::PeerDisconnected { rank: peer, .. }) => {
                // Rank 0 reads from rank 2 (gone) and writes to rank 1, which closes its links as
                // soon as it notices rank 2 is gone: either can be the first closed socket rank 0
                // sees, but never itself.
                if rank == 0 {
                    assert!(peer == 1 || peer == 2, "rank 0 names peer {peer}");
                }
            }
            other => panic!("rank {rank}: expected a disconnect, got {other:?}"),
        }
        assert!(matches!(later, Some(CollectiveError::Broken(_))), "rank {rank}: {later:?}");
    }
}

#[test]
fn hung_peer_is_a_timeout_error() {
    let out = on_local_ring(2, opts(300), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(1500));
            return None;
        }
        let start = Instant::now();
        let mut buf = vec![1.0f32; 1000];
        Some((c.all_reduce_sum_f32(&mut buf).err(), start.elapsed()))
    })
    .expect("ring connects");
    let (err, took) = out[0].as_ref().expect("rank 0 ran");
    assert!(matches!(err, Some(CollectiveError::Timeout { rank: 1, .. })), "{err:?}");
    assert!(*took < Duration::from_millis(1400), "the timeout fired after {took:?}");
}

#[test]
fn wrong_run_token_is_refused_with_a_clear_error() {
    let (ls, addrs) = listeners(2);
    let start = Instant::now();
    let results: Vec<Result<RingCollective, CollectiveError>> = std::thread::scope(|s| {
        let hs: Vec<_> = ls
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let addrs = &addrs;
                s.spawn(move || RingCollective::connect_with(r, 2, l, addrs, 100 + r as u64, opts(1000)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    assert!(start.elapsed() < Duration::from_secs(8), "refusal waited for the setup timeout");
    let msgs: Vec<String> = results
        .into_iter()
        .map(|r| match r {
            Err(e @ CollectiveError::Handshake(_)) => e.to_string(),
            Err(e) => panic!("expected a handshake error, got {e}"),
            Ok(_) => panic!("a ring of two different runs formed"),
        })
        .collect();
    assert!(msgs.iter().any(|m| m.contains("another run")), "{msgs:?}");
}

#[test]
fn stranger_on_the_port_is_refused_and_the_ring_still_forms() {
    let (ls, addrs) = listeners(2);
    // Something else (an HTTP client, a port scanner) talks to rank 1 before rank 0 does.
    let mut stranger = TcpStream::connect(addrs[1]).expect("connect");
    stranger.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let out: Vec<Result<f32, CollectiveError>> = std::thread::scope(|s| {
        let hs: Vec<_> = ls
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let addrs = &addrs;
                s.spawn(move || {
                    let c = RingCollective::connect_with(r, 2, l, addrs, 7, opts(5000))?;
                    let mut v = [r as f32 + 1.0];
                    c.all_reduce_sum_f32(&mut v)?;
                    Ok(v[0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    for got in out {
        assert_eq!(got.expect("ring works despite the stranger"), 3.0);
    }
}

#[test]
fn ranks_disagreeing_on_length_get_errors_not_garbage() {
    let out = on_local_ring(3, opts(10_000), |c| {
        let mut buf = vec![1.0f32; if c.rank() == 1 { 300 } else { 200 }];
        c.all_reduce_sum_f32(&mut buf).err()
    })
    .expect("ring connects");
    assert!(out.iter().all(|e| e.is_some()), "{out:?}");
    assert!(out.iter().any(|e| matches!(e, Some(CollectiveError::Protocol { .. }))), "{out:?}");
}

#[test]
fn ranks_calling_different_collectives_get_a_protocol_error() {
    let out = on_local_ring(2, opts(10_000), |c| {
        let mut buf = vec![1.0f32; 64];
        if c.rank() == 0 {
            c.all_reduce_sum_f32(&mut buf).err()
        } else {
            c.broadcast_f32(&mut buf, 1).err().or_else(|| c.barrier().err())
        }
    })
    .expect("ring connects");
    assert!(out.iter().any(|e| matches!(e, Some(CollectiveError::Protocol { .. }))), "{out:?}");
}

#[test]
fn inconsistent_lengths_in_one_call_are_rejected() {
    let out = on_local_ring(2, opts(10_000), |c| {
        let mut recv = vec![0.0f32; 3];
        let gather = c.all_gather_f32(&[1.0, 2.0], &mut recv).err();
        let scatter = c.reduce_scatter_sum_f32(&[1.0; 6], &mut recv).err();
        (gather, scatter)
    })
    .expect("ring connects");
    for (g, s) in out {
        assert!(matches!(g, Some(CollectiveError::BadArgument(_))), "{g:?}");
        assert!(matches!(s, Some(CollectiveError::Broken(_))), "the ring is broken after a bad call: {s:?}");
    }
}
