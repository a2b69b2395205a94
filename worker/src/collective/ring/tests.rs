//! A hand-driven fake peer: failures in the middle of a segment, and garbage on the ring.

use super::handshake::{encode_hello, HELLO_LEN, REPLY_LEN};
use super::{RingCollective, RingOptions};
use crate::collective::{Collective, CollectiveError};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const TOKEN: u64 = 77;

/// Rank 0 is a real `RingCollective`; rank 1 is played by hand. Returns rank 0 and the fake's
/// two streams: the one rank 0 writes to, and the one the fake writes to rank 0 on.
fn real_and_fake(timeout: Duration) -> (RingCollective, TcpStream, TcpStream) {
    let (l0, l1) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let peers: Vec<SocketAddr> = vec![l0.local_addr().unwrap(), l1.local_addr().unwrap()];
    let opts = RingOptions { timeout, connect_timeout: Duration::from_secs(10), ..RingOptions::default() };
    let p = peers.clone();
    let real = std::thread::spawn(move || RingCollective::connect_with(0, 2, l0, &p, TOKEN, opts));
    let (mut from0, _) = l1.accept().unwrap();
    let mut hello = [0u8; HELLO_LEN];
    from0.read_exact(&mut hello).unwrap();
    assert_eq!(hello, encode_hello(TOKEN, 0, 2), "rank 0's hello");
    let mut reply = b"MOCR\0".to_vec();
    reply.extend_from_slice(&1u32.to_le_bytes());
    from0.write_all(&reply).unwrap();
    let mut to0 = TcpStream::connect(peers[0]).unwrap();
    to0.write_all(&encode_hello(TOKEN, 1, 2)).unwrap();
    let mut answer = [0u8; REPLY_LEN];
    to0.read_exact(&mut answer).unwrap();
    assert_eq!(answer[4], 0, "rank 0 accepted the fake");
    (real.join().unwrap().expect("rank 0 connects"), from0, to0)
}

#[test]
fn peer_vanishing_inside_a_segment_is_a_disconnect_naming_it() {
    let (ring, mut from0, to0) = real_and_fake(Duration::from_secs(30));
    let start = Instant::now();
    let worker = std::thread::spawn(move || {
        let mut buf = vec![1.0f32; 1 << 20]; // 4 MB: 8 segments
        ring.all_reduce_sum_f32(&mut buf)
    });
    let mut part = vec![0u8; 16 + 1000];
    from0.read_exact(&mut part).unwrap(); // a header and the start of segment 0
    drop((from0, to0));
    let err = worker.join().unwrap().expect_err("rank 1 is gone");
    assert!(matches!(err, CollectiveError::PeerDisconnected { rank: 1, .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "noticed only after {:?}", start.elapsed());
}

#[test]
fn garbage_from_the_previous_rank_is_a_protocol_error() {
    let (ring, from0, mut to0) = real_and_fake(Duration::from_secs(30));
    to0.write_all(&[0xAB; 16]).unwrap();
    let mut buf = vec![1.0f32; 10]; // small: rank 0's partial fits in the socket buffer
    let err = ring.all_reduce_sum_f32(&mut buf).expect_err("garbage header");
    assert!(matches!(err, CollectiveError::Protocol { rank: 1, .. }), "{err:?}");
    // The ring is now unusable, and says why.
    let again = ring.barrier().expect_err("broken ring");
    assert!(matches!(&again, CollectiveError::Broken(why) if why.contains("protocol")), "{again:?}");
    drop(from0);
}
