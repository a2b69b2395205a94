//! The stand-in `libcuda`: the driver API functions cudarc calls, one file per area.
//! Each function checks its arguments as the real driver documents, prints why it refuses a
//! call (the real driver only returns a code; a test log needs the reason), and returns the
//! code the real driver would.

pub mod context;
pub mod launch;
pub mod memory_api;
pub mod module_api;
pub mod stream_api;

use crate::error::{report, EmuError};
use cudarc::driver::sys::CUresult;

/// Converts a result into the driver's status code, printing refusals.
pub(crate) fn status(api: &str, r: crate::error::Result<()>) -> CUresult {
    match r {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(e) => {
            report(api, &e);
            e.code()
        }
    }
}

/// An invalid-value error for a null out-pointer or similar.
pub(crate) fn invalid(msg: impl Into<String>) -> EmuError {
    EmuError::driver(CUresult::CUDA_ERROR_INVALID_VALUE, msg)
}

/// Writes `value` through an out-pointer, refusing null.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> crate::error::Result<()> {
    if out.is_null() {
        return Err(invalid(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and valid for writes per the caller's promise.
    unsafe { out.write(value) };
    Ok(())
}
