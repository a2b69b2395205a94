//! One rank of a multi-process NCCL test (`tests/nccl.rs` starts several): joins a
//! communicator through the emulator's NCCL entry points and plays a scenario.
//!
//! Usage: `nccl_rank SCENARIO RANK NRANKS`. Rank 0 makes the id and prints `id HEX` on stdout;
//! the others read it from `MOCO_EMU_NCCL_ID`. Exit status 0: the scenario's checks held (a
//! failed check panics, status 101). Not part of the product: a test helper of moco-emu.

use cudarc::driver::sys::{CUdeviceptr, CUstream};
use cudarc::nccl::sys::{ncclComm_t, ncclResult_t, ncclUniqueId};
use half::f16;
use moco_emu::driver::memory_api::{cuMemAlloc_v2, cuMemcpyDtoH_v2, cuMemcpyHtoDAsync_v2};
use moco_emu::driver::stream_api::cuStreamCreate;
use moco_emu::nccl::{api, collectives};
use std::ffi::{c_void, CStr};
use std::io::Write;
use std::time::{Duration, Instant};

const F16: u32 = 6;
const F32: u32 = 7;
const U8: u32 = 1;
const I32: u32 = 2;
const SUM: u32 = 0;
const MAX: u32 = 2;

struct Rank {
    rank: usize,
    n: usize,
    comm: ncclComm_t,
    stream: CUstream,
}

fn last_error() -> String {
    // SAFETY: ncclGetLastError returns a NUL-terminated static buffer.
    unsafe { CStr::from_ptr(api::ncclGetLastError(std::ptr::null_mut())) }.to_string_lossy().into_owned()
}

fn alloc(bytes: usize) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: writes one pointer to a local.
    assert_eq!(unsafe { cuMemAlloc_v2(&mut p, bytes) } as u32, 0);
    p
}

/// Uploads on the rank's stream, asynchronously: the bytes land only when the stream runs,
/// so a collective that did not run its stream first would see zeros.
fn upload<T: Copy>(r: &Rank, data: &[T]) -> CUdeviceptr {
    let bytes = std::mem::size_of_val(data);
    let p = alloc(bytes.max(1));
    // SAFETY: `data` is `bytes` readable bytes; `p` a device allocation of that size.
    assert_eq!(unsafe { cuMemcpyHtoDAsync_v2(p, data.as_ptr().cast(), bytes, r.stream) } as u32, 0);
    p
}

fn download<T: Copy + Default>(p: CUdeviceptr, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    // SAFETY: `out` has room for n elements; `p` holds at least that many bytes.
    let rc = unsafe { cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), p, std::mem::size_of_val(out.as_slice())) };
    assert_eq!(rc as u32, 0);
    out
}

fn ptr(p: CUdeviceptr) -> *mut c_void {
    p as *mut c_void
}

fn ok(rc: ncclResult_t, what: &str) {
    assert_eq!(rc, ncclResult_t::ncclSuccess, "{what}: {}", last_error());
}

/// A value whose magnitude depends on (rank, i), so that sums of three ranks round
/// differently in different orders.
fn value(rank: usize, i: usize) -> f32 {
    let mag = [1e-3f32, 1.0, 1e4, 3e7][(i + rank) % 4];
    // (A match, not `is_multiple_of`, which is newer than the workspace's rust-version.)
    let sign = match (i * 7 + rank) % 3 {
        0 => -1.0,
        _ => 1.0,
    };
    sign * mag * (1.0 + ((rank * 7919 + i * 104729) % 1000) as f32 / 1000.0)
}

fn join(rank: usize, n: usize) -> Rank {
    let id = if rank == 0 {
        let mut id = ncclUniqueId { internal: [0; 128] };
        // SAFETY: writes one id to a local.
        ok(unsafe { api::ncclGetUniqueId(&mut id) }, "ncclGetUniqueId");
        let hex: String = id.internal.iter().map(|b| format!("{:02x}", *b as u8)).collect();
        println!("id {hex}");
        std::io::stdout().flush().unwrap();
        id
    } else {
        let hex = std::env::var("MOCO_EMU_NCCL_ID").expect("MOCO_EMU_NCCL_ID");
        let mut id = ncclUniqueId { internal: [0; 128] };
        for (i, d) in id.internal.iter_mut().enumerate() {
            *d = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap() as _;
        }
        id
    };
    let mut comm = std::ptr::null_mut();
    // SAFETY: writes one handle to a local.
    ok(unsafe { api::ncclCommInitRank(&mut comm, n as i32, id, rank as i32) }, "ncclCommInitRank");
    let mut stream = std::ptr::null_mut();
    // SAFETY: writes one handle to a local.
    assert_eq!(unsafe { cuStreamCreate(&mut stream, 0) } as u32, 0);
    Rank { rank, n, comm, stream }
}

