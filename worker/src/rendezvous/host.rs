//! The rendezvous host: accepts one control connection per worker, hands out ranks, and sends
//! every worker its `Setup` (world size, config, ring peers). The launcher runs it; when workers
//! are started by srun or by hand, rank 0's worker runs it in a thread.
//!
//! Strangers are turned away without stopping the rendezvous: a connection that is not a
//! moco-rs worker (bad magic), one from another build (version) or from another run (token) is
//! reported through `on_reject` with a message that says what it was, and dropped.

use super::proto_err;
use crate::error::{Result, WorkerError};
use moco_proto::wire::{read_frame, write_frame, Msg, Setup};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

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

/// Accept `spec.world` workers on `listener` and send each its Setup. `poll` is called about
/// every 100 ms while waiting; returning Some(reason) aborts (e.g. a spawned worker died).
pub fn host(
    listener: &TcpListener,
    spec: &HostSpec<'_>,
    on_reject: &mut dyn FnMut(String),
    poll: &mut dyn FnMut() -> Option<String>,
) -> Result<Vec<Joined>> {
    let token = moco_proto::wire::run_token(spec.run_id);
    listener.set_nonblocking(true).map_err(|e| WorkerError::io("rendezvous listener", e))?;
    let mut pending: Vec<(Option<u32>, Joined)> = Vec::new();
    while pending.len() < spec.world {
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
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(WorkerError::io("rendezvous accept", e)),
        };
        match greet(stream, token) {
            Ok((want, joined)) => pending.push((want, joined)),
            Err(why) => on_reject(format!("ignored a connection from {peer}: {why}")),
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

/// Read a worker's Hello and RingAddress (10 s to say them).
fn greet(mut stream: TcpStream, token: u64) -> std::result::Result<(Option<u32>, Joined), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let hello = read_frame(&mut stream, token).map_err(|e| e.to_string())?;
    let Msg::Hello { rank, local_rank, host, pid, device } = hello else {
        return Err(format!("expected Hello, got {}", hello.name()));
    };
    let addr = read_frame(&mut stream, token).map_err(|e| e.to_string())?;
    let Msg::RingAddress { addr, .. } = addr else {
        return Err(format!("expected RingAddress, got {}", addr.name()));
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
    Ok((rank, joined))
}

/// Ranks asked for are kept (they must be distinct and below the world size); the others get
/// the lowest free ranks in arrival order. Returned in rank order.
fn assign_ranks(pending: Vec<(Option<u32>, Joined)>) -> Result<Vec<Joined>> {
    let world = pending.len() as u32;
    let mut by_rank: BTreeMap<u32, Joined> = BTreeMap::new();
    let mut unassigned = Vec::new();
    for (want, j) in pending {
        match want {
            Some(r) if r >= world => {
                return Err(WorkerError::Collective(format!(
                    "worker pid {} on {} asked for rank {r}, but the world size is {world}",
                    j.pid, j.host
                )))
            }
            Some(r) => {
                if let Some(other) = by_rank.get(&r) {
                    return Err(WorkerError::Collective(format!(
                        "two workers asked for rank {r}: pid {} on {} and pid {} on {}; give each a distinct --rank",
                        other.pid, other.host, j.pid, j.host
                    )));
                }
                by_rank.insert(r, j);
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
