//! The collective entry points. Each runs its stream up to now, exchanges through the hub
//! directly on the device buffers and returns when the result is in place (see the module
//! comment of `nccl` for why it does not wait for a host synchronisation).
//!
//! The `datatype` and `op` arguments are taken as `c_uint`: the same ABI as cudarc's
//! `repr(u32)` enums, but a value outside them (a custom reduction, an fp8 type) is refused
//! instead of being undefined behaviour in Rust.

use super::client::{self, Comm};
use super::errors::{status, Fail, Result};
use super::reduce::{DType, RedOp};
use super::wire::{Call, Op};
use crate::counters::{self, Lib};
use crate::{memory, stream};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclResult_t};
use std::ffi::{c_int, c_uint, c_void};

/// One call's arguments, as the C function got them.
struct Args {
    op: Op,
    count: usize,
    datatype: c_uint,
    redop: Option<c_uint>,
    root: Option<c_int>,
    send: usize,
    recv: usize,
}

fn run(api: &'static str, comm: ncclComm_t, s: cudaStream_t, a: Args) -> ncclResult_t {
    status(
        api,
        client::lookup(comm as usize).and_then(|c| {
            let r = collective(api, &c, s, &a);
            if let Err(f) = &r {
                // The other ranks wait for this one's part: fail them too (no-op if the
                // exchange itself failed, which already broke the communicator).
                c.fail_locally(f);
            }
            r
        }),
    )
}

fn collective(api: &'static str, c: &Comm, s: cudaStream_t, a: &Args) -> Result<()> {
    if let Some(f) = c.unusable() {
        return Err(f);
    }
    let dtype = DType::from_raw(a.datatype)
        .ok_or_else(|| Fail::invalid_argument(format!("datatype {} is not supported", a.datatype)))?;
    let redop = match a.redop {
        Some(v) => Some(RedOp::from_raw(v).ok_or_else(|| {
            Fail::invalid_argument(format!("reduction {v} is not supported (custom reductions are not)"))
        })?),
        None => None,
    };
    let root = match a.root {
        Some(r) if r < 0 || r as u32 >= c.nranks => {
            return Err(Fail::invalid_argument(format!("root {r} of {} ranks", c.nranks)))
        }
        r => r.map(|r| r as u32),
    };
    let call = Call { op: a.op, dtype, redop, root, count: a.count as u64 };
    counters::call(Lib::Nccl, api);
    let (sb, rb) = (call.send_bytes(c.rank, c.nranks), call.recv_bytes(c.rank, c.nranks));
    let check = |ptr: usize, bytes: usize, what: &str| {
        if bytes == 0 {
            return Ok(());
        }
        memory::check_device(ptr, bytes, &format!("{api} {what}"))
            .map_err(|e| Fail::invalid_argument(e.to_string()))
    };
    check(a.send, sb, "sendbuff")?;
    check(a.recv, rb, "recvbuff")?;
    // Device progress up to this call (its inputs are written by earlier work on the stream).
    // Not a host wait: a GPU gets there without the host.
    stream::run_all(stream::stream_id(s as usize)).map_err(|e| {
        Fail::new(ncclResult_t::ncclUnhandledCudaError, format!("the stream's earlier work failed: {e}"))
    })?;
    exit_if_told(api, c.rank);
    let payload = if sb == 0 {
        Vec::new()
    } else {
        // SAFETY: [send, send + sb) lies in a live device allocation (checked above), which
        // is host memory in this process.
        unsafe { std::slice::from_raw_parts(a.send as *const u8, sb) }.to_vec()
    };
    let reply = c.exchange(&call, &payload)?;
    if rb > 0 {
        // SAFETY: [recv, recv + rb) lies in a live device allocation (checked above), and the
        // exchange returns exactly `rb` bytes. `payload` is a copy, so in-place calls are fine.
        unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), a.recv as *mut u8, rb) };
    }
    // The collective's size as nccl-tests reports it: the larger of the two buffers.
    let size = match a.op {
        Op::AllGather | Op::ReduceScatter => a.count * c.nranks as usize,
        _ => a.count,
    } * dtype.size();
    counters::with(|k| k.nccl_bytes += size as u64);
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn ncclAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: c_uint,
    op: c_uint,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::AllReduce,
        count,
        datatype,
        redop: Some(op),
        root: None,
        send: sendbuff as usize,
        recv: recvbuff as usize,
    };
    run("ncclAllReduce", comm, stream, a)
}