fn all_reduce(
    r: &Rank,
    send: CUdeviceptr,
    recv: CUdeviceptr,
    count: usize,
    dt: u32,
    op: u32,
) -> ncclResult_t {
    // SAFETY: the buffers are device allocations of `count` elements of `dt`.
    unsafe { collectives::ncclAllReduce(ptr(send), ptr(recv), count, dt, op, r.comm, r.stream as _) }
}

fn collectives_scenario(r: &Rank) {
    let (rank, n) = (r.rank, r.n);
    // f32 sum, bit-exact against the rank-order fold.
    let count = 1001;
    let mine: Vec<f32> = (0..count).map(|i| value(rank, i)).collect();
    let send = upload(r, &mine);
    let recv = alloc(count * 4);
    ok(all_reduce(r, send, recv, count, F32, SUM), "ncclAllReduce f32");
    let got: Vec<f32> = download(recv, count);
    let mut order_sensitive = 0;
    for (i, g) in got.iter().enumerate() {
        let want = (1..n).fold(value(0, i), |acc, q| acc + value(q, i));
        let backwards = (0..n - 1).rev().fold(value(n - 1, i), |acc, q| acc + value(q, i));
        assert_eq!(g.to_bits(), want.to_bits(), "element {i}: got {g}, rank-order sum {want}");
        order_sensitive += (backwards.to_bits() != want.to_bits()) as usize;
    }
    if n >= 3 {
        assert!(order_sensitive > 0, "the inputs must tell summation orders apart");
    }
    // In place: the same again on the send buffer.
    ok(all_reduce(r, send, send, count, F32, SUM), "in-place ncclAllReduce f32");
    assert_eq!(download::<f32>(send, count), got);

    // f16 sums round in f16 at every step.
    let h: Vec<f16> = (0..7).map(|i| f16::from_f32(value(rank, i) / 1e4)).collect();
    let hp = upload(r, &h);
    ok(all_reduce(r, hp, hp, 7, F16, SUM), "ncclAllReduce f16");
    let got: Vec<u16> = download(hp, 7);
    for (i, g) in got.iter().enumerate() {
        let want = (1..n).fold(f16::from_f32(value(0, i) / 1e4), |a, q| a + f16::from_f32(value(q, i) / 1e4));
        assert_eq!(*g, want.to_bits(), "f16 element {i}");
    }

    // i32 max (the project's inf/NaN flag pattern).
    let flags: Vec<i32> = (0..5).map(|i| if i == rank { 7 } else { -(i as i32) }).collect();
    let fp = upload(r, &flags);
    ok(all_reduce(r, fp, fp, 5, I32, MAX), "ncclAllReduce i32 max");
    let want: Vec<i32> = (0..5).map(|i| if i < n { 7 } else { -(i as i32) }).collect();
    assert_eq!(download::<i32>(fp, 5), want);

    // All-gather f32 (13 per rank), f16 and u8 in place (7 per rank).
    let part: Vec<f32> = (0..13).map(|i| value(rank, i)).collect();
    let sp = upload(r, &part);
    let gp = alloc(13 * n * 4);
    // SAFETY: device buffers of 13 and 13 x n floats.
    ok(
        unsafe { collectives::ncclAllGather(ptr(sp), ptr(gp), 13, F32, r.comm, r.stream as _) },
        "ncclAllGather",
    );
    let want: Vec<u32> = (0..n).flat_map(|q| (0..13).map(move |i| value(q, i).to_bits())).collect();
    assert_eq!(download::<u32>(gp, 13 * n), want);
    let h: Vec<f16> = (0..5).map(|i| f16::from_f32((rank * 10 + i) as f32)).collect();
    let hs = upload(r, &h);
    let hg = alloc(5 * n * 2);
    // SAFETY: device buffers of 5 and 5 x n halves.
    ok(unsafe { collectives::ncclAllGather(ptr(hs), ptr(hg), 5, F16, r.comm, r.stream as _) }, "f16 gather");
    let want: Vec<f32> = (0..n).flat_map(|q| (0..5).map(move |i| (q * 10 + i) as f32)).collect();
    assert_eq!(download::<f16>(hg, 5 * n).iter().map(|x| x.to_f32()).collect::<Vec<_>>(), want);
    let mut bytes = vec![0u8; 7 * n];
    for (i, b) in bytes[rank * 7..rank * 7 + 7].iter_mut().enumerate() {
        *b = (rank * 16 + i) as u8;
    }
    let bp = upload(r, &bytes);
    let mine = bp + (rank * 7) as CUdeviceptr;
    // SAFETY: in place: the send part lies inside the receive buffer, as NCCL allows.
    ok(unsafe { collectives::ncclAllGather(ptr(mine), ptr(bp), 7, U8, r.comm, r.stream as _) }, "u8 gather");
    let want: Vec<u8> = (0..n).flat_map(|q| (0..7).map(move |i| (q * 16 + i) as u8)).collect();
    assert_eq!(download::<u8>(bp, 7 * n), want);

    // Reduce-scatter f32: 333 per rank.
    let rc = 333;
    let full: Vec<f32> = (0..rc * n).map(|i| value(rank, i)).collect();
    let fs = upload(r, &full);
    let fr = alloc(rc * 4);
    // SAFETY: device buffers of 333 x n and 333 floats.
    ok(
        unsafe { collectives::ncclReduceScatter(ptr(fs), ptr(fr), rc, F32, SUM, r.comm, r.stream as _) },
        "ncclReduceScatter",
    );
    let want: Vec<u32> = (rank * rc..(rank + 1) * rc)
        .map(|i| (1..n).fold(value(0, i), |a, q| a + value(q, i)).to_bits())
        .collect();
    assert_eq!(download::<u32>(fr, rc), want);

    // Broadcast from the last rank (separate buffers, non-roots pass no send buffer), then the
    // legacy in-place ncclBcast of 7 bytes from rank 0.
    let root = n - 1;
    let bc = 1001;
    let src = if rank == root { upload(r, &(0..bc).map(|i| value(root, i)).collect::<Vec<_>>()) } else { 0 };
    let dst = alloc(bc * 4);
    // SAFETY: device buffers of 1001 floats (the send buffer on the root only).
    ok(
        unsafe {
            collectives::ncclBroadcast(ptr(src), ptr(dst), bc, F32, root as i32, r.comm, r.stream as _)
        },
        "ncclBroadcast",
    );
    assert_eq!(download::<u32>(dst, bc), (0..bc).map(|i| value(root, i).to_bits()).collect::<Vec<_>>());
    let b7 = upload(r, &[(rank as u8 + 1) * 11; 7]);
    // SAFETY: a device buffer of 7 bytes.
    ok(unsafe { collectives::ncclBcast(ptr(b7), 7, U8, 0, r.comm, r.stream as _) }, "ncclBcast");
    assert_eq!(download::<u8>(b7, 7), vec![11; 7]);

    // Queries and counters.
    let (mut count, mut me, mut dev, mut ver) = (0, 0, -1, 0);
    // SAFETY: each writes one int to a local.
    unsafe {
        ok(api::ncclCommCount(r.comm, &mut count), "count");
        ok(api::ncclCommUserRank(r.comm, &mut me), "rank");
        ok(api::ncclCommCuDevice(r.comm, &mut dev), "device");
        ok(api::ncclGetVersion(&mut ver), "version");
    }
    assert_eq!((count as usize, me as usize, dev, ver), (n, rank, 0, 23000));
    let calls = moco_emu::counters::with(|c| c.nccl.clone());
    assert_eq!(calls.get("ncclAllReduce"), Some(&4), "{calls:?}");
    assert_eq!(calls.get("ncclAllGather"), Some(&3), "{calls:?}");
    let bytes = moco_emu::counters::with(|c| c.nccl_bytes);
    let want = (2 * 1001 * 4 + 7 * 2 + 5 * 4) + n * (13 * 4 + 5 * 2 + 7) + n * 333 * 4 + 1001 * 4 + 7;
    assert_eq!(bytes, want as u64);
    // SAFETY: a live communicator, destroyed once.
    ok(unsafe { api::ncclCommDestroy(r.comm) }, "ncclCommDestroy");
}

