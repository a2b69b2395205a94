//! The host's admission rules with real sockets and the real client: a rank asked for twice,
//! a rank out of range, a rank whose first holder has gone.

use super::{host, HostSpec};
use crate::rendezvous::client::{join, Hello};
use moco_proto::wire::{run_token, write_frame, Msg};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn hello(rank: u32) -> Hello {
    Hello { rank: Some(rank), local_rank: None, device: "cpu".into(), world_size: 3, config: "{}".into() }
}

/// Join with `rank` in a thread; the Setup's rank, or the error's text.
fn joiner(addr: SocketAddr, rank: u32) -> std::thread::JoinHandle<Result<u32, String>> {
    std::thread::spawn(move || {
        join(addr, "t", &hello(rank), Instant::now() + Duration::from_secs(20))
            .map(|m| m.setup.rank)
            .map_err(|e| e.to_string())
    })
}

#[test]
fn a_rank_taken_twice_or_out_of_range_is_refused_and_the_group_still_forms() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hosting = std::thread::spawn(move || {
        let spec = HostSpec {
            world: 3,
            run_id: "t",
            config_json: "{}",
            restart_count: 0,
            nccl_id: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let mut log = Vec::new();
        let joined = host(&listener, &spec, &mut |m| log.push(m), &mut || None);
        (joined.map(|j| j.iter().map(|j| j.rank).collect::<Vec<_>>()).map_err(|e| e.to_string()), log)
    });

    // A holder of rank 2 that says Hello and goes away: its place is free again.
    let mut gone = TcpStream::connect(addr).unwrap();
    let token = run_token("t");
    let h = Msg::Hello {
        rank: Some(2),
        local_rank: None,
        host: "gone".into(),
        pid: 1,
        device: "cpu".into(),
        world_size: 3,
        config: "{}".into(),
    };
    write_frame(&mut gone, token, &h).unwrap();
    write_frame(&mut gone, token, &Msg::RingAddress { rank: 2, addr: "127.0.0.1:9".into() }).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);

    // Two workers ask for rank 1: one gets it, the other is told it is taken.
    let (a, b) = (joiner(addr, 1), joiner(addr, 1));
    let out_of_range = joiner(addr, 7).join().unwrap();
    let e = out_of_range.expect_err("rank 7 of 3 is refused");
    assert!(
        e.contains("refused this worker") && e.contains("asked for rank 7") && e.contains("world size is 3"),
        "{e}"
    );
    let (zero, two) = (joiner(addr, 0), joiner(addr, 2));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (won, lost) = if a.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(won, Ok(1));
    let e = lost.expect_err("the second rank 1 is refused");
    assert!(e.contains("rank 1 is already taken") && e.contains("distinct --rank"), "{e}");
    assert_eq!(zero.join().unwrap(), Ok(0));
    assert_eq!(two.join().unwrap(), Ok(2), "rank 2's first holder had gone");
    let (ranks, log) = hosting.join().unwrap();
    assert_eq!(ranks, Ok(vec![0, 1, 2]));
    assert!(log.iter().any(|l| l.contains("refused worker pid") && l.contains("rank 7")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("rank 1 is already taken")), "{log:?}");
}
