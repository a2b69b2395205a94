//! Setting up the ring: connect to the next rank, accept the previous one, and check on both
//! sides that the peer is a moco-rs ring of the same version, run and size, at the right rank.
//!
//! Hello (connecting side, 26 bytes): b"MOCR", version u16, run token u64, sender's rank u32,
//! world u32, the number 0x01020304 in the sender's byte order (the ring carries native-endian
//! numbers, so mixed-endian hosts are refused). Reply (accepting side, 9 bytes): b"MOCR",
//! status u8, replier's rank u32. Both sides run at once in one polling loop, so a rejection
//! surfaces immediately and two misconfigured ranks cannot wait on each other.
//!
//! A connection with a wrong token, rank or garbage is answered (when it is a ring peer),
//! closed, remembered for the error message, and the rank keeps waiting for the right peer
//! until the deadline: a stale process from an earlier run must not break the new one.

use super::exchange::Links;
use super::RingOptions;
use crate::collective::{CollectiveError, CollectiveResult};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"MOCR";
const VERSION: u16 = 1;
const ENDIAN_MARK: u32 = 0x0102_0304;
pub(super) const HELLO_LEN: usize = 26;
pub(super) const REPLY_LEN: usize = 9;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Status {
    Ok = 0,
    WrongRun = 1,
    WrongRank = 2,
    WrongWorld = 3,
    WrongVersion = 4,
    WrongEndian = 5,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        [
            Status::Ok,
            Status::WrongRun,
            Status::WrongRank,
            Status::WrongWorld,
            Status::WrongVersion,
            Status::WrongEndian,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }

    fn explain(self) -> &'static str {
        match self {
            Status::Ok => "accepted",
            Status::WrongRun => {
                "it belongs to another run (run token differs): a stale process or a wrong address"
            }
            Status::WrongRank => {
                "it expected a different previous rank: the ranks were given inconsistent peer lists"
            }
            Status::WrongWorld => "it was started with a different world size",
            Status::WrongVersion => {
                "its ring protocol version differs: rebuild every rank from the same source"
            }
            Status::WrongEndian => "its byte order differs from ours; mixed-endian rings are not supported",
        }
    }
}

struct Hello {
    version: u16,
    token: u64,
    rank: u32,
    world: u32,
    endian: u32,
}

pub(super) fn encode_hello(token: u64, rank: usize, world: usize) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6..14].copy_from_slice(&token.to_le_bytes());
    b[14..18].copy_from_slice(&(rank as u32).to_le_bytes());
    b[18..22].copy_from_slice(&(world as u32).to_le_bytes());
    b[22..26].copy_from_slice(&ENDIAN_MARK.to_ne_bytes());
    b
}

