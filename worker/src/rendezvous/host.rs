//! The rendezvous host: accepts one control connection per worker, hands out ranks, and sends
//! every worker its `Setup` (world size, config, ring peers). The launcher runs it; when workers
//! are started by srun or by hand, rank 0's worker runs it in a thread.
//!
//! Connections are greeted concurrently, each in its own thread with its own deadline
//! ([`GREET_DEADLINE`] for the whole Hello, not per read), so idle or garbage connections
//! (port scanners, a stray `nc`, a half-open socket) cannot delay the workers that are really
//! joining. A greeting that fails (not a moco-rs peer, another build) is reported through
//! `on_reject` and dropped. A real worker that may not join (another run, another world size
//! or config, a rank that is out of range or already taken) is sent [`Msg::Refused`] with the
//! reason, reported through `on_reject`, and dropped, before anything about the group changes:
//! the workers already admitted keep their places and the rendezvous goes on.

use super::{config_difference, proto_err};
use crate::error::{Result, WorkerError};
use moco_proto::wire::{decode_header, decode_payload, write_frame, Msg, Setup, HEADER_LEN};
use moco_proto::ProtoError;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long one connection has to say Hello and its ring address, in total.
pub const GREET_DEADLINE: Duration = Duration::from_secs(10);
/// Connections greeted at once; more are closed at once (and reported) until some finish.
const MAX_GREETING: usize = 256;

/// A worker that joined: its control connection and what it said.
pub struct Joined {
    pub rank: u32,
    pub local_rank: u32,
    pub host: String,
    pub pid: u32,
    pub device: String,
    pub ring_addr: String,
    pub stream: TcpStream,
}

/// What the host hands to every worker besides its rank.
pub struct HostSpec<'a> {
    pub world: usize,
    pub run_id: &'a str,
    /// The resolved TrainConfig as JSON; workers check it against their own.
    pub config_json: &'a str,
    pub restart_count: u32,
    pub nccl_id: Option<Vec<u8>>,
    /// Give up when not every worker has joined by then.
    pub deadline: Instant,
}

/// What a greeted connection said.
struct Greeting {
    /// The token of its frames: ours, or another run's (answered with that token, so the
    /// stranger can read why it was refused).
    token: u64,
    rank: Option<u32>,
    world_size: u32,
    config: String,
    joined: Joined,
}

