//! The traffic of one operation: a scoped sender thread writes segments to the next rank while
//! the calling thread reads segments from the previous one.
//!
//! Why a thread: with blocking sockets, a ring whose ranks all write before they read
//! deadlocks as soon as the socket buffers fill. Here the calling thread only ever blocks on
//! reading (or, briefly, on the sender handing back a buffer it has finished writing), and the
//! sender's queue is unbounded, so every byte in flight has a reader and no cycle of waits can
//! form. The queue holds borrowed slices of the caller's buffers, not copies: the sender hands
//! each mutable slice back once written, and the calling thread takes it back when the slice's
//! next content (a final sum) arrives, which causally happens only after the write finished.
//!
//! Small calls (SyncBN statistics, verdicts, barriers) skip the thread: the calling thread
//! writes directly, saving a thread start and two hand-offs per segment. That cannot deadlock
//! when a call's buffers hold at most [`SMALL_CALL_BYTES`] (a rank writes at most twice its
//! buffer in any operation, so 32 KiB per connection): a rank enters call k+1 only after
//! reading everything its previous rank sent in call k, so when the whole ring is in the same
//! call each connection holds at most that call's bytes, well under any socket receive buffer
//! (Linux starts at 128 KiB on loopback and LAN), and no write waits; when the next rank is
//! still in an earlier call, it is reading, which needs nothing from us.

use super::header::{Op, SegHeader, HEADER_LEN};
use crate::collective::pod::{bytes, bytes_mut, Pod};
use crate::collective::{CollectiveError, CollectiveResult};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// The two connections of one rank: it writes to the next rank and reads from the previous.
pub struct Links {
    pub next: TcpStream,
    pub prev: TcpStream,
    /// Clones of the two streams, to shut them down from another thread.
    pub next_ctl: TcpStream,
    pub prev_ctl: TcpStream,
}

impl Links {
    /// Close both connections so the neighbours see the failure at once instead of timing out.
    pub fn shutdown(&self) {
        let _ = self.next_ctl.shutdown(Shutdown::Both);
        let _ = self.prev_ctl.shutdown(Shutdown::Both);
    }
}

/// What one call is: who we are, which operation, which call number.
pub struct Ctx {
    pub rank: usize,
    pub world: usize,
    pub op: Op,
    pub seq: u32,
    pub segment_bytes: usize,
    /// Calls of at most this many bytes write from the calling thread (<= SMALL_CALL_BYTES).
    pub small_call_bytes: usize,
    pub timeout: Duration,
}

impl Ctx {
    pub fn next_rank(&self) -> usize {
        (self.rank + 1) % self.world
    }
    pub fn prev_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }
    pub fn last(&self) -> usize {
        self.world - 1
    }
    /// Elements of `T` per segment (at least 1).
    pub fn seg_elems<T>(&self) -> usize {
        (self.segment_bytes / std::mem::size_of::<T>().max(1)).max(1)
    }
    pub fn protocol(&self, detail: String) -> CollectiveError {
        CollectiveError::Protocol { rank: self.prev_rank(), detail: format!("{}: {detail}", self.op.name()) }
    }
}

/// Data handed to the sender. `Mut` and `Owned` come back once written.
pub enum Payload<'b, T> {
    Shared(&'b [T]),
    Mut(&'b mut [T]),
    Owned(Vec<T>),
}

impl<T: Pod> Payload<'_, T> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Shared(s) => bytes(s),
            Payload::Mut(s) => bytes(s),
            Payload::Owned(v) => bytes(v),
        }
    }
}

struct Job<'b, T> {
    header: [u8; HEADER_LEN],
    payload: Payload<'b, T>,
    slot: usize,
}

/// Calls whose buffers total at most this many bytes write from the calling thread (each
/// rank writes at most twice its buffer in any operation, so at most 2x this per call).
pub const SMALL_CALL_BYTES: usize = 16 << 10;

enum Out<'a, 'b, T> {
    /// A sender thread writes (large calls).
    Thread { tx: Sender<Job<'b, T>>, back: Receiver<(usize, Payload<'b, T>)> },
    /// The calling thread writes (small calls).
    Direct(&'a mut TcpStream),
}