fn decode_hello(b: &[u8; HELLO_LEN]) -> Option<Hello> {
    if &b[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut token = [0u8; 8];
    token.copy_from_slice(&b[6..14]);
    Some(Hello {
        version: u16::from_le_bytes([b[4], b[5]]),
        token: u64::from_le_bytes(token),
        rank: u32_at(14),
        world: u32_at(18),
        endian: u32::from_ne_bytes([b[22], b[23], b[24], b[25]]),
    })
}

/// Connect rank `rank` of `world` into the ring (validated by the caller: world >= 2).
pub fn connect(
    rank: usize,
    world: usize,
    listener: TcpListener,
    peers: &[SocketAddr],
    token: u64,
    opts: &RingOptions,
) -> CollectiveResult<Links> {
    let deadline = Instant::now() + opts.connect_timeout;
    let (next_rank, prev_rank) = ((rank + 1) % world, (rank + world - 1) % world);
    let next_addr = peers[next_rank];
    let setup_io = |what: &str, e: io::Error| CollectiveError::io(format!("ring setup: {what}"), e);

    let mut next = dial(next_addr, next_rank, deadline)?;
    next.set_write_timeout(Some(opts.connect_timeout)).map_err(|e| setup_io("socket option", e))?;
    next.write_all(&encode_hello(token, rank, world))
        .map_err(|e| hs(format!("sending hello to rank {next_rank} at {next_addr}: {e}")))?;

    listener.set_nonblocking(true).map_err(|e| setup_io("listener", e))?;
    next.set_nonblocking(true).map_err(|e| setup_io("socket option", e))?;
    let mut prev: Option<TcpStream> = None;
    let mut reply = [0u8; REPLY_LEN];
    let mut reply_got = 0;
    let mut rejected: Vec<String> = Vec::new();
    loop {
        if prev.is_none() {
            match listener.accept() {
                Ok((s, from)) => match admit(s, from, rank, world, prev_rank, token, deadline) {
                    Ok(s) => prev = Some(s),
                    Err(why) => {
                        tracing::warn!("ring setup (rank {rank}): rejected {why}");
                        rejected.push(why);
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(setup_io("accepting the previous rank", e)),
            }
        }
        if reply_got < REPLY_LEN {
            match next.read(&mut reply[reply_got..]) {
                Ok(0) => {
                    return Err(hs(format!(
                        "rank {next_rank} at {next_addr} closed the connection during setup \
                         (it failed, or rejected us; see its log)"
                    )))
                }
                Ok(n) => reply_got += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    return Err(hs(format!("reading the reply of rank {next_rank} at {next_addr}: {e}")))
                }
            }
            if reply_got == REPLY_LEN {
                check_reply(&reply, next_rank, next_addr)?;
            }
        }
        if prev.is_some() && reply_got == REPLY_LEN {
            break;
        }
        if Instant::now() >= deadline {
            let waiting = match (prev.is_some(), reply_got == REPLY_LEN) {
                (false, false) => format!("rank {prev_rank} to connect and rank {next_rank} to reply"),
                (false, true) => format!("rank {prev_rank} to connect"),
                _ => format!("rank {next_rank} at {next_addr} to reply"),
            };
            let extra = if rejected.is_empty() {
                String::new()
            } else {
                format!("; rejected: {}", rejected.join("; "))
            };
            return Err(hs(format!("rank {rank}: waited {:?} for {waiting}{extra}", opts.connect_timeout)));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let prev = prev.ok_or_else(|| hs("internal: no previous rank".into()))?;
    finish(next, prev, opts).map_err(|e| setup_io("socket options", e))
}

fn hs(msg: String) -> CollectiveError {
    CollectiveError::Handshake(msg)
}

/// Connect, retrying while the peer is not listening yet.
fn dial(addr: SocketAddr, rank: usize, deadline: Instant) -> CollectiveResult<TcpStream> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, left.clamp(Duration::from_millis(1), Duration::from_secs(1)))
        {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("ring setup: rank {rank} at {addr} not reachable yet: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(hs(format!("cannot reach rank {rank} at {addr}: {e}"))),
        }
    }
}

/// Read an incoming hello and answer it. `Err` carries why the connection was refused.
fn admit(
    mut s: TcpStream,
    from: SocketAddr,
    rank: usize,
    world: usize,
    prev_rank: usize,
    token: u64,
    deadline: Instant,
) -> Result<TcpStream, String> {
    // A peer sends its hello right after connecting; a silent connection gets 2 s at most.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(10), Duration::from_secs(2));
    let mut b = [0u8; HELLO_LEN];
    let read = s
        .set_nonblocking(false)
        .and_then(|_| s.set_read_timeout(Some(wait)))
        .and_then(|_| s.read_exact(&mut b));
    let hello = match read {
        Ok(()) => decode_hello(&b),
        Err(e) => {
            return Err(format!("a connection from {from} sent no ring hello ({e}): not a moco-rs ring peer"))
        }
    };
    let Some(h) = hello else {
        return Err(format!("a connection from {from} is not a moco-rs ring peer (bad magic)"));
    };
    let status = if h.version != VERSION {
        Status::WrongVersion
    } else if h.endian != ENDIAN_MARK {
        Status::WrongEndian
    } else if h.token != token {
        Status::WrongRun
    } else if h.world as usize != world {
        Status::WrongWorld
    } else if h.rank as usize != prev_rank {
        Status::WrongRank
    } else {
        Status::Ok
    };
    let mut r = [0u8; REPLY_LEN];
    r[..4].copy_from_slice(MAGIC);
    r[4] = status as u8;
    r[5..9].copy_from_slice(&(rank as u32).to_le_bytes());
    let _ = s.set_write_timeout(Some(wait));
    let sent = s.write_all(&r);
    match (status, sent) {
        (Status::Ok, Ok(())) => Ok(s),
        (Status::Ok, Err(e)) => Err(format!("rank {prev_rank} at {from} vanished during setup: {e}")),
        (st, _) => Err(format!(
            "a connection from {from} claiming rank {} of {} (version {}, run token {:#x}, ours {token:#x}): {}",
            h.rank,
            h.world,
            h.version,
            h.token,
            describe_mismatch(st)
        )),
    }
}

fn describe_mismatch(st: Status) -> &'static str {
    match st {
        Status::WrongRun => "it belongs to another run (run token differs)",
        Status::WrongRank => "it is not our previous rank",
        Status::WrongWorld => "its world size differs",
        Status::WrongVersion => "its ring protocol version differs",
        Status::WrongEndian => "its byte order differs",
        Status::Ok => "accepted",
    }
}

fn check_reply(r: &[u8; REPLY_LEN], next_rank: usize, addr: SocketAddr) -> CollectiveResult<()> {
    if &r[..4] != MAGIC {
        return Err(hs(format!("{addr} (expected rank {next_rank}) is not a moco-rs ring peer")));
    }
    let replier = u32::from_le_bytes([r[5], r[6], r[7], r[8]]) as usize;
    match Status::from_u8(r[4]) {
        Some(Status::Ok) if replier == next_rank => Ok(()),
        Some(Status::Ok) => Err(hs(format!(
            "{addr} answered as rank {replier}, expected rank {next_rank}: the peer address list is inconsistent"
        ))),
        Some(st) => Err(hs(format!("rank {next_rank} at {addr} refused us: {}", st.explain()))),
        None => Err(hs(format!("rank {next_rank} at {addr} sent an unknown setup status {}", r[4]))),
    }
}

fn finish(next: TcpStream, prev: TcpStream, opts: &RingOptions) -> io::Result<Links> {
    for s in [&next, &prev] {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
    }
    next.set_write_timeout(Some(opts.timeout))?;
    prev.set_read_timeout(Some(opts.timeout))?;
    Ok(Links { next_ctl: next.try_clone()?, prev_ctl: prev.try_clone()?, next, prev })
}
