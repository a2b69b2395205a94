//! The stand-in driver's promises, through its exported C functions: work runs when the host
//! waits, not when queued; copies from pinned memory read their source when they run, from
//! pageable memory when queued; a device-to-host copy into pinned memory lands only at the
//! wait; an out-of-bounds kernel access is reported with the kernel's name.

use cudarc::driver::sys::{CUdeviceptr, CUfunction, CUmodule, CUresult, CUstream};
use moco_emu::driver::{context::*, launch::*, memory_api::*, module_api::*, stream_api::*};
use std::ffi::c_void;
use std::process::Command;

fn ok(r: CUresult) {
    assert_eq!(r, CUresult::CUDA_SUCCESS);
}

fn stream() -> CUstream {
    let mut s: CUstream = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuStreamCreate(&mut s, 0) });
    s
}

fn alloc(bytes: usize) -> CUdeviceptr {
    let mut d: CUdeviceptr = 0;
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemAlloc_v2(&mut d, bytes) });
    d
}

fn pinned(bytes: usize) -> *mut u8 {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemHostAlloc(&mut p, bytes, 0) });
    p.cast()
}

#[test]
fn a_device_to_host_result_is_stale_until_the_host_waits() {
    // SAFETY: every pointer below is a live allocation of the stated size.
    unsafe {
        ok(cuInit(0));
        let s = stream();
        let d = alloc(16);
        ok(cuMemsetD8Async(d, 7, 16, s));
        let host = pinned(16);
        std::ptr::write_bytes(host, 1, 16);
        ok(cuMemcpyDtoHAsync_v2(host.cast(), d, 16, s));
        assert_eq!(*host, 1, "nothing has run: the pinned buffer still holds its old bytes");
        ok(cuStreamSynchronize(s));
        assert_eq!(
            std::slice::from_raw_parts(host, 16),
            &[7u8; 16][..],
            "the wait ran the memset and the copy"
        );

        // Into pageable memory the copy is synchronous, as CUDA documents.
        ok(cuMemsetD8Async(d, 9, 16, s));
        let mut pageable = [0u8; 16];
        ok(cuMemcpyDtoHAsync_v2(pageable.as_mut_ptr().cast(), d, 16, s));
        assert_eq!(pageable, [9u8; 16]);
        ok(cuMemFree_v2(d));
        ok(cuMemFreeHost(host.cast()));
    }
}

#[test]
fn pinned_sources_are_read_when_the_copy_runs_and_pageable_ones_when_queued() {
    // SAFETY: every pointer below is a live allocation of the stated size.
    unsafe {
        ok(cuInit(0));
        let s = stream();
        let (d1, d2) = (alloc(4), alloc(4));
        let staging = pinned(4);
        std::ptr::copy_nonoverlapping([1u8, 2, 3, 4].as_ptr(), staging, 4);
        ok(cuMemcpyHtoDAsync_v2(d1, staging.cast(), 4, s));
        let mut pageable = [1u8, 2, 3, 4];
        ok(cuMemcpyHtoDAsync_v2(d2, pageable.as_ptr().cast(), 4, s));
        // Reused before the copies ran: a bug on a GPU for the pinned buffer only.
        std::ptr::write_bytes(staging, 0xEE, 4);
        pageable.fill(0xEE);
        ok(cuStreamSynchronize(s));
        let (mut got1, mut got2) = ([0u8; 4], [0u8; 4]);
        ok(cuMemcpyDtoH_v2(got1.as_mut_ptr().cast(), d1, 4));
        ok(cuMemcpyDtoH_v2(got2.as_mut_ptr().cast(), d2, 4));
        assert_eq!(got1, [0xEE; 4], "the pinned source was read when the copy ran");
        assert_eq!(got2, [1, 2, 3, 4], "the pageable source was staged when the copy was queued");
    }
}

#[test]
fn copies_outside_device_memory_are_refused() {
    // SAFETY: the refused calls touch nothing; the rest are live allocations.
    unsafe {
        ok(cuInit(0));
        let d = alloc(8);
        let host = [0u8; 16];
        assert_eq!(cuMemcpyHtoD_v2(d, host.as_ptr().cast(), 16), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(
            cuMemcpyHtoD_v2(d + 4096 * 16, host.as_ptr().cast(), 4),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        ok(cuMemFree_v2(d));
        assert_eq!(cuMemFree_v2(d), CUresult::CUDA_ERROR_INVALID_VALUE, "a double free is refused");
    }
}

/// Child role: a real kernel twin (relu over n floats) launched on a buffer shorter than n.
fn overrun_child() {
    // SAFETY: the launch deliberately overruns `d`; the emulator must catch it.
    unsafe {
        ok(cuInit(0));
        let ptx = b".version 9.0\n.target sm_86\n.visible .entry relu_inplace_f32(\n.param .u32 n,\n.param .u64 x\n)\n{\n}\n\0";
        let mut m: CUmodule = std::ptr::null_mut();
        ok(cuModuleLoadData(&mut m, ptx.as_ptr().cast()));
        let mut f: CUfunction = std::ptr::null_mut();
        ok(cuModuleGetFunction(&mut f, m, c"relu_inplace_f32".as_ptr()));
        let d = alloc(1000 * 4);
        let mut n: i32 = 1001;
        let mut x = d;
        let mut params =
            [(&mut n as *mut i32).cast::<c_void>(), (&mut x as *mut CUdeviceptr).cast::<c_void>()];
        ok(cuLaunchKernel(
            f,
            1,
            1,
            1,
            256,
            1,
            1,
            0,
            std::ptr::null_mut(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        ));
        ok(cuCtxSynchronize());
    }
    println!("the overrun was not caught");
}

#[test]
fn an_out_of_bounds_kernel_access_names_the_kernel() {
    if std::env::var_os("MOCO_EMU_TEST_CHILD").is_some() {
        return overrun_child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "an_out_of_bounds_kernel_access_names_the_kernel", "--nocapture"])
        .env("MOCO_EMU_TEST_CHILD", "1")
        .output()
        .expect("the test binary runs again as a child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(moco_emu::fault::FAULT_EXIT), "stderr:\n{stderr}");
    assert!(
        stderr.contains("invalid device memory access in kernel relu_inplace_f32")
            && stderr.contains("0 bytes past the end of a 4000-byte allocation"),
        "the report names the kernel and the overrun:\n{stderr}"
    );
}