#[no_mangle]
pub unsafe extern "C" fn ncclAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: c_uint,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::AllGather,
        count: sendcount,
        datatype,
        redop: None,
        root: None,
        send: sendbuff as usize,
        recv: recvbuff as usize,
    };
    run("ncclAllGather", comm, stream, a)
}

#[no_mangle]
pub unsafe extern "C" fn ncclReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: c_uint,
    op: c_uint,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::ReduceScatter,
        count: recvcount,
        datatype,
        redop: Some(op),
        root: None,
        send: sendbuff as usize,
        recv: recvbuff as usize,
    };
    run("ncclReduceScatter", comm, stream, a)
}

#[no_mangle]
pub unsafe extern "C" fn ncclBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: c_uint,
    root: c_int,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::Broadcast,
        count,
        datatype,
        redop: None,
        root: Some(root),
        send: sendbuff as usize,
        recv: recvbuff as usize,
    };
    run("ncclBroadcast", comm, stream, a)
}

/// The legacy in-place broadcast.
#[no_mangle]
pub unsafe extern "C" fn ncclBcast(
    buff: *mut c_void,
    count: usize,
    datatype: c_uint,
    root: c_int,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::Broadcast,
        count,
        datatype,
        redop: None,
        root: Some(root),
        send: buff as usize,
        recv: buff as usize,
    };
    run("ncclBcast", comm, stream, a)
}

#[no_mangle]
pub unsafe extern "C" fn ncclReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: c_uint,
    op: c_uint,
    root: c_int,
    comm: ncclComm_t,
    stream: cudaStream_t,
) -> ncclResult_t {
    let a = Args {
        op: Op::Reduce,
        count,
        datatype,
        redop: Some(op),
        root: Some(root),
        send: sendbuff as usize,
        recv: recvbuff as usize,
    };
    run("ncclReduce", comm, stream, a)
}

/// Fault injection for tests, after a call's inputs are ready and before it sends them, so
/// its peers are left waiting in the same collective:
/// - `MOCO_EMU_NCCL_EXIT_AT=R:API:N` (e.g. `1:ncclAllReduce:2`) makes rank R's process die
///   (as if killed: `_exit(137)`, no clean-up) when it enters its N-th call of API;
/// - `MOCO_EMU_NCCL_STOP_AT=R:API:N` makes it stop itself with SIGSTOP there instead: a hung
///   peer whose connections stay open, which only a watchdog's timeout can detect.
fn exit_if_told(api: &str, rank: u32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static EXIT_CALLS: AtomicU64 = AtomicU64::new(0);
    static STOP_CALLS: AtomicU64 = AtomicU64::new(0);
    for (var, calls, stop) in
        [("MOCO_EMU_NCCL_EXIT_AT", &EXIT_CALLS, false), ("MOCO_EMU_NCCL_STOP_AT", &STOP_CALLS, true)]
    {
        let Ok(spec) = std::env::var(var) else { continue };
        let parts: Vec<&str> = spec.split(':').collect();
        let target = match parts[..] {
            [r, name, k] => r.parse::<u32>().ok().zip(k.parse::<u64>().ok()).map(|(r, k)| (r, name, k)),
            _ => None,
        };
        match target {
            Some((r, name, k)) if r == rank && name == api => {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n == k && stop {
                    eprintln!("moco-emu: {var}={spec}: rank {rank} stops (SIGSTOP) in {api} #{n}");
                    // SAFETY: raise only sends a signal to this process; SIGSTOP cannot be
                    // caught, so the process freezes here until SIGCONT or SIGKILL.
                    unsafe { libc::raise(libc::SIGSTOP) };
                } else if n == k {
                    eprintln!("moco-emu: {var}={spec}: rank {rank} dies in {api} #{n}");
                    // SAFETY: _exit ends the process at once, as a SIGKILL would.
                    unsafe { libc::_exit(137) };
                }
            }
            Some(_) => {}
            None => eprintln!("moco-emu: {var}={spec:?} is not RANK:API:N; ignored"),
        }
    }
}
