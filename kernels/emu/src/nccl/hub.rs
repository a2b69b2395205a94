//! The hub: the rendezvous and the combining point of one communicator, in the process that
//! made its id.
//!
//! Threads: an acceptor (until every rank joined), one reader per connection, and the hub
//! itself, which takes events from all of them on one channel. Readers decouple the hub from
//! the sockets: a rank's large contribution is read while the hub waits for the others, and a
//! closed connection is reported at once whatever the hub is waiting for, so a dead peer fails
//! the others immediately rather than when its turn comes.
//!
//! After a failure the hub sends every rank a `Fail` frame and shuts down its writing side
//! only; readers go on draining until the rank closes, so no unread bytes make the kernel
//! reset the connection (which could discard the `Fail` frame before the rank reads it).

use super::errors::{code_to_byte, Fail, Result};
use super::id::{random_token, HubId, TOKEN_BYTES};
use super::reduce;
use super::wire::{read_frame, write_frame, Call, Frame, Hello, Kind};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Event {
    Hello { conn: usize, hello: Hello, out: TcpStream },
    Frame { conn: usize, frame: Frame },
    Closed { conn: usize, why: io::Error },
}

/// Binds a listener on 127.0.0.1, starts the hub's threads and returns the id to hand out.
pub fn start() -> Result<HubId> {
    let token = random_token()?;
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Fail::system(format!("binding the rendezvous listener on 127.0.0.1: {e}")))?;
    let addr = match listener.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        other => return Err(Fail::system(format!("the listener's address: {other:?}"))),
    };
    let timeout = super::timeout();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|_| ())
            .map_err(|e| Fail::system(format!("starting the hub's {name} thread: {e}")))
    };
    let acceptor_stop = stop.clone();
    spawn("nccl-emu-accept", Box::new(move || accept(listener, tx, acceptor_stop, timeout)))?;
    let hub = Hub::new(token, timeout, stop, addr);
    spawn("nccl-emu-hub", Box::new(move || hub.run(rx)))?;
    Ok(HubId { addr, token })
}

fn accept(listener: TcpListener, tx: Sender<Event>, stop: Arc<AtomicBool>, timeout: Duration) {
    let mut conn = 0;
    for s in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(s) = s else { continue };
        conn += 1;
        let tx = tx.clone();
        let id = conn;
        let _ = std::thread::Builder::new()
            .name(format!("nccl-emu-read-{id}"))
            .spawn(move || read_conn(id, s, tx, timeout));
    }
}

/// Reads one connection: its greeting, then frames until it closes.
fn read_conn(conn: usize, mut s: TcpStream, tx: Sender<Event>, timeout: Duration) {
    let _ = s.set_nodelay(true);
    // A connection that never says hello (a port scanner, say) must not hold a thread forever.
    let _ = s.set_read_timeout(Some(timeout));
    let hello = match read_frame(&mut s) {
        Ok(Frame { kind: Kind::Hello, body }) => Hello::decode(&body),
        _ => None,
    };
    let (Some(hello), Ok(out)) = (hello, s.try_clone()) else { return };
    // A rank may sit between collectives for as long as it likes.
    let _ = s.set_read_timeout(None);
    if tx.send(Event::Hello { conn, hello, out }).is_err() {
        return;
    }
    loop {
        match read_frame(&mut s) {
            // Once the hub has stopped, keep draining (see the module comment).
            Ok(frame) => drop(tx.send(Event::Frame { conn, frame })),
            Err(why) => {
                let _ = tx.send(Event::Closed { conn, why });
                return;
            }
        }
    }
}

struct Peer {
    out: TcpStream,
    /// In the hub's own process.
    local: bool,
    /// Said `Bye` (destroyed or finalized its communicator).
    left: bool,
}

struct Hub {
    token: [u8; TOKEN_BYTES],
    timeout: Duration,
    stop: Arc<AtomicBool>,
    addr: SocketAddrV4,
    nranks: Option<(u32, u32)>, // (nranks, the rank that set it)
    peers: Vec<Option<Peer>>,
    conn_rank: HashMap<usize, usize>,
    ready: bool,
    joined_at: Option<Instant>,
    /// This collective's contributions, by rank, and when the first arrived.
    pending: Vec<Option<(Call, Vec<u8>)>>,
    first_at: Option<Instant>,
    /// Collectives completed.
    done: u64,
}

enum Flow {
    Go,
    Stop,
}

impl Hub {
    fn new(token: [u8; TOKEN_BYTES], timeout: Duration, stop: Arc<AtomicBool>, addr: SocketAddrV4) -> Self {
        Hub {
            token,
            timeout,
            stop,
            addr,
            nranks: None,
            peers: Vec::new(),
            conn_rank: HashMap::new(),
            ready: false,
            joined_at: None,
            pending: Vec::new(),
            first_at: None,
            done: 0,
        }
    }