/// Every rank reduces once; then `DIE_RANK` exits 300 ms into the second all-reduce and
/// `LATE_RANK` (if set) calls it only after 1 s. The survivors must fail with an error that
/// names the cause, promptly.
fn die_scenario(r: &Rank) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let die = env("DIE_RANK").expect("DIE_RANK");
    let buf = upload(r, &[1.0f32; 9]);
    ok(all_reduce(r, buf, buf, 9, F32, SUM), "first ncclAllReduce");
    assert_eq!(download::<f32>(buf, 9), vec![r.n as f32; 9]);
    if r.rank == die {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            println!("dying");
            std::process::exit(0);
        });
    }
    if env("LATE_RANK") == Some(r.rank) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let t = Instant::now();
    let rc = all_reduce(r, buf, buf, 9, F32, SUM);
    let ms = t.elapsed().as_millis();
    assert_ne!(r.rank, die, "the dying rank's call must not return (got {rc:?})");
    println!("rc {rc:?} after {ms} ms: {}", last_error());
    assert!(matches!(rc, ncclResult_t::ncclRemoteError | ncclResult_t::ncclSystemError), "{rc:?}");
    // And every later call fails too, at once.
    let rc2 = all_reduce(r, buf, buf, 9, F32, SUM);
    assert_eq!(rc2, rc);
    let mut async_err = ncclResult_t::ncclSuccess;
    // SAFETY: writes one result to a local.
    ok(unsafe { api::ncclCommGetAsyncError(r.comm, &mut async_err) }, "ncclCommGetAsyncError");
    assert_eq!(async_err, rc);
    // SAFETY: a live (failed) communicator; destroying it must still succeed.
    ok(unsafe { api::ncclCommDestroy(r.comm) }, "ncclCommDestroy of a failed communicator");
}