/// The calling thread's side of one operation.
pub struct Exchange<'a, 'b, T> {
    ctx: &'a Ctx,
    out: Out<'a, 'b, T>,
    prev: &'a mut TcpStream,
    parked: Vec<(usize, &'b mut [T])>,
    pool: Vec<Vec<T>>,
}

impl<'b, T: Pod + Default> Exchange<'_, 'b, T> {
    /// Queue a segment for the next rank. `slot` names a `Mut` payload for `take_back`.
    pub fn send(
        &mut self,
        phase: u8,
        item: usize,
        payload: Payload<'b, T>,
        slot: usize,
    ) -> CollectiveResult<()> {
        let len = payload.as_bytes().len();
        let header = SegHeader {
            op: self.ctx.op as u8,
            phase,
            seq: self.ctx.seq,
            item: item as u32,
            len: u32::try_from(len)
                .map_err(|_| CollectiveError::BadArgument(format!("segment of {len} bytes")))?,
        }
        .encode();
        match &mut self.out {
            Out::Thread { tx, .. } => tx.send(Job { header, payload, slot }).map_err(|_| sender_gone()),
            Out::Direct(next) => {
                write_segment(next, &header, payload.as_bytes()).map_err(|e| write_error(e, self.ctx))?;
                self.park(slot, payload);
                Ok(())
            }
        }
    }

    /// Read the next segment's header from the previous rank and check it belongs to this call.
    pub fn recv_header(&mut self) -> CollectiveResult<SegHeader> {
        let mut b = [0u8; HEADER_LEN];
        self.prev.read_exact(&mut b).map_err(|e| read_error(e, self.ctx))?;
        let h = SegHeader::decode(&b);
        if h.op != self.ctx.op as u8 || h.seq != self.ctx.seq {
            return Err(self.ctx.protocol(format!(
                "got a segment of operation {} call {}, expected operation {} call {}: the ranks \
                 called different collectives",
                h.op, h.seq, self.ctx.op as u8, self.ctx.seq
            )));
        }
        Ok(h)
    }

    /// Check a header is the segment this rank expects next.
    pub fn expect(&self, h: &SegHeader, phase: u8, item: usize, elems: usize) -> CollectiveResult<()> {
        let len = elems * std::mem::size_of::<T>();
        if h.phase != phase || h.item != item as u32 || h.len as usize != len {
            return Err(self.ctx.protocol(format!(
                "got segment (phase {}, item {}, {} bytes), expected (phase {phase}, item {}, {len} bytes): \
                 the ranks passed different lengths",
                h.phase, h.item, h.len, item as u32
            )));
        }
        Ok(())
    }

    /// Read a segment's payload (whose header was checked for this length) into `dst`.
    pub fn recv_payload(&mut self, dst: &mut [T]) -> CollectiveResult<()> {
        self.prev.read_exact(bytes_mut(dst)).map_err(|e| read_error(e, self.ctx))
    }

    /// The `Mut` payload sent under `slot`, once the sender has written it.
    pub fn take_back(&mut self, slot: usize) -> CollectiveResult<&'b mut [T]> {
        loop {
            if let Some(i) = self.parked.iter().position(|(s, _)| *s == slot) {
                return Ok(self.parked.swap_remove(i).1);
            }
            let (s, p) = match &self.out {
                Out::Thread { back, .. } => back.recv().map_err(|_| sender_gone())?,
                Out::Direct(_) => {
                    return Err(self.ctx.protocol(format!("segment {slot} taken back before it was sent")))
                }
            };
            self.park(s, p);
        }
    }

    /// A scratch vector of `len` elements, reusing ones the sender has finished with.
    pub fn buffer(&mut self, len: usize) -> Vec<T> {
        if let Out::Thread { back, .. } = &self.out {
            let returned: Vec<_> = back.try_iter().collect();
            for (s, p) in returned {
                self.park(s, p);
            }
        }
        let mut v = self.pool.pop().unwrap_or_default();
        v.resize(len, T::default());
        v
    }

    pub fn recycle(&mut self, v: Vec<T>) {
        self.pool.push(v);
    }

    fn park(&mut self, slot: usize, p: Payload<'b, T>) {
        match p {
            Payload::Mut(m) => self.parked.push((slot, m)),
            Payload::Owned(v) => self.pool.push(v),
            Payload::Shared(_) => {}
        }
    }
}

