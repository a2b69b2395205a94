//! An NCCL communicator that owns its raw handle, so that a watchdog thread can poll
//! `ncclCommGetAsyncError` and call `ncclCommAbort` (cudarc's `Comm` keeps the handle
//! private). The collective methods have the signatures of cudarc's `Comm`, so [`super::nccl`]
//! calls them unchanged.
//!
//! Why a watchdog: with a blocking communicator, a peer that dies or hangs (stopped, stuck in
//! a driver call, a partitioned network) leaves the other ranks waiting forever, either
//! inside the NCCL call or, on a GPU, in the next host wait behind the collective's kernel.
//! NCCL itself reports some failures (a closed connection) only as an asynchronous error and
//! never times out. The watchdog, once armed ([`Comm::arm_watchdog`]), wakes every
//! [`POLL`] and aborts the communicator when
//! - `ncclCommGetAsyncError` reports an error, or
//! - an NCCL call has been in progress on the host for longer than the timeout (the emulated
//!   NCCL, and real NCCL when it blocks in the enqueue), or
//! - the last collective's completion event, recorded on the stream right after it, has not
//!   completed within the timeout of the call (a GPU whose NCCL kernel waits for a hung peer).
//!   The event is only queried once the timeout has passed, so a healthy run queries nothing.
//!
//! `ncclCommAbort` makes the call in flight (and NCCL kernels on a GPU) return; every later
//! call returns the watchdog's reason instead of touching the communicator. The cause is
//! kept, so the error names it ("no progress for N s", or NCCL's own async error text).
//!
//! Ran on the emulated NCCL only (tests/tests/emulated_cuda.rs freezes a rank with SIGSTOP);
//! the event path and the abort of a real NCCL kernel have not run on a GPU.

