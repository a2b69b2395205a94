//! W ranks of a ring as threads of one process: for tests, and for trying the ring without
//! launching processes.

use super::{CollectiveError, CollectiveResult, RingCollective, RingOptions};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// Connect `world` ranks on 127.0.0.1 (one thread each during setup); returned in rank order.
pub fn local_ring(world: usize, opts: RingOptions) -> CollectiveResult<Vec<RingCollective>> {
    static RINGS: AtomicU64 = AtomicU64::new(0);
    // A token of its own per ring, so concurrent test rings can never join each other.
    let token = (u64::from(std::process::id()) << 32) ^ RINGS.fetch_add(1, Ordering::Relaxed);
    let listeners = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| CollectiveError::io("binding a loopback listener", e))?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<SocketAddr>>>()
        .map_err(|e| CollectiveError::io("listener address", e))?;
    std::thread::scope(|s| {
        let handles: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let (addrs, opts) = (&addrs, opts.clone());
                s.spawn(move || RingCollective::connect_with(r, world, l, addrs, token, opts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Err(CollectiveError::Handshake("a setup thread panicked".into())))
            })
            .collect()
    })
}

/// Run `f` on every rank of a fresh loopback ring, one thread per rank; results in rank order.
pub fn on_local_ring<R: Send>(
    world: usize,
    opts: RingOptions,
    f: impl Fn(RingCollective) -> R + Sync,
) -> CollectiveResult<Vec<R>> {
    let ranks = local_ring(world, opts)?;
    let f = &f;
    Ok(std::thread::scope(|s| {
        let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || f(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    }))
}
