//! Host twins of the `.cu` kernels (STUB: the C++ runtime under cxx/ and build.rs provide
//! them; see the contract below).
//!
//! Contract used by `driver/launch.rs`:
//! - `find(name)`: the twin of an `extern "C" __global__` entry, by its exact name.
//! - `params(twin)`: (size in bytes, is a pointer) of each parameter, in order.
//! - `run(twin, grid, block, dynamic_shared, params)`: runs the whole grid; `params[i]` points
//!   at the value of parameter i (the layout of cuLaunchKernel's kernelParams).

use std::ffi::c_void;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub size: usize,
    pub is_pointer: bool,
}

pub fn find(_name: &str) -> Option<usize> {
    None
}

pub fn names() -> Vec<String> {
    Vec::new()
}

pub fn params(_twin: usize) -> Vec<Param> {
    Vec::new()
}

/// # Safety
/// `params` must hold one valid pointer per parameter of the twin, to a value of its type,
/// and every pointer parameter must point at memory the kernel may access.
pub unsafe fn run(
    _twin: usize,
    _grid: [u32; 3],
    _block: [u32; 3],
    _dynamic_shared: u32,
    _params: &[*mut c_void],
) -> std::result::Result<(), String> {
    Err("host twins are not built yet".into())
}
