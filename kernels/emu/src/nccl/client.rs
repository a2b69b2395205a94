//! One rank's communicator: its connection to the hub, the exchange of one collective, and
//! what breaks it (a failure, `ncclCommAbort`).
//!
//! Handles given to the caller are registry keys, not pointers: `ncclCommAbort` from another
//! thread can then drop the handle while a call in flight still holds its `Arc`, and an
//! unknown or destroyed handle is refused instead of dereferenced.

use super::errors::{code_from_byte, code_to_byte, Fail, Result};
use super::id::HubId;
use super::wire::{read_frame, write_frame, Call, Frame, Hello, Kind};
use cudarc::nccl::sys::ncclResult_t;
use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub struct Comm {
    pub rank: u32,
    pub nranks: u32,
    pub device: i32,
    /// Held for the whole of one exchange: calls on one communicator are serialised, as NCCL
    /// requires of its callers anyway.
    conn: Mutex<TcpStream>,
    /// A second handle on the same socket, so `ncclCommAbort` can shut it down while a call
    /// holds `conn`.
    shut: TcpStream,
    failed: Mutex<Option<Fail>>,
    aborted: AtomicBool,
    /// Said `Bye` (ncclCommFinalize): no more collectives.
    left: AtomicBool,
    calls: AtomicU64,
    wait: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Comm {
    /// Connects to the hub of `id` as `rank` of `nranks` and waits until every rank joined.
    pub fn join(id: HubId, rank: u32, nranks: u32, device: i32) -> Result<Comm> {
        let hub_timeout = super::timeout();
        let wait = hub_timeout + super::CLIENT_MARGIN;
        let mut s = TcpStream::connect_timeout(&id.addr.into(), Duration::from_secs(10)).map_err(|e| {
            Fail::system(format!(
                "cannot reach the communicator's hub at {} ({e}): the process that called ncclGetUniqueId \
                 has exited, or the id is from an earlier run",
                id.addr
            ))
        })?;
        let setup = |s: &TcpStream| -> io::Result<TcpStream> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(wait))?;
            s.set_write_timeout(Some(wait))?;
            s.try_clone()
        };
        let shut =
            setup(&s).map_err(|e| Fail::system(format!("setting up the connection to the hub: {e}")))?;
        let hello = Hello { token: id.token, rank, nranks, pid: std::process::id() };
        let answer = write_frame(&mut s, Kind::Hello, &[&hello.encode()]).and_then(|_| read_frame(&mut s));
        match answer {
            Ok(Frame { kind: Kind::Ready, .. }) => {}
            Ok(Frame { kind: Kind::Fail, body }) => return Err(fail_from_body(&body)),
            Ok(f) => return Err(Fail::system(format!("the hub answered the greeting with {:?}", f.kind))),
            Err(e) if is_timeout(&e) => {
                return Err(Fail::system(format!(
                    "not every one of the {nranks} ranks joined within {} s (MOCO_EMU_NCCL_TIMEOUT)",
                    wait.as_secs_f64()
                )))
            }
            Err(e) => {
                return Err(Fail::remote(format!(
                    "the hub closed the connection while the communicator was forming ({e}): the process \
                     that called ncclGetUniqueId exited?"
                )))
            }
        }
        Ok(Comm {
            rank,
            nranks,
            device,
            conn: Mutex::new(s),
            shut,
            failed: Mutex::new(None),
            aborted: AtomicBool::new(false),
            left: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            wait,
        })
    }

    /// Why the communicator cannot be used, if it cannot.
    pub fn unusable(&self) -> Option<Fail> {
        if self.aborted.load(Ordering::SeqCst) {
            return Some(Fail::invalid_usage("the communicator was aborted (ncclCommAbort)"));
        }
        if self.left.load(Ordering::SeqCst) {
            return Some(Fail::invalid_usage("the communicator was finalized (ncclCommFinalize)"));
        }
        lock(&self.failed)
            .as_ref()
            .map(|f| Fail::new(f.code, format!("the communicator failed earlier: {}", f.msg)))
    }

    /// Sends this rank's part of `call` and returns its result (`call.recv_bytes` bytes).
    pub fn exchange(&self, call: &Call, send: &[u8]) -> Result<Vec<u8>> {
        if let Some(f) = self.unusable() {
            return Err(f);
        }
        let k = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let what = format!("{} (this rank's collective #{k})", call.op.name());
        let mut conn = lock(&self.conn);
        let answer = match write_frame(&mut *conn, Kind::Request, &[&call.encode(), send]) {
            Ok(()) => read_frame(&mut *conn),
            Err(e) => {
                // The hub may have said why before the connection broke: read that if it did.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let told = read_frame(&mut *conn);
                let _ = conn.set_read_timeout(Some(self.wait));
                told.and_then(|f| if f.kind == Kind::Fail { Ok(f) } else { Err(e) })
            }
        };
        let f = match answer {
            Ok(Frame { kind: Kind::Reply, body })
                if body.len() == call.recv_bytes(self.rank, self.nranks) =>
            {
                return Ok(body)
            }
            Ok(Frame { kind: Kind::Fail, body }) => fail_from_body(&body),
            Ok(Frame { kind, body }) => Fail::new(
                ncclResult_t::ncclInternalError,
                format!("the hub answered {what} with {kind:?} of {} bytes", body.len()),
            ),
            Err(_) if self.aborted.load(Ordering::SeqCst) => {
                Fail::system(format!("the communicator was aborted (ncclCommAbort) during {what}"))
            }
            Err(e) if is_timeout(&e) => Fail::system(format!(
                "no answer from the communicator's hub within {} s during {what} (MOCO_EMU_NCCL_TIMEOUT; \
                 is the process that called ncclGetUniqueId stopped?)",
                self.wait.as_secs_f64()
            )),
            Err(e) => Fail::remote(format!(
                "lost the connection to the communicator's hub during {what} ({e}): the process that called \
                 ncclGetUniqueId (rank 0's, usually) exited"
            )),
        };
        self.break_with(&conn, f.clone());
        Err(f)
    }

    /// Marks the communicator failed (the first failure is the one kept) and closes the
    /// connection, so the hub's reader for this rank ends.
    fn break_with(&self, conn: &TcpStream, f: Fail) {
        lock(&self.failed).get_or_insert(f);
        let _ = conn.shutdown(Shutdown::Both);
    }

    /// A call failed on this rank before reaching the hub (a bad argument, a failed stream):
    /// the other ranks are, or will be, waiting for this rank's part, so tell the hub, which
    /// fails them instead of leaving them to time out. No-op if already unusable.
    pub fn fail_locally(&self, f: &Fail) {
        if self.unusable().is_some() {
            return;
        }
        let mut conn = lock(&self.conn);
        let _ = write_frame(&mut *conn, Kind::Fail, &[&[code_to_byte(f.code)], f.msg.as_bytes()]);
        self.break_with(&conn, f.clone());
    }

    /// Leaves in good order (destroy, finalize): the hub fails collectives that other ranks
    /// start later, rather than waiting for this rank.
    pub fn leave(&self) {
        if self.unusable().is_some() {
            return;
        }
        let mut conn = lock(&self.conn);
        if write_frame(&mut *conn, Kind::Bye, &[]).is_ok() {
            self.left.store(true, Ordering::SeqCst);
        }
    }

    /// Closes the connection (after `leave`, or on its own for an abort).
    pub fn close(&self) {
        let _ = self.shut.shutdown(Shutdown::Both);
    }

    /// `ncclCommAbort`. cudarc aborts in `Drop`, so an abort with no call in flight is the
    /// normal end of a communicator and leaves in good order; one during a call (another
    /// thread holds the connection) shuts the socket down, which makes that call return.
    pub fn abort(&self) {
        if self.unusable().is_none() {
            if let Ok(mut conn) = self.conn.try_lock() {
                if write_frame(&mut *conn, Kind::Bye, &[]).is_ok() {
                    self.left.store(true, Ordering::SeqCst);
                }
            }
        }
        self.aborted.store(true, Ordering::SeqCst);
        self.close();
    }

    /// The asynchronous error (`ncclCommGetAsyncError`): a failure seen by a call, or one the
    /// hub announced while this rank was between calls.
    pub fn async_error(&self) -> ncclResult_t {
        if let Some(f) = lock(&self.failed).as_ref() {
            return f.code;
        }
        if self.aborted.load(Ordering::SeqCst) || self.left.load(Ordering::SeqCst) {
            return ncclResult_t::ncclSuccess;
        }
        // A call in flight holds the connection and will see any failure itself.
        let Ok(mut conn) = self.conn.try_lock() else { return ncclResult_t::ncclSuccess };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local byte on a socket this communicator owns;
        // MSG_DONTWAIT makes it return at once.
        let n = unsafe {
            libc::recv(
                conn.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let f = match n {
            // Between calls the hub only ever sends a failure notice.
            1.. => match read_frame(&mut *conn) {
                Ok(Frame { kind: Kind::Fail, body }) => fail_from_body(&body),
                _ => Fail::new(ncclResult_t::ncclInternalError, "the hub sent an unexpected frame"),
            },
            0 => Fail::remote(
                "the communicator's hub closed the connection: the process that called ncclGetUniqueId exited",
            ),
            _ => return ncclResult_t::ncclSuccess,
        };
        let code = f.code;
        // What ncclGetLastError then says (a watchdog reports it): who failed and how.
        super::errors::set_last(&format!("ncclCommGetAsyncError: {}", f.msg));
        self.break_with(&conn, f);
        code
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn fail_from_body(body: &[u8]) -> Fail {
    let code = body.first().copied().map(code_from_byte).unwrap_or(ncclResult_t::ncclSystemError);
    Fail::new(code, String::from_utf8_lossy(body.get(1..).unwrap_or(&[])).into_owned())
}

/// Live communicators by handle.
static COMMS: Mutex<BTreeMap<usize, Arc<Comm>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Registers a communicator and returns its handle (non-zero, never reused).
pub fn register(c: Comm) -> usize {
    let h = 0x5000_0000 + NEXT.fetch_add(1, Ordering::SeqCst) as usize * 0x10;
    lock(&COMMS).insert(h, Arc::new(c));
    h
}

pub fn lookup(h: usize) -> Result<Arc<Comm>> {
    lock(&COMMS).get(&h).cloned().ok_or_else(|| unknown(h))
}

pub fn unregister(h: usize) -> Result<Arc<Comm>> {
    lock(&COMMS).remove(&h).ok_or_else(|| unknown(h))
}

fn unknown(h: usize) -> Fail {
    Fail::invalid_argument(format!("communicator {h:#x} is not a live communicator (destroyed or aborted?)"))
}
