//! Device memory is host memory: every device allocation is its own `mmap`, placed so that its
//! last byte is followed by an inaccessible guard page (or, with `MOCO_EMU_GUARD=before`, its
//! first byte preceded by one). A kernel that reads or writes past either end faults, and
//! `fault.rs` reports which kernel did it, as compute-sanitizer would on a GPU.
//!
//! Placing the end flush against the guard gives each buffer the natural alignment of its
//! element type (an f32 buffer's size is a multiple of 4, so its start is 4-aligned), so no
//! slack hides a one-element overrun. Pinned host memory is tracked too, because copies from
//! it read their source when they run, not when they are queued (see `stream.rs`).

use crate::device;
use crate::error::{EmuError, Result};
use cudarc::driver::sys::CUresult;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Device,
    Pinned,
}

#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub start: usize,
    pub size: usize,
    pub kind: Kind,
    map_base: usize,
    map_len: usize,
}

#[derive(Default)]
struct Regions {
    by_start: BTreeMap<usize, Region>,
    device_bytes: usize,
    peak_device_bytes: usize,
}

static REGIONS: Mutex<Regions> =
    Mutex::new(Regions { by_start: BTreeMap::new(), device_bytes: 0, peak_device_bytes: 0 });

fn regions() -> std::sync::MutexGuard<'static, Regions> {
    // A panic while the lock was held leaves consistent data (every update is one insert or
    // remove), so a poisoned lock is still usable.
    REGIONS.lock().unwrap_or_else(|p| p.into_inner())
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn guard_before() -> bool {
    std::env::var("MOCO_EMU_GUARD").map(|v| v == "before").unwrap_or(false)
}

/// Maps `size` usable bytes with a guard page after them (or before them), returning
/// (start, map_base, map_len).
fn map_guarded(size: usize) -> Result<(usize, usize, usize)> {
    let pg = page();
    let data_pages = size.div_ceil(pg).max(1);
    let map_len = (data_pages + 2) * pg;
    // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(EmuError::driver(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format!("mmap of {map_len} bytes failed"),
        ));
    }
    let base = base as usize;
    // Layout: [guard][data pages][guard]; only the data pages become accessible.
    let data = base + pg;
    // SAFETY: [data, data + data_pages*pg) lies inside the mapping made above.
    let rc = unsafe {
        libc::mprotect(data as *mut libc::c_void, data_pages * pg, libc::PROT_READ | libc::PROT_WRITE)
    };
    if rc != 0 {
        // SAFETY: unmapping exactly the mapping made above.
        unsafe { libc::munmap(base as *mut libc::c_void, map_len) };
        return Err(EmuError::driver(CUresult::CUDA_ERROR_OUT_OF_MEMORY, "mprotect failed"));
    }
    let start = if guard_before() { data } else { data + data_pages * pg - size };
    Ok((start, base, map_len))
}

