//! Communicator management, queries, errors and groups.

use super::client::{self, Comm};
use super::errors::{self, status, Fail, Result};
use super::hub;
use super::id::{HubId, ID_BYTES};
use crate::counters::{self, Lib};
use cudarc::nccl::sys::{ncclComm_t, ncclConfig_t, ncclResult_t, ncclUniqueId};
use std::cell::Cell;
use std::ffi::{c_char, c_int};

/// Writes through an out-pointer, refusing null.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<()> {
    if out.is_null() {
        return Err(Fail::invalid_argument(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and valid for writes per the caller's promise.
    unsafe { out.write(value) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn ncclGetVersion(version: *mut c_int) -> ncclResult_t {
    // 2.30.0, the version of the bindings the project is built with (cudarc's nccl-02030).
    // SAFETY: the caller passes null or a writable int.
    status("ncclGetVersion", unsafe { put(version, 23000, "version") })
}

#[no_mangle]
pub unsafe extern "C" fn ncclGetUniqueId(unique_id: *mut ncclUniqueId) -> ncclResult_t {
    let r = hub::start().and_then(|id| {
        let mut out = ncclUniqueId { internal: [0; ID_BYTES] };
        for (d, b) in out.internal.iter_mut().zip(id.to_bytes()) {
            *d = b as c_char;
        }
        // SAFETY: the caller passes null or a writable id.
        unsafe { put(unique_id, out, "uniqueId") }
    });
    status("ncclGetUniqueId", r)
}

/// The device of the calling thread's current context (NCCL binds a communicator to it). The
/// decoding mirrors `driver::context`'s handles: 0x1000 + 0x10 x ordinal.
fn current_device() -> c_int {
    let mut ctx: cudarc::driver::sys::CUcontext = std::ptr::null_mut();
    // SAFETY: cuCtxGetCurrent writes one handle through a valid pointer to a local.
    unsafe { crate::driver::context::cuCtxGetCurrent(&mut ctx) };
    match ctx as usize {
        h if h >= 0x1000 => ((h - 0x1000) / 0x10) as c_int,
        _ => 0,
    }
}

fn init_rank(comm: *mut ncclComm_t, nranks: c_int, id: &ncclUniqueId, rank: c_int) -> Result<()> {
    if comm.is_null() {
        return Err(Fail::invalid_argument("comm is a null pointer"));
    }
    if nranks < 1 || rank < 0 || rank >= nranks {
        return Err(Fail::invalid_argument(format!("rank {rank} of {nranks} ranks")));
    }
    let bytes: [u8; ID_BYTES] = std::array::from_fn(|i| id.internal[i] as u8);
    let id = HubId::from_bytes(&bytes)?;
    counters::call(Lib::Nccl, "ncclCommInitRank");
    let c = Comm::join(id, rank as u32, nranks as u32, current_device())?;
    let h = client::register(c);
    // SAFETY: `comm` is non-null (checked above) and the caller's out-pointer.
    unsafe { put(comm, h as ncclComm_t, "comm") }
}

#[no_mangle]
pub unsafe extern "C" fn ncclCommInitRank(
    comm: *mut ncclComm_t,
    nranks: c_int,
    comm_id: ncclUniqueId,
    rank: c_int,
) -> ncclResult_t {
    status("ncclCommInitRank", init_rank(comm, nranks, &comm_id, rank))
}

/// The configuration is not read: every communicator is blocking, and a non-blocking one may
/// legitimately complete at once (NCCL then returns ncclSuccess rather than ncclInProgress).
#[no_mangle]
pub unsafe extern "C" fn ncclCommInitRankConfig(
    comm: *mut ncclComm_t,
    nranks: c_int,
    comm_id: ncclUniqueId,
    rank: c_int,
    _config: *mut ncclConfig_t,
) -> ncclResult_t {
    status("ncclCommInitRankConfig", init_rank(comm, nranks, &comm_id, rank))
}

/// Collectives complete before they return, so there is nothing left to flush: finalizing
/// only tells the hub this rank is done.
#[no_mangle]
pub unsafe extern "C" fn ncclCommFinalize(comm: ncclComm_t) -> ncclResult_t {
    let r = client::lookup(comm as usize).and_then(|c| {
        if let Some(f) = c.unusable() {
            return Err(f);
        }
        counters::call(Lib::Nccl, "ncclCommFinalize");
        c.leave();
        Ok(())
    });
    status("ncclCommFinalize", r)
}

/// Frees the communicator. Succeeds on a failed one too (its resources still need freeing).
#[no_mangle]
pub unsafe extern "C" fn ncclCommDestroy(comm: ncclComm_t) -> ncclResult_t {
    let r = client::unregister(comm as usize).map(|c| {
        counters::call(Lib::Nccl, "ncclCommDestroy");
        c.leave();
        c.close();
    });
    status("ncclCommDestroy", r)
}

/// Frees the communicator, unblocking a call in flight on it (see `Comm::abort`). Succeeds on
/// a failed one: cudarc aborts in `Drop` and panics on an error.
#[no_mangle]
pub unsafe extern "C" fn ncclCommAbort(comm: ncclComm_t) -> ncclResult_t {
    let r = client::unregister(comm as usize).map(|c| {
        counters::call(Lib::Nccl, "ncclCommAbort");
        c.abort();
    });
    status("ncclCommAbort", r)
}

#[no_mangle]
pub unsafe extern "C" fn ncclCommGetAsyncError(
    comm: ncclComm_t,
    async_error: *mut ncclResult_t,
) -> ncclResult_t {
    let r = client::lookup(comm as usize).and_then(|c| {
        // SAFETY: the caller passes null or a writable result.
        unsafe { put(async_error, c.async_error(), "asyncError") }
    });
    status("ncclCommGetAsyncError", r)
}

#[no_mangle]
pub unsafe extern "C" fn ncclCommCount(comm: ncclComm_t, count: *mut c_int) -> ncclResult_t {
    // SAFETY: the caller passes null or a writable int.
    let r = client::lookup(comm as usize).and_then(|c| unsafe { put(count, c.nranks as c_int, "count") });
    status("ncclCommCount", r)
}

#[no_mangle]
pub unsafe extern "C" fn ncclCommUserRank(comm: ncclComm_t, rank: *mut c_int) -> ncclResult_t {
    // SAFETY: the caller passes null or a writable int.
    let r = client::lookup(comm as usize).and_then(|c| unsafe { put(rank, c.rank as c_int, "rank") });
    status("ncclCommUserRank", r)
}

#[no_mangle]
pub unsafe extern "C" fn ncclCommCuDevice(comm: ncclComm_t, device: *mut c_int) -> ncclResult_t {
    // SAFETY: the caller passes null or a writable int.
    let r = client::lookup(comm as usize).and_then(|c| unsafe { put(device, c.device, "device") });
    status("ncclCommCuDevice", r)
}

/// Takes the code as `c_uint` (the ABI of cudarc's `repr(u32)` enum) so any value is safe.
#[no_mangle]
pub unsafe extern "C" fn ncclGetErrorString(result: std::ffi::c_uint) -> *const c_char {
    errors::describe(result).as_ptr().cast()
}

/// The last failure of any call in this process, with its cause. NCCL's is per process too;
/// the communicator argument may be null.
#[no_mangle]
pub unsafe extern "C" fn ncclGetLastError(_comm: ncclComm_t) -> *const c_char {
    errors::last_ptr()
}

thread_local! {
    static GROUP_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Groups only nest: collectives inside run at once, in program order (see `nccl`'s module
/// comment for why that gives the grouped result).
#[no_mangle]
pub unsafe extern "C" fn ncclGroupStart() -> ncclResult_t {
    GROUP_DEPTH.with(|d| d.set(d.get() + 1));
    ncclResult_t::ncclSuccess
}

#[no_mangle]
pub unsafe extern "C" fn ncclGroupEnd() -> ncclResult_t {
    let r = GROUP_DEPTH.with(|d| match d.get() {
        0 => Err(Fail::invalid_usage("ncclGroupEnd without a matching ncclGroupStart")),
        n => {
            d.set(n - 1);
            Ok(())
        }
    });
    status("ncclGroupEnd", r)
}
