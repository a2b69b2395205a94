//! Allocation, copies and memsets. Copy semantics follow the CUDA documentation's "API
//! synchronization behavior": a host-to-device copy from pageable memory takes its bytes when
//! it is queued; one from pinned memory reads them when it runs (so reusing a staging buffer
//! too early is caught); a device-to-host copy into pageable memory returns only when done,
//! which makes the host wait; into pinned memory it lands when the stream runs.

use super::{invalid, put, status};
use crate::error::Result;
use crate::memory::{self, Kind};
use crate::{counters, stream};
use cudarc::driver::sys::{CUdeviceptr, CUresult, CUstream};
use std::ffi::{c_uint, c_void};

fn sid(s: CUstream) -> u64 {
    stream::stream_id(s as usize)
}

/// Runs `stream` to its end and counts a host wait if anything was queued there.
pub(crate) fn wait_for(stream_id: u64, reason: &str) -> Result<()> {
    if stream::has_pending(stream_id)? {
        counters::host_wait(reason);
    }
    stream::run_all(stream_id)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    status(
        "cuMemAlloc",
        memory::alloc_device(bytes).and_then(|p| unsafe { put(dptr, p as CUdeviceptr, "dptr") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, _s: CUstream) -> CUresult {
    // The memory is usable in stream order at once; allocating it now is one valid schedule.
    status(
        "cuMemAllocAsync",
        memory::alloc_device(bytes).and_then(|p| unsafe { put(dptr, p as CUdeviceptr, "dptr") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    // cuMemFree waits for work that may still use the memory: run everything first.
    status(
        "cuMemFree",
        (|| {
            if stream::any_pending()? {
                counters::host_wait("cuMemFree");
            }
            stream::run_everything()?;
            memory::free(dptr as usize, Kind::Device)
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, s: CUstream) -> CUresult {
    status(
        "cuMemFreeAsync",
        (|| {
            memory::check_device(dptr as usize, 0, "cuMemFreeAsync dptr")?;
            // Freed in stream order: work queued before it may still use the memory.
            stream::enqueue(
                sid(s),
                "cuMemFreeAsync",
                Box::new(move || memory::free(dptr as usize, Kind::Device).map_err(|e| e.to_string())),
            )
            .map(|_| ())
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    let total_bytes = crate::device::config().total_memory;
    let (used, _) = memory::device_usage();
    status(
        "cuMemGetInfo",
        (|| unsafe {
            put(free, total_bytes.saturating_sub(used), "free")?;
            put(total, total_bytes, "total")
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, _flags: c_uint) -> CUresult {
    status(
        "cuMemHostAlloc",
        memory::alloc_pinned(bytes).and_then(|p| unsafe { put(pp, p as *mut c_void, "pp") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    status(
        "cuMemAllocHost",
        memory::alloc_pinned(bytes).and_then(|p| unsafe { put(pp, p as *mut c_void, "pp") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    // Pinned memory may be the source or target of queued copies: CUDA synchronizes here.
    status(
        "cuMemFreeHost",
        (|| {
            if stream::any_pending()? {
                counters::host_wait("cuMemFreeHost");
            }
            stream::run_everything()?;
            memory::free(p as usize, Kind::Pinned)
        })(),
    )
}

/// A raw address that may cross into a stream op (the op runs on this process's host).
#[derive(Clone, Copy)]
struct Addr(usize);

fn copy_op(dst: Addr, src: Addr, n: usize) -> stream::Op {
    Box::new(move || {
        // SAFETY: both ranges were checked (device side) or are the caller's promise (host
        // side, as with the real driver) when the copy was queued.
        unsafe { std::ptr::copy(src.0 as *const u8, dst.0 as *mut u8, n) };
        Ok(())
    })
}

unsafe fn htod(dst: CUdeviceptr, src: *const c_void, n: usize, s: u64) -> Result<()> {
    memory::check_device(dst as usize, n, "host-to-device copy destination")?;
    if n > 0 && src.is_null() {
        return Err(invalid("host-to-device copy from a null host pointer"));
    }
    counters::with(|c| c.h2d_bytes += n as u64);
    let op = if memory::is_pinned(src as usize, n) {
        copy_op(Addr(dst as usize), Addr(src as usize), n)
    } else {
        // Pageable: the driver stages the bytes now; the caller may reuse its buffer at once.
        // SAFETY: the caller promises `n` readable bytes at `src`.
        let staged = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) }.to_vec();
        let d = Addr(dst as usize);
        Box::new(move || {
            // SAFETY: the destination range was checked when the copy was queued.
            unsafe { std::ptr::copy_nonoverlapping(staged.as_ptr(), d.0 as *mut u8, staged.len()) };
            Ok(())
        })
    };
    stream::enqueue(s, "cuMemcpyHtoD", op).map(|_| ())
}

unsafe fn dtoh(dst: *mut c_void, src: CUdeviceptr, n: usize, s: u64) -> Result<()> {
    memory::check_device(src as usize, n, "device-to-host copy source")?;
    if n > 0 && dst.is_null() {
        return Err(invalid("device-to-host copy to a null host pointer"));
    }
    counters::with(|c| c.d2h_bytes += n as u64);
    let pinned = memory::is_pinned(dst as usize, n);
    stream::enqueue(s, "cuMemcpyDtoH", copy_op(Addr(dst as usize), Addr(src as usize), n))?;
    if !pinned {
        // Into pageable memory the copy returns only when it is done: a host wait.
        wait_for(s, "cuMemcpyDtoHAsync to pageable memory")?;
    }
    Ok(())
}

unsafe fn dtod(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: u64) -> Result<()> {
    memory::check_device(dst as usize, n, "device-to-device copy destination")?;
    memory::check_device(src as usize, n, "device-to-device copy source")?;
    counters::with(|c| c.d2d_bytes += n as u64);
    stream::enqueue(s, "cuMemcpyDtoD", copy_op(Addr(dst as usize), Addr(src as usize), n)).map(|_| ())
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    s: CUstream,
) -> CUresult {
    status("cuMemcpyHtoDAsync", unsafe { htod(dst, src, n, sid(s)) })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
) -> CUresult {
    status("cuMemcpyDtoHAsync", unsafe { dtoh(dst, src, n, sid(s)) })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
) -> CUresult {
    status("cuMemcpyDtoDAsync", unsafe { dtod(dst, src, n, sid(s)) })
}

/// The synchronous copies run on the default stream after everything else, and return when
/// done.
unsafe fn sync_copy(name: &str, queue: impl FnOnce(u64) -> Result<()>) -> Result<()> {
    queue(stream::DEFAULT_STREAM)?;
    if stream::any_pending()? {
        counters::host_wait(name);
    }
    stream::run_everything()
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> CUresult {
    status("cuMemcpyHtoD", unsafe { sync_copy("cuMemcpyHtoD", |s| htod(dst, src, n, s)) })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    status("cuMemcpyDtoH", unsafe { sync_copy("cuMemcpyDtoH", |s| dtoh(dst, src, n, s)) })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    status("cuMemcpyDtoD", unsafe { sync_copy("cuMemcpyDtoD", |s| dtod(dst, src, n, s)) })
}

fn memset(dst: CUdeviceptr, pattern: Vec<u8>, count: usize, s: u64) -> Result<()> {
    let n = pattern.len() * count;
    memory::check_device(dst as usize, n, "memset destination")?;
    counters::with(|c| c.memset_bytes += n as u64);
    let d = Addr(dst as usize);
    stream::enqueue(
        s,
        "cuMemset",
        Box::new(move || {
            // SAFETY: the destination range was checked when the memset was queued.
            let out = unsafe { std::slice::from_raw_parts_mut(d.0 as *mut u8, n) };
            for chunk in out.chunks_exact_mut(pattern.len()) {
                chunk.copy_from_slice(&pattern);
            }
            Ok(())
        }),
    )
    .map(|_| ())
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, s: CUstream) -> CUresult {
    status("cuMemsetD8Async", memset(dst, vec![v], n, sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, v: u16, n: usize, s: CUstream) -> CUresult {
    status("cuMemsetD16Async", memset(dst, v.to_ne_bytes().to_vec(), n, sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, v: c_uint, n: usize, s: CUstream) -> CUresult {
    status("cuMemsetD32Async", memset(dst, v.to_ne_bytes().to_vec(), n, sid(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CUresult {
    status("cuMemsetD8", unsafe { sync_copy("cuMemsetD8", |s| memset(dst, vec![v], n, s)) })
}
