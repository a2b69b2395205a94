//! NCCL's error reporting: result codes with a reason, the process's last error text
//! (`ncclGetLastError`) and the fixed description of each code (`ncclGetErrorString`).

use cudarc::nccl::sys::ncclResult_t;
use std::ffi::c_char;
use std::sync::Mutex;

/// A refused or failed call: the code NCCL would return and why.
#[derive(Debug, Clone)]
pub struct Fail {
    pub code: ncclResult_t,
    pub msg: String,
}

impl Fail {
    pub fn new(code: ncclResult_t, msg: impl Into<String>) -> Self {
        Fail { code, msg: msg.into() }
    }

    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Fail::new(ncclResult_t::ncclInvalidArgument, msg)
    }

    pub fn invalid_usage(msg: impl Into<String>) -> Self {
        Fail::new(ncclResult_t::ncclInvalidUsage, msg)
    }

    pub fn remote(msg: impl Into<String>) -> Self {
        Fail::new(ncclResult_t::ncclRemoteError, msg)
    }

    pub fn system(msg: impl Into<String>) -> Self {
        Fail::new(ncclResult_t::ncclSystemError, msg)
    }
}

pub type Result<T> = std::result::Result<T, Fail>;

/// The result codes as they travel in the hub's failure notices (one byte).
pub fn code_to_byte(code: ncclResult_t) -> u8 {
    code as u32 as u8
}

pub fn code_from_byte(b: u8) -> ncclResult_t {
    match b {
        4 => ncclResult_t::ncclInvalidArgument,
        5 => ncclResult_t::ncclInvalidUsage,
        6 => ncclResult_t::ncclRemoteError,
        3 => ncclResult_t::ncclInternalError,
        1 => ncclResult_t::ncclUnhandledCudaError,
        _ => ncclResult_t::ncclSystemError,
    }
}

/// Room for the last error text, NUL included; NCCL keeps a fixed buffer of this size too.
const LAST_CAP: usize = 1024;

/// The last error of this process. A fixed static buffer, because `ncclGetLastError` hands
/// out a pointer that must stay valid after the call (NCCL: until the next NCCL call).
static LAST: Mutex<[u8; LAST_CAP]> = Mutex::new([0; LAST_CAP]);

/// Remembers `msg` as the process's last error (truncated to fit, at a character boundary).
pub fn set_last(msg: &str) {
    let mut buf = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = msg.len().min(LAST_CAP - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
    buf[n] = 0;
}

/// The last error text, as a pointer into the static buffer.
pub fn last_ptr() -> *const c_char {
    let buf = LAST.lock().unwrap_or_else(|p| p.into_inner());
    // The buffer is a static: the pointer outlives the guard. A later error overwrites the
    // text, as with NCCL's own buffer.
    buf.as_ptr().cast::<c_char>()
}

/// Converts a result into NCCL's status, printing and remembering a failure: the real library
/// only logs under NCCL_DEBUG, but a test log needs the reason.
pub fn status(api: &str, r: Result<()>) -> ncclResult_t {
    match r {
        Ok(()) => ncclResult_t::ncclSuccess,
        Err(f) => {
            eprintln!("moco-emu: {api}: {}", f.msg);
            set_last(&format!("{api}: {}", f.msg));
            f.code
        }
    }
}

/// NCCL's fixed description of a code (as in NCCL 2.30, with the emulator's log pointer).
pub fn describe(code: u32) -> &'static [u8] {
    match code {
        0 => b"no error\0",
        1 => b"unhandled cuda error (see ncclGetLastError or the moco-emu lines on stderr)\0",
        2 => b"unhandled system error (see ncclGetLastError or the moco-emu lines on stderr)\0",
        3 => b"internal error - please report this issue to the NCCL developers\0",
        4 => b"invalid argument (see ncclGetLastError or the moco-emu lines on stderr)\0",
        5 => b"invalid usage (see ncclGetLastError or the moco-emu lines on stderr)\0",
        6 => b"remote process exited or there was a network error\0",
        7 => b"NCCL operation in progress\0",
        8 => b"NCCL operation timed out\0",
        _ => b"unknown result code\0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn the_last_error_is_truncated_at_a_character_boundary() {
        let long = "é".repeat(LAST_CAP);
        set_last(&long);
        // SAFETY: last_ptr points at the static NUL-terminated buffer.
        let text = unsafe { CStr::from_ptr(last_ptr()) }.to_str().unwrap().to_string();
        assert!(text.len() < LAST_CAP && text.len() > LAST_CAP - 3, "{}", text.len());
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn codes_survive_the_wire() {
        for code in [
            ncclResult_t::ncclInvalidArgument,
            ncclResult_t::ncclInvalidUsage,
            ncclResult_t::ncclRemoteError,
            ncclResult_t::ncclSystemError,
        ] {
            assert_eq!(code_from_byte(code_to_byte(code)), code);
        }
    }
}
