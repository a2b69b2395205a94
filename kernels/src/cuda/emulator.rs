//! Telling the emulated CUDA device (kernels/emu, used in tests and CI through
//! `LD_LIBRARY_PATH`) from a real driver, and reading its counters: host waits, bytes each
//! way, kernel launches and library calls so far in this process. A real libcuda has no
//! `mocoEmuCountersJson`, so on a GPU this returns `None` and costs one failed lookup.

use std::ffi::c_char;

type CountersFn = unsafe extern "C" fn(*mut c_char, usize) -> usize;

/// The emulator's counters as JSON, or `None` when libcuda is not loaded or is a real driver.
pub fn counters_json() -> Option<String> {
    // RTLD_NOLOAD: only look at the libcuda cudarc already loaded (by this name, its first
    // candidate); never load one.
    let flags = libc::RTLD_NOW | libc::RTLD_NOLOAD;
    // SAFETY: with RTLD_NOLOAD nothing new is loaded, so no initialiser runs; the handle only
    // adds a reference to a library that is already open.
    let lib = unsafe { libloading::os::unix::Library::open(Some("libcuda.so"), flags) }.ok()?;
    // SAFETY: the symbol, where it exists, is the emulator's, with exactly this signature.
    let f = unsafe { lib.get::<CountersFn>(b"mocoEmuCountersJson\0") }.ok()?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: buf has buf.len() writable bytes; the function writes at most that many.
        let full = unsafe { f(buf.as_mut_ptr().cast(), buf.len()) };
        if full < buf.len() {
            buf.truncate(full);
            return String::from_utf8(buf).ok();
        }
        buf = vec![0u8; full + 1];
    }
}

/// Whether this process's CUDA libraries are the emulated device.
pub fn is_emulated() -> bool {
    counters_json().is_some()
}