/// Accept `spec.world` workers on `listener` and send each its Setup. `poll` is called about
/// every 50 ms while waiting; returning Some(reason) aborts (e.g. a spawned worker died).
pub fn host(
    listener: &TcpListener,
    spec: &HostSpec<'_>,
    on_reject: &mut dyn FnMut(String),
    poll: &mut dyn FnMut() -> Option<String>,
) -> Result<Vec<Joined>> {
    let token = moco_proto::wire::run_token(spec.run_id);
    listener.set_nonblocking(true).map_err(|e| WorkerError::io("rendezvous listener", e))?;
    let (tx, rx) = mpsc::channel::<(SocketAddr, std::result::Result<Greeting, String>)>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut pending: Vec<(Option<u32>, Joined)> = Vec::new();
    loop {
        if pending.len() == spec.world {
            // A worker that went away while the others joined gets no rank: wait for another.
            let before = pending.len();
            pending.retain(|(_, j)| {
                let gone = connection_closed(&j.stream);
                if gone {
                    on_reject(format!("worker pid {} on {} left before the group formed", j.pid, j.host));
                }
                !gone
            });
            if pending.len() == before {
                break;
            }
        }
        if let Some(reason) = poll() {
            return Err(WorkerError::Collective(format!("rendezvous aborted: {reason}")));
        }
        if Instant::now() > spec.deadline {
            return Err(WorkerError::Collective(format!(
                "rendezvous timed out: {} of {} workers joined run {}; check that every rank was started with the same --master and --world-size",
                pending.len(),
                spec.world,
                spec.run_id
            )));
        }
        // Take every connection waiting, each greeted by its own thread.
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WorkerError::io("rendezvous accept", e)),
            };
            if in_flight.load(Ordering::SeqCst) >= MAX_GREETING {
                on_reject(format!(
                    "closed a connection from {peer}: {MAX_GREETING} connections are already being greeted"
                ));
                continue;
            }
            in_flight.fetch_add(1, Ordering::SeqCst);
            let (tx, in_flight) = (tx.clone(), in_flight.clone());
            let spawned = std::thread::Builder::new().name("rendezvous-greet".into()).spawn(move || {
                let said = greet(stream, token, Instant::now() + GREET_DEADLINE);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                // The host may have finished already: nobody to tell, and the socket closes.
                let _ = tx.send((peer, said));
            });
            if let Err(e) = spawned {
                return Err(WorkerError::io("starting a rendezvous greeting thread", e));
            }
        }
        let (peer, said) = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let mut g = match said {
            Ok(g) => g,
            Err(why) => {
                on_reject(format!("ignored a connection from {peer}: {why}"));
                continue;
            }
        };
        match admit(&g, token, spec, &mut pending) {
            Ok(()) => pending.push((g.rank, g.joined)),
            Err(reason) => {
                let who = format!(
                    "worker pid {} on {} ({}, from {peer})",
                    g.joined.pid,
                    g.joined.host,
                    g.rank.map(|r| format!("rank {r}")).unwrap_or_else(|| "no rank".into())
                );
                on_reject(format!("refused {who}: {reason}"));
                let _ = g.joined.stream.set_write_timeout(Some(Duration::from_secs(2)));
                // A worker that has gone cannot be told; it is refused all the same.
                let _ = write_frame(&mut g.joined.stream, g.token, &Msg::Refused { reason });
            }
        }
    }
    let mut joined = assign_ranks(pending)?;
    let peers: Vec<String> = joined.iter().map(|j| j.ring_addr.clone()).collect();
    let locals = local_ranks(&joined);
    for (j, local) in joined.iter_mut().zip(locals) {
        j.local_rank = local;
        let setup = Setup {
            rank: j.rank,
            world_size: spec.world as u32,
            local_rank: local,
            run_id: spec.run_id.to_string(),
            config: spec.config_json.to_string(),
            ring_peers: peers.clone(),
            nccl_id: spec.nccl_id.clone(),
            restart_count: spec.restart_count,
        };
        write_frame(&mut j.stream, token, &Msg::Setup(setup)).map_err(|e| proto_err("sending Setup", e))?;
    }
    Ok(joined)
}

/// May this worker join? Err(reason) tells it why not. A rank held by a worker whose control
/// connection has since closed (it was killed and started again) is given to the newcomer.
fn admit(
    g: &Greeting,
    token: u64,
    spec: &HostSpec<'_>,
    pending: &mut Vec<(Option<u32>, Joined)>,
) -> std::result::Result<(), String> {
    if g.token != token {
        return Err(format!(
            "it belongs to another run: this rendezvous serves run {:?}; start every worker with the same --run-id (or RUN_ID)",
            spec.run_id
        ));
    }
    if g.world_size as usize != spec.world {
        return Err(format!(
            "it was started with --world-size {}, but run {:?} has {} workers; start every worker with the same --world-size",
            g.world_size, spec.run_id, spec.world
        ));
    }
    if let Some(field) = config_difference(&g.config, spec.config_json) {
        return Err(format!(
            "it was started with a different config than the rendezvous host ({field}); start every worker with the same flags"
        ));
    }
    let Some(r) = g.rank else { return Ok(()) };
    if r as usize >= spec.world {
        return Err(format!(
            "it asked for rank {r}, but the world size is {}; ranks are 0..{}",
            spec.world, spec.world
        ));
    }
    if let Some(i) = pending.iter().position(|(want, _)| *want == Some(r)) {
        let holder = &pending[i].1;
        if !connection_closed(&holder.stream) {
            return Err(format!(
                "rank {r} is already taken by worker pid {} on {}; give each worker a distinct --rank",
                holder.pid, holder.host
            ));
        }
        tracing::warn!(
            "rank {r}: the earlier worker (pid {}) has gone; its place goes to the new one",
            holder.pid
        );
        pending.remove(i);
    }
    Ok(())
}

/// Whether the peer of an admitted (silent) control connection has closed it.
fn connection_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let closed = match stream.peek(&mut b) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

