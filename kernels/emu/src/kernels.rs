//! Host twins of the `.cu` kernels: every `extern "C" __global__` entry of kernels/cu/*.cu,
//! compiled unmodified for the host by build.rs with the shim headers and the scheduler in
//! `cxx/`.
//!
//! Contract used by `driver/launch.rs`:
//! - `find(name)`: the twin of an `extern "C" __global__` entry, by its exact name.
//! - `params(twin)`: (size in bytes, is a pointer) of each parameter, in order.
//! - `run(twin, grid, block, dynamic_shared, params)`: runs the whole grid; `params[i]` points
//!   at the value of parameter i (the layout of cuLaunchKernel's kernelParams).
//!
//! How a grid runs (cxx/runtime.cpp): blocks one after another on the calling thread. In each
//! block thread 0 runs first as a fiber; if it finishes without reaching a barrier, shuffle or
//! vote, the other threads run as plain calls in a loop (most kernels never synchronise, and
//! this path costs a function call per CUDA thread). Otherwise every thread of the block runs
//! as a fiber, switched round-robin at each barrier; `__shared__` variables are C++ statics,
//! which is exactly one block's shared memory since blocks never overlap. A thread that
//! synchronises in plain-call mode (thread 0 did not) is a divergent barrier: an error, as is
//! a block whose threads wait at barriers that cannot complete.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub size: usize,
    pub is_pointer: bool,
}

/// Mirrors `moco_emu::Twin` in cxx/twin.h.
#[repr(C)]
struct Twin {
    name: *const c_char,
    nparams: usize,
    sizes: *const usize,
    pointers: *const u8,
    // Function pointers used only by the C++ scheduler.
    _call: *const c_void,
    _loop: *const c_void,
}

extern "C" {
    fn moco_emu_twin_at(i: c_ulong) -> *const Twin;
    fn moco_emu_run(
        twin: *const Twin,
        grid: *const c_uint,
        block: *const c_uint,
        params: *const *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// One twin as Rust sees it; `ptr` points into the C++ tables, which are constant data.
struct Entry {
    name: String,
    params: Vec<Param>,
    ptr: *const Twin,
}

struct Table {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

// SAFETY: the Twin pointers refer to immutable static tables of the C++ side.
unsafe impl Send for Table {}
// SAFETY: as above; nothing in a Table is ever written after it is built.
unsafe impl Sync for Table {}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut entries = Vec::new();
        loop {
            // SAFETY: moco_emu_twin_at takes any index and returns null past the last twin.
            let ptr = unsafe { moco_emu_twin_at(entries.len() as c_ulong) };
            if ptr.is_null() {
                break;
            }
            // SAFETY: ptr points at a static Twin whose name is a NUL-terminated literal and
            // whose sizes/pointers arrays hold nparams elements (cxx/twin.h).
            let entry = unsafe {
                let t = &*ptr;
                let params = (0..t.nparams)
                    .map(|i| Param { size: *t.sizes.add(i), is_pointer: *t.pointers.add(i) != 0 })
                    .collect();
                Entry { name: CStr::from_ptr(t.name).to_string_lossy().into_owned(), params, ptr }
            };
            entries.push(entry);
        }
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Table { entries, by_name }
    })
}

pub fn find(name: &str) -> Option<usize> {
    table().by_name.get(name).copied()
}

pub fn names() -> Vec<String> {
    table().entries.iter().map(|e| e.name.clone()).collect()
}

pub fn params(twin: usize) -> Vec<Param> {
    table().entries.get(twin).map(|e| e.params.clone()).unwrap_or_default()
}

/// Serialises grids: the scheduler's state, the thread coordinates and every `__shared__`
/// static are process-wide (the stream's EXEC lock already serialises the driver's calls;
/// this also covers direct callers such as tests running in parallel).
static RUN: Mutex<()> = Mutex::new(());

/// # Safety
/// `params` must hold one valid pointer per parameter of the twin, to a value of its type,
/// and every pointer parameter must point at memory the kernel may access.
pub unsafe fn run(
    twin: usize,
    grid: [u32; 3],
    block: [u32; 3],
    // No kernel declares `extern __shared__` memory (the shim maps `__shared__` to `static`,
    // which cannot express it), so the dynamic size has nothing to size.
    _dynamic_shared: u32,
    params: &[*mut c_void],
) -> std::result::Result<(), String> {
    let entry = table().entries.get(twin).ok_or_else(|| format!("no host twin with index {twin}"))?;
    if params.len() != entry.params.len() {
        return Err(format!(
            "{}: {} parameters given, the kernel takes {}",
            entry.name,
            params.len(),
            entry.params.len()
        ));
    }
    let threads = block.iter().map(|&b| u64::from(b)).product::<u64>();
    if grid.contains(&0) || threads == 0 || threads > 1024 {
        return Err(format!("{}: grid {grid:?} / block {block:?} cannot run", entry.name));
    }
    let mut err = [0 as c_char; 512];
    let _serial = RUN.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: entry.ptr is a static twin; grid and block are 3 elements; params holds one
    // pointer per parameter (checked above; their targets are the caller's promise); err is
    // writable for its length and the C++ side NUL-terminates what it writes.
    let rc = unsafe {
        moco_emu_run(entry.ptr, grid.as_ptr(), block.as_ptr(), params.as_ptr(), err.as_mut_ptr(), err.len())
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: snprintf wrote a NUL-terminated string into err.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    Err(format!("{}: {msg}", entry.name))
}