/// Allocates device memory, counted against the device's total.
pub fn alloc_device(size: usize) -> Result<usize> {
    if size == 0 {
        return Err(EmuError::driver(CUresult::CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes"));
    }
    let total = device::config().total_memory;
    {
        let r = regions();
        if r.device_bytes + size > total {
            return Err(EmuError::driver(
                CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                format!(
                    "out of device memory: {} bytes in use + {size} requested > {total} (MOCO_EMU_MEMORY)",
                    r.device_bytes
                ),
            ));
        }
    }
    let (start, map_base, map_len) = map_guarded(size)?;
    let mut r = regions();
    r.by_start.insert(start, Region { start, size, kind: Kind::Device, map_base, map_len });
    r.device_bytes += size;
    r.peak_device_bytes = r.peak_device_bytes.max(r.device_bytes);
    Ok(start)
}

/// Allocates page-locked ("pinned") host memory.
pub fn alloc_pinned(size: usize) -> Result<usize> {
    let (start, map_base, map_len) = map_guarded(size.max(1))?;
    regions().by_start.insert(start, Region { start, size, kind: Kind::Pinned, map_base, map_len });
    Ok(start)
}

/// Frees an allocation of `kind` that starts exactly at `ptr`. The pages are unmapped, so a
/// later access through a stale pointer faults.
pub fn free(ptr: usize, kind: Kind) -> Result<()> {
    let region = {
        let mut r = regions();
        match r.by_start.get(&ptr) {
            Some(reg) if reg.kind == kind => {}
            _ => {
                return Err(EmuError::driver(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    format!("free of {ptr:#x}, which is not the start of a live {kind:?} allocation"),
                ))
            }
        }
        let reg = r.by_start.remove(&ptr).expect("checked above");
        if kind == Kind::Device {
            r.device_bytes -= reg.size;
        }
        reg
    };
    // SAFETY: the mapping was made by map_guarded and has just left the registry, so nothing
    // else will free it again.
    unsafe { libc::munmap(region.map_base as *mut libc::c_void, region.map_len) };
    Ok(())
}

/// The live allocation containing `ptr`, if any.
pub fn find(ptr: usize) -> Option<Region> {
    let r = regions();
    r.by_start.range(..=ptr).next_back().map(|(_, reg)| *reg).filter(|reg| ptr < reg.start + reg.size.max(1))
}

/// Like `find`, for a signal handler: never blocks (a fault inside a region update just gives
/// up on naming the allocation).
pub fn try_find_near(addr: usize) -> Option<Region> {
    let r = REGIONS.try_lock().ok()?;
    r.by_start.values().find(|reg| addr >= reg.map_base && addr < reg.map_base + reg.map_len).copied()
}

/// Checks that `[ptr, ptr + bytes)` lies inside one live allocation of `kind`; the message
/// names `what` (an argument of an API call) for the test log.
pub fn check(ptr: usize, bytes: usize, kind: Kind, what: &str) -> Result<()> {
    match find(ptr) {
        Some(reg) if reg.kind == kind && ptr + bytes <= reg.start + reg.size => Ok(()),
        Some(reg) if reg.kind == kind => Err(EmuError::driver(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!(
                "{what}: {bytes} bytes at {ptr:#x} run {} bytes past the end of a {}-byte allocation",
                ptr + bytes - (reg.start + reg.size),
                reg.size
            ),
        )),
        _ => Err(EmuError::driver(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("{what}: {ptr:#x} is not in any live {kind:?} allocation"),
        )),
    }
}

/// Checks a device range (the common case for library stand-ins).
pub fn check_device(ptr: usize, bytes: usize, what: &str) -> Result<()> {
    check(ptr, bytes, Kind::Device, what)
}

/// Whether the whole host range is pinned memory.
pub fn is_pinned(ptr: usize, bytes: usize) -> bool {
    matches!(find(ptr), Some(reg) if reg.kind == Kind::Pinned && ptr + bytes <= reg.start + reg.size)
}

/// (bytes in use, peak bytes) of device memory in this process.
pub fn device_usage() -> (usize, usize) {
    let r = regions();
    (r.device_bytes, r.peak_device_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_end_at_a_guard_page_and_free_releases_them() {
        let p = alloc_device(10 * 4).unwrap();
        assert_eq!(p % 4, 0, "an f32 buffer keeps its alignment");
        assert_eq!((p + 40) % page(), 0, "the end is flush against the guard page");
        check_device(p, 40, "test").unwrap();
        assert!(check_device(p, 44, "test").is_err());
        assert!(check_device(p + 4, 40, "test").is_err());
        let (used, _) = device_usage();
        assert!(used >= 40);
        free(p, Kind::Device).unwrap();
        assert!(find(p).is_none());
        assert!(free(p, Kind::Device).is_err(), "a double free is refused");
    }

    #[test]
    fn pinned_memory_is_told_apart_from_pageable() {
        let p = alloc_pinned(100).unwrap();
        assert!(is_pinned(p, 100));
        assert!(!is_pinned(p, 101));
        let v = [0u8; 8];
        assert!(!is_pinned(v.as_ptr() as usize, 8));
        assert!(free(p, Kind::Device).is_err(), "pinned memory is not freed as device memory");
        free(p, Kind::Pinned).unwrap();
    }
}
