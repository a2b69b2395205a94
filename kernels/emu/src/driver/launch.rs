//! `cuLaunchKernel`: the checks a launch gets on a GPU (block and grid limits, shared memory,
//! a parameter layout the kernel understands), then the kernel's host twin queued on the
//! stream with a copy of the parameter values (the driver copies them at launch, so the
//! caller may reuse its argument storage at once).

use super::module_api::function;
use super::{invalid, status};
use crate::device::{MAX_BLOCK_DIM, MAX_GRID_DIM, MAX_THREADS_PER_BLOCK};
use crate::error::{EmuError, Result};
use crate::memory::{self, Kind};
use crate::{counters, kernels, stream};
use cudarc::driver::sys::{CUfunction, CUresult, CUstream};
use std::ffi::{c_uint, c_void};

/// Parameter values copied at launch, each at an offset aligned for its size.
struct Packed {
    bytes: Vec<u64>,
    offsets: Vec<usize>,
}

// SAFETY: the packed values are plain bytes (pointer parameters are device addresses, i.e.
// numbers, until the kernel runs).
unsafe impl Send for Packed {}

unsafe fn pack(name: &str, params: &[kernels::Param], values: *mut *mut c_void) -> Result<Packed> {
    if !params.is_empty() && values.is_null() {
        return Err(invalid(format!(
            "{name}: kernelParams is null but the kernel takes {} parameters",
            params.len()
        )));
    }
    let mut offsets = Vec::with_capacity(params.len());
    let mut at = 0usize;
    for p in params {
        let align = p.size.clamp(1, 8).next_power_of_two();
        at = at.div_ceil(align) * align;
        offsets.push(at);
        at += p.size;
    }
    let mut bytes = vec![0u64; at.div_ceil(8)];
    let base = bytes.as_mut_ptr().cast::<u8>();
    for (i, p) in params.iter().enumerate() {
        // SAFETY: the caller passes one pointer per kernel parameter (cuLaunchKernel's contract).
        let src = unsafe { *values.add(i) };
        if src.is_null() {
            return Err(invalid(format!("{name}: kernelParams[{i}] is null")));
        }
        // SAFETY: src points at a value of the parameter's type (size p.size); the destination
        // lies inside `bytes` by construction of the offsets.
        unsafe { std::ptr::copy_nonoverlapping(src.cast::<u8>(), base.add(offsets[i]), p.size) };
        if p.is_pointer {
            // SAFETY: a pointer parameter is 8 bytes, just copied into an 8-aligned slot.
            let addr = unsafe { base.add(offsets[i]).cast::<usize>().read() };
            // A kernel may take a null pointer for an unused input; any other pointer must be
            // device (or pinned, mapped) memory, or the GPU would fault on it.
            if addr != 0
                && !matches!(memory::find(addr), Some(r) if r.kind == Kind::Device || r.kind == Kind::Pinned)
            {
                return Err(EmuError::driver(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    format!("{name}: parameter {i} ({addr:#x}) is not in any live device allocation"),
                ));
            }
        }
    }
    Ok(Packed { bytes, offsets })
}

fn check_dims(name: &str, grid: [u32; 3], block: [u32; 3]) -> Result<()> {
    if grid.contains(&0) || block.contains(&0) {
        return Err(invalid(format!("{name}: a grid or block dimension is 0 ({grid:?}, {block:?})")));
    }
    for d in 0..3 {
        if block[d] > MAX_BLOCK_DIM[d] || grid[d] > MAX_GRID_DIM[d] {
            return Err(invalid(format!("{name}: grid {grid:?} / block {block:?} exceed the device limits")));
        }
    }
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    if threads > MAX_THREADS_PER_BLOCK as u64 {
        return Err(invalid(format!("{name}: {threads} threads per block (limit 1024)")));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    s: CUstream,
    values: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    status(
        "cuLaunchKernel",
        (|| {
            let func = function(f)?;
            let (grid, block) = ([gx, gy, gz], [bx, by, bz]);
            check_dims(&func.name, grid, block)?;
            if shared as usize > func.max_dynamic_shared {
                return Err(EmuError::driver(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    format!(
                        "{}: {shared} bytes of dynamic shared memory + {} static exceed the per-block limit",
                        func.name, func.static_shared
                    ),
                ));
            }
            if !extra.is_null() {
                return Err(EmuError::driver(
                    CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    "the `extra` launch form is not emulated",
                ));
            }
            let params = kernels::params(func.twin);
            // SAFETY: cuLaunchKernel's contract: one value pointer per parameter.
            let packed = unsafe { pack(&func.name, &params, values)? };
            counters::launch(&func.name);
            let twin = func.twin;
            let label = format!("kernel {} <<<{grid:?}, {block:?}>>>", func.name);
            stream::enqueue(
                stream::stream_id(s as usize),
                label,
                Box::new(move || {
                    let mut packed = packed;
                    let base = packed.bytes.as_mut_ptr().cast::<u8>();
                    // SAFETY: the offsets lie inside `bytes` (see pack).
                    let ptrs: Vec<*mut c_void> =
                        packed.offsets.iter().map(|&o| unsafe { base.add(o) }.cast::<c_void>()).collect();
                    // SAFETY: ptrs holds one pointer per parameter, to a copy of the caller's value;
                    // pointer parameters were checked to be device memory at launch.
                    unsafe { kernels::run(twin, grid, block, shared, &ptrs) }
                }),
            )
            .map(|_| ())
        })(),
    )
}
