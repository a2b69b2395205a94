//! The worker's side of the rendezvous: connect to the host (retrying while it starts), say
//! Hello and where this rank's ring listener is, and receive the Setup.

use super::proto_err;
use crate::error::{Result, WorkerError};
use moco_proto::wire::{read_frame, write_frame, Msg, Setup};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What a worker tells the host about itself.
pub struct Hello {
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
    pub device: String,
    pub world_size: u32,
    /// The resolved config as JSON (the rendezvous refuses a different one).
    pub config: String,
}

/// A joined worker: its Setup, its control connection, and its bound ring listener.
pub struct Membership {
    pub setup: Setup,
    pub control: TcpStream,
    pub ring_listener: TcpListener,
    pub token: u64,
}

/// Resolve `host:port`.
pub fn resolve(master: &str) -> Result<SocketAddr> {
    master
        .to_socket_addrs()
        .map_err(|e| WorkerError::io(format!("resolving the rendezvous address {master}"), e))?
        .next()
        .ok_or_else(|| WorkerError::Collective(format!("{master} resolves to no address")))
}

/// Join the run `run_id` at `master`, retrying the connection until `deadline`.
pub fn join(master: SocketAddr, run_id: &str, hello: &Hello, deadline: Instant) -> Result<Membership> {
    let token = moco_proto::wire::run_token(run_id);
    let mut control = loop {
        match TcpStream::connect_timeout(&master, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("rendezvous {master} not reachable yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(WorkerError::io(
                    format!(
                        "connecting to the rendezvous at {master} (is rank 0 or the launcher running there?)"
                    ),
                    e,
                ))
            }
        }
    };
    let _ = control.set_nodelay(true);
    // The ring listener binds to the address this host used to reach the master, which is an
    // address the other ranks can reach too.
    let local_ip = control.local_addr().map_err(|e| WorkerError::io("control socket address", e))?.ip();
    let ring_listener = TcpListener::bind((local_ip, 0))
        .map_err(|e| WorkerError::io(format!("binding a ring listener on {local_ip}"), e))?;
    let ring_addr = ring_listener.local_addr().map_err(|e| WorkerError::io("ring listener address", e))?;
    let host = hostname();
    let msg = Msg::Hello {
        rank: hello.rank,
        local_rank: hello.local_rank,
        host,
        pid: std::process::id(),
        device: hello.device.clone(),
        world_size: hello.world_size,
        config: hello.config.clone(),
    };
    write_frame(&mut control, token, &msg).map_err(|e| proto_err("sending Hello", e))?;
    let addr = Msg::RingAddress { rank: hello.rank.unwrap_or(u32::MAX), addr: ring_addr.to_string() };
    write_frame(&mut control, token, &addr).map_err(|e| proto_err("sending the ring address", e))?;
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    control.set_read_timeout(Some(wait)).map_err(|e| WorkerError::io("control socket", e))?;
    let setup = match read_frame(&mut control, token) {
        Ok(Msg::Setup(s)) => s,
        Ok(Msg::Refused { reason }) => {
            // Not a broken group: this worker's own flags are wrong, so exit as a config error.
            return Err(WorkerError::Config(moco_proto::ProtoError::Config(format!(
                "the rendezvous at {master} refused this worker: {reason}"
            ))));
        }
        Ok(Msg::Stop { reason }) => {
            return Err(WorkerError::Collective(format!("the rendezvous refused this worker: {reason:?}")))
        }
        Ok(other) => {
            return Err(WorkerError::Collective(format!("rendezvous sent {} instead of Setup", other.name())))
        }
        Err(moco_proto::ProtoError::WireClosed) => {
            return Err(WorkerError::Collective(format!(
            "the rendezvous at {master} closed the connection before sending Setup: it belongs to another \
                 run (check --run-id / RUN_ID) or rejected this worker (see its log)"
        )))
        }
        Err(e) => return Err(proto_err("waiting for Setup from the rendezvous", e)),
    };
    control.set_read_timeout(None).map_err(|e| WorkerError::io("control socket", e))?;
    Ok(Membership { setup, control, ring_listener, token })
}

/// This machine's host name (for messages and local-rank assignment).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