    fn run(mut self, rx: Receiver<Event>) {
        loop {
            let start = if self.ready { self.first_at } else { self.joined_at };
            let ev = match start {
                Some(t) => {
                    match rx.recv_timeout((t + self.timeout).saturating_duration_since(Instant::now())) {
                        Ok(ev) => ev,
                        Err(RecvTimeoutError::Timeout) => {
                            let f = self.timeout_failure();
                            self.fail_all(&f);
                            break;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => break,
                },
            };
            let flow = match ev {
                Event::Hello { conn, hello, out } => self.on_hello(conn, hello, out),
                Event::Frame { conn, frame } => match self.conn_rank.get(&conn) {
                    Some(&r) => self.on_frame(r, frame),
                    None => Flow::Go,
                },
                Event::Closed { conn, why } => match self.conn_rank.get(&conn) {
                    Some(&r) => self.on_closed(r, why),
                    None => Flow::Go,
                },
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        self.stop_accepting();
    }

    fn stop_accepting(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            // Wakes the acceptor from accept(); it sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr.into(), Duration::from_secs(1));
        }
    }

    fn nranks(&self) -> usize {
        self.nranks.map(|(n, _)| n as usize).unwrap_or(0)
    }

    fn missing(&self, have: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.nranks()).filter(|&r| !have(r)).collect()
    }

    fn timeout_failure(&self) -> Fail {
        let secs = self.timeout.as_secs_f64();
        if !self.ready {
            let missing = self.missing(|r| self.peers[r].is_some());
            Fail::system(format!(
                "ranks {missing:?} of {} did not join the communicator within {secs} s of the first \
                 rank (MOCO_EMU_NCCL_TIMEOUT)",
                self.nranks()
            ))
        } else {
            let missing = self.missing(|r| self.pending[r].is_some());
            let (first, call) = self.first_pending().expect("a deadline means a pending collective");
            Fail::system(format!(
                "ranks {missing:?} did not call {} (collective #{}) within {secs} s of rank {first} \
                 (MOCO_EMU_NCCL_TIMEOUT)",
                call.describe(),
                self.done + 1
            ))
        }
    }

    fn first_pending(&self) -> Option<(usize, Call)> {
        self.pending.iter().enumerate().find_map(|(r, p)| p.as_ref().map(|(c, _)| (r, *c)))
    }

    /// Tells every rank still connected why the communicator failed. Ranks of other processes
    /// first: a rank of this process may exit as soon as it is told, taking the hub with it.
    fn fail_all(&mut self, f: &Fail) {
        let mut peers: Vec<&mut Peer> = self.peers.iter_mut().flatten().filter(|p| !p.left).collect();
        peers.sort_by_key(|p| p.local);
        for p in peers {
            send_fail(&mut p.out, f);
        }
    }

    fn on_hello(&mut self, conn: usize, hello: Hello, mut out: TcpStream) -> Flow {
        let _ = out.set_write_timeout(Some(self.timeout));
        if hello.token != self.token {
            send_fail(
                &mut out,
                &Fail::invalid_argument("the id's token does not match this hub's (a stale id?)"),
            );
            return Flow::Go;
        }
        if self.ready {
            send_fail(&mut out, &Fail::invalid_usage("every rank of this communicator has joined already"));
            return Flow::Go;
        }
        let (rank, n) = (hello.rank, hello.nranks);
        let problem = match self.nranks {
            _ if n == 0 || rank >= n => Some(format!("rank {rank} of {n} ranks")),
            Some((want, by)) if want != n => {
                Some(format!("rank {rank} joined with nranks {n}, but rank {by} joined with nranks {want}"))
            }
            Some(_) if self.peers[rank as usize].is_some() => {
                Some(format!("rank {rank} joined twice (two processes claim the same rank)"))
            }
            _ => None,
        };
        if let Some(msg) = problem {
            let f = Fail::invalid_usage(format!("ncclCommInitRank: {msg}"));
            send_fail(&mut out, &f);
            self.fail_all(&f);
            return Flow::Stop;
        }
        if self.nranks.is_none() {
            self.nranks = Some((n, rank));
            self.peers = (0..n).map(|_| None).collect();
            self.pending = vec![None; n as usize];
        }
        self.peers[rank as usize] = Some(Peer { out, local: hello.pid == std::process::id(), left: false });
        self.conn_rank.insert(conn, rank as usize);
        self.joined_at.get_or_insert_with(Instant::now);
        if self.peers.iter().all(Option::is_some) {
            self.ready = true;
            self.stop_accepting();
            for p in self.peers.iter_mut().flatten() {
                // A write error means that rank is gone; its reader reports the close.
                let _ = write_frame(&mut p.out, Kind::Ready, &[]);
            }
        }
        Flow::Go
    }

    fn on_frame(&mut self, r: usize, frame: Frame) -> Flow {
        match frame.kind {
            Kind::Request => self.on_request(r, frame.body),
            Kind::Bye => {
                if let Some(p) = self.peers[r].as_mut() {
                    p.left = true;
                }
                if let Some((_, call)) = self.first_pending() {
                    let f = Fail::remote(format!(
                        "rank {r} destroyed its communicator while other ranks were in {} (collective #{})",
                        call.describe(),
                        self.done + 1
                    ));
                    self.fail_all(&f);
                    return Flow::Stop;
                }
                if self.peers.iter().flatten().all(|p| p.left) {
                    return Flow::Stop;
                }
                Flow::Go
            }
            Kind::Fail => {
                let code = frame.body.first().copied().unwrap_or(2);
                let msg = String::from_utf8_lossy(frame.body.get(1..).unwrap_or(&[]));
                let f = Fail::new(super::errors::code_from_byte(code), format!("rank {r} failed: {msg}"));
                self.fail_all(&f);
                Flow::Stop
            }
            other => {
                self.fail_all(&Fail::new(
                    cudarc::nccl::sys::ncclResult_t::ncclInternalError,
                    format!("rank {r} sent an unexpected {other:?} frame"),
                ));
                Flow::Stop
            }
        }
    }

    fn on_request(&mut self, r: usize, body: Vec<u8>) -> Flow {
        let n = self.nranks();
        let Some(call) = Call::decode(&body) else {
            self.fail_all(&Fail::new(
                cudarc::nccl::sys::ncclResult_t::ncclInternalError,
                format!("rank {r} sent a malformed request"),
            ));
            return Flow::Stop;
        };
        let k = self.done + 1;
        let problem = if let Some(left) = (0..n).find(|&p| self.peers[p].as_ref().is_some_and(|p| p.left)) {
            Some(Fail::remote(format!(
                "rank {left} has destroyed its communicator, so {} (collective #{k}) of rank {r} cannot complete",
                call.describe()
            )))
        } else if self.pending[r].is_some() {
            Some(Fail::invalid_usage(format!("rank {r} started collective #{k} twice (concurrent calls?)")))
        } else if let Some((first, want)) = self.first_pending().filter(|(_, c)| *c != call) {
            Some(Fail::invalid_usage(format!(
                "ranks disagree on collective #{k}: rank {first} called {}, rank {r} called {}",
                want.describe(),
                call.describe()
            )))
        } else if body.len() - Call::BYTES != call.send_bytes(r as u32, n as u32) {
            Some(Fail::new(
                cudarc::nccl::sys::ncclResult_t::ncclInternalError,
                format!("rank {r} sent {} bytes for {}", body.len() - Call::BYTES, call.describe()),
            ))
        } else {
            None
        };
        if let Some(f) = problem {
            self.fail_all(&f);
            return Flow::Stop;
        }
        let mut data = body;
        data.drain(..Call::BYTES);
        self.pending[r] = Some((call, data));
        self.first_at.get_or_insert_with(Instant::now);
        if self.pending.iter().all(Option::is_some) {
            let parts = self.pending.iter_mut().map(|p| p.take().expect("all present").1).collect();
            let replies = reduce::compute(&call, parts);
            // Ranks of other processes first: a rank of this process may finish and exit as
            // soon as it has its reply, taking the hub with it before it wrote the others'.
            let mut order: Vec<(&mut Peer, &std::ops::Range<usize>)> = self
                .peers
                .iter_mut()
                .zip(&replies.ranges)
                .filter_map(|(p, r)| Some((p.as_mut()?, r)))
                .collect();
            order.sort_by_key(|(p, _)| p.local);
            for (p, range) in order {
                // A write error means that rank is gone; its reader reports the close.
                let _ = write_frame(&mut p.out, Kind::Reply, &[&replies.data[range.clone()]]);
            }
            self.first_at = None;
            self.done += 1;
        }
        Flow::Go
    }

    fn on_closed(&mut self, r: usize, why: io::Error) -> Flow {
        if self.peers[r].as_ref().is_some_and(|p| p.left) {
            return Flow::Go;
        }
        let when = if !self.ready {
            "while the communicator was forming".to_string()
        } else if let Some((_, call)) = self.first_pending() {
            format!("during {} (collective #{})", call.op.name(), self.done + 1)
        } else {
            format!("between collectives (after {} completed)", self.done)
        };
        let how = match why.kind() {
            io::ErrorKind::UnexpectedEof => String::new(),
            _ => format!("; {why}"),
        };
        self.peers[r] = None;
        self.fail_all(&Fail::remote(format!(
            "rank {r} closed its connection {when} (its process exited or aborted the communicator{how})"
        )));
        Flow::Stop
    }
}

/// Sends a failure notice and shuts the writing side (see the module comment).
fn send_fail(out: &mut TcpStream, f: &Fail) {
    let _ = write_frame(out, Kind::Fail, &[&[code_to_byte(f.code)], f.msg.as_bytes()]);
    let _ = out.shutdown(Shutdown::Write);
}