/// Rank 1 calls 4 s late under MOCO_EMU_NCCL_TIMEOUT=2 (long enough for rank 1's process to
/// start and join on a busy machine): rank 0's call times out naming it; rank 1's late call
/// fails at once.
fn timeout_scenario(r: &Rank) {
    let buf = upload(r, &[1.0f32; 3]);
    if r.rank == 1 {
        std::thread::sleep(Duration::from_secs(4));
        // Between calls the hub's notice is already here.
        let mut async_err = ncclResult_t::ncclSuccess;
        // SAFETY: writes one result to a local.
        ok(unsafe { api::ncclCommGetAsyncError(r.comm, &mut async_err) }, "ncclCommGetAsyncError");
        assert_eq!(async_err, ncclResult_t::ncclSystemError);
    }
    let t = Instant::now();
    let rc = all_reduce(r, buf, buf, 3, F32, SUM);
    println!("rc {rc:?} after {} ms: {}", t.elapsed().as_millis(), last_error());
    assert_eq!(rc, ncclResult_t::ncclSystemError);
}

/// Rank 0 reduces 10 floats, rank 1 11: both fail, told how the calls differ.
fn mismatch_scenario(r: &Rank) {
    let count = 10 + r.rank;
    let buf = upload(r, &vec![1.0f32; count]);
    let rc = all_reduce(r, buf, buf, count, F32, SUM);
    println!("rc {rc:?}: {}", last_error());
    assert_eq!(rc, ncclResult_t::ncclInvalidUsage);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, scenario, rank, n] = args.as_slice() else {
        panic!("usage: nccl_rank SCENARIO RANK NRANKS");
    };
    let r = join(rank.parse().unwrap(), n.parse().unwrap());
    match scenario.as_str() {
        "collectives" => collectives_scenario(&r),
        "die" => die_scenario(&r),
        "timeout" => timeout_scenario(&r),
        "mismatch" => mismatch_scenario(&r),
        other => panic!("unknown scenario {other}"),
    }
    println!("ok");
}