/// Run one operation: `f` drives the reading side while a sender thread writes (or, when
/// `call_bytes` is at most `ctx.small_call_bytes`, the calling thread writes too).
///
/// On any failure both connections are shut down (so the sender and the neighbours stop at
/// once), and the root cause is returned: the sender's error if the sender failed first.
pub fn run<'b, T, R>(
    links: &mut Links,
    ctx: &Ctx,
    call_bytes: usize,
    f: impl FnOnce(&mut Exchange<'_, 'b, T>) -> CollectiveResult<R>,
) -> CollectiveResult<R>
where
    T: Pod + Default,
{
    let Links { next, prev, next_ctl, prev_ctl } = links;
    if call_bytes <= ctx.small_call_bytes {
        let mut ex = Exchange { ctx, out: Out::Direct(next), prev, parked: Vec::new(), pool: Vec::new() };
        return f(&mut ex);
    }
    let aborting = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = channel::<Job<'b, T>>();
        let (back_tx, back) = channel();
        let (prev_ctl, aborting_ref) = (&*prev_ctl, &aborting);
        let sender = s.spawn(move || send_loop(next, rx, back_tx, prev_ctl, aborting_ref, ctx));
        let out = Out::Thread { tx, back };
        let mut ex = Exchange { ctx, out, prev, parked: Vec::new(), pool: Vec::new() };
        let result = f(&mut ex);
        drop(ex);
        if result.is_err() {
            aborting.store(true, Ordering::SeqCst);
            let _ = next_ctl.shutdown(Shutdown::Both);
        }
        let sent = sender.join().unwrap_or_else(|_| {
            Err(CollectiveError::io("ring sender", io::Error::other("sender thread panicked")))
        });
        sent?;
        result
    })
}

fn send_loop<'b, T: Pod>(
    next: &mut TcpStream,
    rx: Receiver<Job<'b, T>>,
    back: Sender<(usize, Payload<'b, T>)>,
    prev_ctl: &TcpStream,
    aborting: &AtomicBool,
    ctx: &Ctx,
) -> CollectiveResult<()> {
    for job in rx {
        if let Err(e) = write_segment(next, &job.header, job.payload.as_bytes()) {
            if aborting.load(Ordering::SeqCst) {
                return Ok(()); // the reading side failed first and reports the cause
            }
            // Wake the reading side, which may be blocked on a read that will never complete.
            let _ = prev_ctl.shutdown(Shutdown::Both);
            return Err(write_error(e, ctx));
        }
        if !matches!(job.payload, Payload::Shared(_)) {
            let _ = back.send((job.slot, job.payload));
        }
    }
    Ok(())
}

/// Header and payload in as few system calls as the kernel allows.
fn write_segment(w: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = match w.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

fn sender_gone() -> CollectiveError {
    // Only seen when the sender stopped on an error, which `run` returns instead.
    CollectiveError::io("ring sender", io::Error::other("sender thread stopped"))
}

fn classify(e: io::Error, rank: usize, ctx: &Ctx, what: &str) -> CollectiveError {
    use io::ErrorKind::*;
    match e.kind() {
        WouldBlock | TimedOut => CollectiveError::Timeout { rank, after: ctx.timeout, during: ctx.op.name() },
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected => {
            CollectiveError::PeerDisconnected { rank, during: ctx.op.name() }
        }
        _ => CollectiveError::io(format!("{} {what} rank {rank}", ctx.op.name()), e),
    }
}

fn read_error(e: io::Error, ctx: &Ctx) -> CollectiveError {
    classify(e, ctx.prev_rank(), ctx, "reading from")
}

fn write_error(e: io::Error, ctx: &Ctx) -> CollectiveError {
    classify(e, ctx.next_rank(), ctx, "writing to")
}
