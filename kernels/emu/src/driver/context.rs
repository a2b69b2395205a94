//! Initialisation, devices, the primary context and the calls that report errors.

use super::{invalid, put, status};
use crate::device::{self, WARP_SIZE};
use crate::error::Result;
use crate::{counters, fault, stream};
use cudarc::driver::sys::{CUcontext, CUdevice, CUdevice_attribute, CUresult, CUuuid};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint};

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The primary context of device `d` as a handle (non-null, one per device).
fn ctx_handle(d: CUdevice) -> CUcontext {
    (0x1000 + d as usize * 0x10) as CUcontext
}

fn check_device(d: CUdevice) -> Result<()> {
    let n = device::config().count;
    if d < 0 || d >= n {
        return Err(crate::EmuError::driver(
            CUresult::CUDA_ERROR_INVALID_DEVICE,
            format!("device {d} does not exist ({n} emulated; MOCO_EMU_DEVICES)"),
        ));
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    status(
        "cuInit",
        (|| {
            if flags != 0 {
                return Err(invalid("flags must be 0"));
            }
            fault::install();
            counters::install_exit_writer();
            Ok(())
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    // Default 13.0, the version of the bindings the project is built with; MOCO_EMU_DRIVER_VERSION
    // poses as an older driver.
    status("cuDriverGetVersion", unsafe { put(version, device::config().driver_version, "version") })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    status("cuDeviceGetCount", unsafe { put(count, device::config().count, "count") })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut CUdevice, ordinal: c_int) -> CUresult {
    status("cuDeviceGet", check_device(ordinal).and_then(|_| unsafe { put(dev, ordinal, "device") }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    status(
        "cuDeviceGetName",
        (|| {
            check_device(dev)?;
            if name.is_null() || len <= 0 {
                return Err(invalid("name buffer is null or empty"));
            }
            let text = device::config().name.as_bytes();
            let n = text.len().min(len as usize - 1);
            // SAFETY: the caller gave `len` writable bytes; n + 1 <= len.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), name.cast::<u8>(), n);
                *name.add(n) = 0;
            }
            Ok(())
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    status(
        "cuDeviceTotalMem",
        check_device(dev).and_then(|_| unsafe { put(bytes, device::config().total_memory, "bytes") }),
    )
}

unsafe fn uuid(out: *mut CUuuid, dev: CUdevice) -> Result<()> {
    check_device(dev)?;
    let mut bytes = [0 as c_char; 16];
    for (i, b) in b"moco-emu-device".iter().enumerate() {
        bytes[i] = *b as c_char;
    }
    bytes[15] = dev as c_char;
    // SAFETY: forwarded from the caller's out-pointer.
    unsafe { put(out, CUuuid { bytes }, "uuid") }
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(out: *mut CUuuid, dev: CUdevice) -> CUresult {
    status("cuDeviceGetUuid", unsafe { uuid(out, dev) })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(out: *mut CUuuid, dev: CUdevice) -> CUresult {
    status("cuDeviceGetUuid_v2", unsafe { uuid(out, dev) })
}

/// The attributes the project and cudarc ask for; others are refused by name so a new query
/// shows up in the test log instead of reading a made-up value.
fn attribute(attrib: CUdevice_attribute) -> Option<c_int> {
    use CUdevice_attribute::*;
    let cfg = device::config();
    Some(match attrib {
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => cfg.cc_major,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => cfg.cc_minor,
        CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => cfg.sm_count,
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => device::MAX_THREADS_PER_BLOCK as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X => device::MAX_BLOCK_DIM[0] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => device::MAX_BLOCK_DIM[1] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => device::MAX_BLOCK_DIM[2] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => device::MAX_GRID_DIM[0] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y => device::MAX_GRID_DIM[1] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => device::MAX_GRID_DIM[2] as c_int,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => device::MAX_SHARED_PER_BLOCK as c_int,
        CU_DEVICE_ATTRIBUTE_WARP_SIZE => WARP_SIZE,
        CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED => 1,
        CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING => 1,
        CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS => 1,
        CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT => 2,
        CU_DEVICE_ATTRIBUTE_INTEGRATED => 0,
        CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY => 1,
        CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => 1,
        CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID => 0,
        CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => 0,
        CU_DEVICE_ATTRIBUTE_CLOCK_RATE => 1_777_000,
        CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => 7_501_000,
        CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => 192,
        CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => 3 << 20,
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => 1536,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => 99 * 1024,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 100 * 1024,
        CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK => 65536,
        CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 65536,
        CU_DEVICE_ATTRIBUTE_ECC_ENABLED => 0,
        CU_DEVICE_ATTRIBUTE_TCC_DRIVER => 0,
        CU_DEVICE_ATTRIBUTE_COMPUTE_MODE => 0,
        _ => return None,
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> CUresult {
    status(
        "cuDeviceGetAttribute",
        (|| {
            check_device(dev)?;
            let v = attribute(attrib).ok_or_else(|| {
                crate::EmuError::driver(
                    CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    format!("{attrib:?} is not emulated"),
                )
            })?;
            // SAFETY: forwarded from the caller's out-pointer.
            unsafe { put(pi, v, "value") }
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    status(
        "cuDevicePrimaryCtxRetain",
        check_device(dev).and_then(|_| unsafe { put(pctx, ctx_handle(dev), "pctx") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    status("cuDevicePrimaryCtxRelease", check_device(dev))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    CURRENT.with(|c| c.set(ctx as usize));
    CUresult::CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    let cur = CURRENT.with(|c| c.get());
    status("cuCtxGetCurrent", unsafe { put(pctx, cur as CUcontext, "pctx") })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    CURRENT.with(|c| c.set(ctx as usize));
    CUresult::CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    let cur = CURRENT.with(|c| c.replace(0));
    if !pctx.is_null() {
        // SAFETY: non-null out-pointer from the caller.
        unsafe { pctx.write(cur as CUcontext) };
    }
    CUresult::CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    counters::host_wait("cuCtxSynchronize");
    status("cuCtxSynchronize", stream::run_everything())
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CUresult {
    for p in [least, greatest] {
        if !p.is_null() {
            // SAFETY: non-null out-pointer from the caller.
            unsafe { p.write(0) };
        }
    }
    CUresult::CUDA_SUCCESS
}

fn error_text(code: CUresult) -> (&'static [u8], &'static [u8]) {
    match code {
        CUresult::CUDA_SUCCESS => (b"CUDA_SUCCESS\0", b"no error\0"),
        CUresult::CUDA_ERROR_INVALID_VALUE => (b"CUDA_ERROR_INVALID_VALUE\0", b"invalid argument\0"),
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => (b"CUDA_ERROR_OUT_OF_MEMORY\0", b"out of memory\0"),
        CUresult::CUDA_ERROR_INVALID_HANDLE => (b"CUDA_ERROR_INVALID_HANDLE\0", b"invalid resource handle\0"),
        CUresult::CUDA_ERROR_NOT_FOUND => (b"CUDA_ERROR_NOT_FOUND\0", b"named symbol not found\0"),
        CUresult::CUDA_ERROR_NOT_READY => (b"CUDA_ERROR_NOT_READY\0", b"device not ready\0"),
        CUresult::CUDA_ERROR_LAUNCH_FAILED => {
            (b"CUDA_ERROR_LAUNCH_FAILED\0", b"unspecified launch failure\0")
        }
        CUresult::CUDA_ERROR_NOT_SUPPORTED => (b"CUDA_ERROR_NOT_SUPPORTED\0", b"operation not supported\0"),
        CUresult::CUDA_ERROR_INVALID_IMAGE => {
            (b"CUDA_ERROR_INVALID_IMAGE\0", b"device kernel image is invalid\0")
        }
        CUresult::CUDA_ERROR_INVALID_DEVICE => (b"CUDA_ERROR_INVALID_DEVICE\0", b"invalid device ordinal\0"),
        CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => {
            (b"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0", b"too many resources requested for launch\0")
        }
        _ => (b"CUDA_ERROR_UNKNOWN\0", b"unknown error (moco-emu)\0"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(code: CUresult, out: *mut *const c_char) -> CUresult {
    status("cuGetErrorName", unsafe { put(out, error_text(code).0.as_ptr().cast(), "pStr") })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(code: CUresult, out: *mut *const c_char) -> CUresult {
    status("cuGetErrorString", unsafe { put(out, error_text(code).1.as_ptr().cast(), "pStr") })
}

/// NVRTC dlopen()s libcuda.so.1 and asks for the driver's private export tables; the
/// emulator has none, and says so (NVRTC then compiles without them).
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(
    table: *mut *const std::ffi::c_void,
    _id: *const CUuuid,
) -> CUresult {
    if !table.is_null() {
        // SAFETY: non-null out-pointer from the caller.
        unsafe { table.write(std::ptr::null()) };
    }
    CUresult::CUDA_ERROR_NOT_FOUND
}