/// A reader that gives up at an absolute deadline, however slowly the bytes trickle in.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "said nothing in time"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Read one frame whose token may be another run's: Ok((token, msg)).
fn read_any_run(r: &mut impl Read, ours: u64) -> std::result::Result<(u64, Msg), ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::WireIo(e)),
        }
    }
    if got == 0 {
        return Err(ProtoError::WireClosed);
    }
    if got >= 4 && h[..4] != moco_proto::wire::MAGIC {
        return Err(ProtoError::WireBadMagic { found: h[..4].escape_ascii().to_string() });
    }
    if got < HEADER_LEN {
        return Err(ProtoError::WireTruncated { part: "header", got, expected: HEADER_LEN });
    }
    let (len, token) = match decode_header(&h, ours) {
        Ok(len) => (len, ours),
        // Another run's worker: read its Hello all the same, to say whom we refuse.
        Err(ProtoError::WireWrongRun { found, .. }) => (decode_header(&h, found)?, found),
        Err(e) => return Err(e),
    };
    let mut payload = Vec::with_capacity((len as usize).min(64 << 10));
    r.take(u64::from(len)).read_to_end(&mut payload).map_err(ProtoError::WireIo)?;
    if payload.len() < len as usize {
        return Err(ProtoError::WireTruncated {
            part: "payload",
            got: payload.len(),
            expected: len as usize,
        });
    }
    Ok((token, decode_payload(&payload)?))
}

/// Read a worker's Hello and RingAddress before `deadline`.
fn greet(stream: TcpStream, ours: u64, deadline: Instant) -> std::result::Result<Greeting, String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut r = DeadlineReader { stream: &stream, deadline };
    let (token, hello) = read_any_run(&mut r, ours).map_err(|e| e.to_string())?;
    let Msg::Hello { rank, local_rank, host, pid, device, world_size, config } = hello else {
        return Err(format!("expected Hello, got {}", hello.name()));
    };
    // Another run's worker is refused on its Hello alone (`admit` checks the token first).
    let addr = if token == ours {
        let (_, addr) = read_any_run(&mut r, token).map_err(|e| e.to_string())?;
        let Msg::RingAddress { addr, .. } = addr else {
            return Err(format!("expected RingAddress, got {}", addr.name()));
        };
        addr
    } else {
        String::new()
    };
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let joined = Joined {
        rank: 0,
        local_rank: local_rank.unwrap_or(u32::MAX),
        host,
        pid,
        device,
        ring_addr: addr,
        stream,
    };
    Ok(Greeting { token, rank, world_size, config, joined })
}

/// Ranks asked for are kept (`admit` made them distinct and below the world size); the others
/// get the lowest free ranks in arrival order. Returned in rank order.
fn assign_ranks(pending: Vec<(Option<u32>, Joined)>) -> Result<Vec<Joined>> {
    let world = pending.len() as u32;
    let mut by_rank: BTreeMap<u32, Joined> = BTreeMap::new();
    let mut unassigned = Vec::new();
    for (want, j) in pending {
        match want {
            Some(r) if r < world && !by_rank.contains_key(&r) => {
                by_rank.insert(r, j);
            }
            Some(r) => {
                return Err(WorkerError::Collective(format!(
                    "internal: rank {r} of worker pid {} on {} was admitted twice or out of range",
                    j.pid, j.host
                )))
            }
            None => unassigned.push(j),
        }
    }
    let mut free = (0..world).filter(|r| !by_rank.contains_key(r)).collect::<Vec<_>>().into_iter();
    for j in unassigned {
        let r = free.next().expect("as many free ranks as unassigned workers");
        by_rank.insert(r, j);
    }
    Ok(by_rank
        .into_iter()
        .map(|(r, mut j)| {
            j.rank = r;
            j
        })
        .collect())
}

/// Local ranks: kept where the worker knew its own (LOCAL_RANK, SLURM_LOCALID), otherwise the
/// worker's position among the workers on its host, in rank order.
fn local_ranks(joined: &[Joined]) -> Vec<u32> {
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    joined
        .iter()
        .map(|j| {
            let c = count.entry(j.host.as_str()).or_insert(0);
            let pos = *c;
            *c += 1;
            if j.local_rank == u32::MAX {
                pos
            } else {
                j.local_rank
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