use cudarc::driver::{CudaEvent, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::nccl::result::{self, NcclError, NcclStatus};
use cudarc::nccl::sys;
use cudarc::nccl::{Id, NcclType, ReduceOp};
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the watchdog looks.
pub const POLL: Duration = Duration::from_millis(100);

/// The communicator handle, shareable with the watchdog thread.
#[derive(Clone, Copy)]
struct Handle(sys::ncclComm_t);

// SAFETY: an NCCL communicator handle may be used from any thread; NCCL documents
// `ncclCommGetAsyncError` and `ncclCommAbort` as callable from another thread while a call is
// in flight, which is the only cross-thread use made of it here.
unsafe impl Send for Handle {}

#[derive(Default)]
struct State {
    /// (api, call number, since): an NCCL call the host is inside now.
    in_call: Option<(&'static str, u64, Instant)>,
    /// (api, call number, enqueued): the last collective, until its event is seen complete.
    pending: Option<(&'static str, u64, Instant)>,
    calls: u64,
    /// Why the watchdog aborted the communicator (then every call refuses).
    fired: Option<String>,
    /// The communicator is gone (aborted by the watchdog, or dropped).
    aborted: bool,
    stop: bool,
}

struct Watch {
    state: Mutex<State>,
    wake: Condvar,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One rank's NCCL communicator on one stream, with an optional watchdog.
pub struct Comm {
    handle: Handle,
    stream: Arc<CudaStream>,
    rank: usize,
    world_size: usize,
    watch: Arc<Watch>,
    /// Recorded on the stream after each collective (armed watchdog only).
    done: Option<Arc<CudaEvent>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comm").field("rank", &self.rank).field("world_size", &self.world_size).finish()
    }
}

fn convert(op: &ReduceOp) -> sys::ncclRedOp_t {
    match op {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        ReduceOp::Prod => sys::ncclRedOp_t::ncclProd,
        ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
        ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
        ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
    }
}

/// NCCL's text for a code plus its last error message.
fn explain(code: sys::ncclResult_t) -> String {
    // SAFETY: ncclGetErrorString takes any code and returns a static NUL-terminated string or
    // null; ncclGetLastError accepts null (the process's last error) and returns a
    // NUL-terminated string owned by NCCL. Both are copied at once.
    let (text, last) =
        unsafe { (sys::ncclGetErrorString(code), sys::ncclGetLastError(std::ptr::null_mut())) };
    let read = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null NUL-terminated (see above).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (text, last) = (read(text), read(last));
    if last.is_empty() {
        format!("{code:?}: {text}")
    } else {
        format!("{code:?}: {text} (last NCCL message: {last})")
    }
}

impl Comm {
    /// `ncclCommInitRank` on the calling thread's current device (as cudarc's `from_rank`).
    pub fn from_rank(
        stream: Arc<CudaStream>,
        rank: usize,
        world_size: usize,
        id: Id,
    ) -> Result<Self, NcclError> {
        let (Ok(n), Ok(r)) = (i32::try_from(world_size), i32::try_from(rank)) else {
            return Err(NcclError(sys::ncclResult_t::ncclInvalidArgument));
        };
        let mut comm = MaybeUninit::uninit();
        let raw = sys::ncclUniqueId { internal: *id.internal() };
        // SAFETY: `comm` is a valid out-pointer, written on success; the id is by value.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), n, raw, r)?;
            comm.assume_init()
        };
        let watch = Arc::new(Watch { state: Mutex::new(State::default()), wake: Condvar::new() });
        Ok(Comm { handle: Handle(comm), stream, rank, world_size, watch, done: None, thread: None })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Starts the watchdog: NCCL work that makes no progress for `timeout`, or an
    /// asynchronous NCCL error, aborts the communicator. Call once, before the collectives.
    pub fn arm_watchdog(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.thread.is_some() {
            return Ok(());
        }
        let done = Arc::new(
            self.stream
                .context()
                .new_event(None)
                .map_err(|e| std::io::Error::other(format!("creating the watchdog's event: {e:?}")))?,
        );
        let (watch, handle, event) = (self.watch.clone(), self.handle, done.clone());
        let rank = self.rank;
        self.thread = Some(
            std::thread::Builder::new()
                .name("nccl-watchdog".into())
                .spawn(move || watchdog(&watch, handle, &event, timeout, rank))?,
        );
        self.done = Some(done);
        Ok(())
    }

    /// Why the watchdog aborted the communicator, if it did.
    pub fn watchdog_cause(&self) -> Option<String> {
        self.watch.lock().fired.clone()
    }

    /// Runs one NCCL call under the watchdog's eye.
    fn watched(
        &self,
        api: &'static str,
        call: impl FnOnce(sys::ncclComm_t) -> Result<NcclStatus, NcclError>,
    ) -> Result<NcclStatus, NcclError> {
        let n = {
            let mut s = self.watch.lock();
            if s.aborted {
                // The handle is gone; the caller reports `watchdog_cause`.
                return Err(NcclError(sys::ncclResult_t::ncclInvalidUsage));
            }
            s.calls += 1;
            s.in_call = Some((api, s.calls, Instant::now()));
            s.calls
        };
        let r = call(self.handle.0);
        let recorded = match (&self.done, &r) {
            (Some(e), Ok(_)) => e.record(&self.stream).is_ok(),
            _ => false,
        };
        let mut s = self.watch.lock();
        s.in_call = None;
        if recorded {
            s.pending = Some((api, n, Instant::now()));
        }
        if s.fired.is_some() && r.is_ok() {
            // Aborted while the call ran: its result is not to be trusted.
            return Err(NcclError(sys::ncclResult_t::ncclInvalidUsage));
        }
        r
    }

    pub fn all_reduce_in_place<R: DevicePtrMut<T>, T: NcclType>(
        &self,
        buff: &mut R,
        reduce_op: &ReduceOp,
    ) -> Result<NcclStatus, NcclError> {
        let count = buff.len();
        let (dst, _record) = buff.device_ptr_mut(&self.stream);
        self.watched("ncclAllReduce", |c| {
            // SAFETY: `dst` holds `count` elements of T on this stream's device; in place.
            unsafe {
                result::all_reduce(
                    dst as _,
                    dst as _,
                    count,
                    T::as_nccl_type(),
                    convert(reduce_op),
                    c,
                    self.stream.cu_stream() as _,
                )
            }
        })
    }

    pub fn all_reduce<S: DevicePtr<T>, R: DevicePtrMut<T>, T: NcclType>(
        &self,
        sendbuff: &S,
        recvbuff: &mut R,
        reduce_op: &ReduceOp,
    ) -> Result<NcclStatus, NcclError> {
        let count = sendbuff.len();
        let (src, _record_src) = sendbuff.device_ptr(&self.stream);
        let (dst, _record_dst) = recvbuff.device_ptr_mut(&self.stream);
        self.watched("ncclAllReduce", |c| {
            // SAFETY: both buffers hold `count` elements of T on this stream's device.
            unsafe {
                result::all_reduce(
                    src as _,
                    dst as _,
                    count,
                    T::as_nccl_type(),
                    convert(reduce_op),
                    c,
                    self.stream.cu_stream() as _,
                )
            }
        })
    }

    pub fn all_gather<S: DevicePtr<T>, R: DevicePtrMut<T>, T: NcclType>(
        &self,
        sendbuff: &S,
        recvbuff: &mut R,
    ) -> Result<NcclStatus, NcclError> {
        let count = sendbuff.len();
        let (src, _record_src) = sendbuff.device_ptr(&self.stream);
        let (dst, _record_dst) = recvbuff.device_ptr_mut(&self.stream);
        self.watched("ncclAllGather", |c| {
            // SAFETY: send holds `count`, recv world x `count` elements (checked by callers,
            // and by NCCL against the communicator's size).
            unsafe {
                result::all_gather(
                    src as _,
                    dst as _,
                    count,
                    T::as_nccl_type(),
                    c,
                    self.stream.cu_stream() as _,
                )
            }
        })
    }

    pub fn reduce_scatter<S: DevicePtr<T>, R: DevicePtrMut<T>, T: NcclType>(
        &self,
        sendbuff: &S,
        recvbuff: &mut R,
        reduce_op: &ReduceOp,
    ) -> Result<NcclStatus, NcclError> {
        let count = recvbuff.len();
        let (src, _record_src) = sendbuff.device_ptr(&self.stream);
        let (dst, _record_dst) = recvbuff.device_ptr_mut(&self.stream);
        self.watched("ncclReduceScatter", |c| {
            // SAFETY: recv holds `count`, send world x `count` elements (checked by callers).
            unsafe {
                result::reduce_scatter(
                    src as _,
                    dst as _,
                    count,
                    T::as_nccl_type(),
                    convert(reduce_op),
                    c,
                    self.stream.cu_stream() as _,
                )
            }
        })
    }

    pub fn broadcast_in_place<R: DevicePtrMut<T>, T: NcclType>(
        &self,
        buff: &mut R,
        root: i32,
    ) -> Result<NcclStatus, NcclError> {
        let count = buff.len();
        let (dst, _record) = buff.device_ptr_mut(&self.stream);
        self.watched("ncclBroadcast", |c| {
            // SAFETY: `dst` holds `count` elements of T on this stream's device; in place.
            unsafe {
                result::broadcast(
                    dst as _,
                    dst as _,
                    count,
                    T::as_nccl_type(),
                    root,
                    c,
                    self.stream.cu_stream() as _,
                )
            }
        })
    }
}

/// The watchdog thread's loop (see the module comment).
fn watchdog(watch: &Watch, handle: Handle, done: &CudaEvent, timeout: Duration, rank: usize) {
    let mut s = watch.lock();
    loop {
        s = watch.wake.wait_timeout(s, POLL).unwrap_or_else(|p| p.into_inner()).0;
        if s.stop || s.aborted {
            return;
        }
        let mut code = sys::ncclResult_t::ncclSuccess;
        // SAFETY: the handle is live (not aborted: checked under the lock, and only this
        // thread or Drop, after stopping this thread, abort it); `code` is a local.
        let polled = unsafe { sys::ncclCommGetAsyncError(handle.0, &mut code) };
        let mut cause = None;
        if polled == sys::ncclResult_t::ncclSuccess
            && !matches!(code, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress)
        {
            cause = Some(format!("NCCL reported an asynchronous error: {}", explain(code)));
        }
        if cause.is_none() {
            if let Some((api, n, since)) = s.in_call {
                if since.elapsed() > timeout {
                    cause = Some(format!(
                        "{api} #{n} has been in progress on the host for over {} s",
                        timeout.as_secs_f64()
                    ));
                }
            }
        }
        if cause.is_none() && s.in_call.is_none() {
            if let Some((api, n, since)) = s.pending {
                if since.elapsed() > timeout {
                    // Only now ask the device (in the emulator a query runs the stream).
                    match done.try_is_complete() {
                        Ok(true) => s.pending = None,
                        Ok(false) => {
                            cause = Some(format!(
                                "{api} #{n} had not completed on the device {} s after it was queued",
                                timeout.as_secs_f64()
                            ))
                        }
                        Err(e) => cause = Some(format!("the stream failed behind {api} #{n}: {e:?}")),
                    }
                }
            }
        }
        if let Some(cause) = cause {
            let msg = format!(
                "NCCL watchdog on rank {rank}: {cause}; a peer rank is hung or dead, or the network stalled \
                 (the timeout is the worker's --nccl-timeout). The communicator was aborted so this rank \
                 stops instead of waiting forever"
            );
            tracing::error!(%msg, "NCCL watchdog fired");
            s.fired = Some(msg);
            s.aborted = true;
            drop(s);
            // SAFETY: the handle is live (see above) and marked aborted first, so no new call
            // starts on it; ncclCommAbort may run while another thread is inside a call.
            let _ = unsafe { result::comm_abort(handle.0) };
            return;
        }
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        {
            let mut s = self.watch.lock();
            s.stop = true;
        }
        self.watch.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let aborted = std::mem::replace(&mut self.watch.lock().aborted, true);
        if !aborted {
            // As cudarc's Comm does. An error here has nowhere to go.
            // SAFETY: the handle is live and no other thread uses it any more.
            let _ = unsafe { result::comm_abort(self.handle.0) };
        }
    }
}
