//! Streams and events (see `stream.rs` for when queued work runs).

use super::memory_api::wait_for;
use super::{put, status};
use crate::{counters, stream};
use cudarc::driver::sys::{CUevent, CUresult, CUstream};
use std::ffi::{c_int, c_uint};

fn sid(s: CUstream) -> u64 {
    stream::stream_id(s as usize)
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(out: *mut CUstream, _flags: c_uint) -> CUresult {
    status("cuStreamCreate", unsafe { put(out, stream::create_stream() as usize as CUstream, "phStream") })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    out: *mut CUstream,
    _flags: c_uint,
    _prio: c_int,
) -> CUresult {
    status("cuStreamCreateWithPriority", unsafe {
        put(out, stream::create_stream() as usize as CUstream, "phStream")
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: CUstream) -> CUresult {
    status("cuStreamDestroy", stream::destroy_stream(sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(s: CUstream) -> CUresult {
    status("cuStreamSynchronize", wait_for(sid(s), "cuStreamSynchronize"))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(s: CUstream) -> CUresult {
    // The device makes progress while the host polls: run the stream, report it done.
    counters::with(|c| c.event_queries += 1);
    status("cuStreamQuery", stream::run_all(sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(s: CUstream, e: CUevent, _flags: c_uint) -> CUresult {
    counters::with(|c| c.stream_waits += 1);
    status("cuStreamWaitEvent", stream::wait_event(sid(s), e as u64))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(out: *mut CUevent, _flags: c_uint) -> CUresult {
    status("cuEventCreate", unsafe { put(out, stream::create_event() as usize as CUevent, "phEvent") })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(e: CUevent) -> CUresult {
    status("cuEventDestroy", stream::destroy_event(e as u64))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(e: CUevent, s: CUstream) -> CUresult {
    counters::with(|c| c.event_records += 1);
    status("cuEventRecord", stream::record_event(e as u64, sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags(e: CUevent, s: CUstream, _flags: c_uint) -> CUresult {
    counters::with(|c| c.event_records += 1);
    status("cuEventRecordWithFlags", stream::record_event(e as u64, sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(e: CUevent) -> CUresult {
    status(
        "cuEventSynchronize",
        (|| {
            if stream::event_pending(e as u64)? {
                counters::host_wait("cuEventSynchronize");
            }
            stream::run_to_event(e as u64).map(|_| ())
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(e: CUevent) -> CUresult {
    counters::with(|c| c.event_queries += 1);
    status("cuEventQuery", stream::run_to_event(e as u64).map(|_| ()))
}

unsafe fn elapsed(ms: *mut f32, start: CUevent, end: CUevent) -> crate::error::Result<()> {
    let t0 = stream::run_to_event(start as u64)?;
    let t1 = stream::run_to_event(end as u64)?;
    match (t0, t1) {
        (Some(a), Some(b)) => {
            let v = if b >= a { (b - a).as_secs_f32() * 1e3 } else { -((a - b).as_secs_f32() * 1e3) };
            // SAFETY: forwarded from the caller's out-pointer.
            unsafe { put(ms, v, "pMilliseconds") }
        }
        _ => Err(crate::EmuError::driver(CUresult::CUDA_ERROR_INVALID_HANDLE, "an event was never recorded")),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    status("cuEventElapsedTime", unsafe { elapsed(ms, start, end) })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    status("cuEventElapsedTime", unsafe { elapsed(ms, start, end) })
}
