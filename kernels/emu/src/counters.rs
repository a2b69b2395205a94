//! What one process asked of the device, counted so that the structure of a training step
//! (host waits, bytes each way, launches, library calls) is measurable without a GPU.
//!
//! With `MOCO_EMU_COUNTERS=PATH` the counters are written as JSON when the process exits
//! (`{pid}` in PATH is replaced by the process id, so ranks do not overwrite each other). A
//! program that wants them mid-run (the bench, per optimiser step) looks up
//! `mocoEmuCountersJson` with dlsym: a real driver has no such symbol.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Mutex, Once};

#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Calls that made the host wait for the device: stream/event/context synchronize, and
    /// copies that are synchronous by definition (to pageable host memory, the non-async
    /// copies). Keyed by the reason.
    pub host_waits: BTreeMap<String, u64>,
    pub event_queries: u64,
    /// cuEventRecord calls and cuStreamWaitEvent calls: how streams are ordered (device-side
    /// dependencies, not host waits).
    pub event_records: u64,
    pub stream_waits: u64,
    pub h2d_bytes: u64,
    pub d2h_bytes: u64,
    pub d2d_bytes: u64,
    pub memset_bytes: u64,
    pub launches: BTreeMap<String, u64>,
    pub cublas: BTreeMap<String, u64>,
    pub cudnn: BTreeMap<String, u64>,
    pub nccl: BTreeMap<String, u64>,
    pub nccl_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
pub enum Lib {
    Cublas,
    Cudnn,
    Nccl,
}

static COUNTERS: Mutex<Option<Counters>> = Mutex::new(None);

/// Runs `f` on the counters (created on first use).
pub fn with<R>(f: impl FnOnce(&mut Counters) -> R) -> R {
    let mut guard = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Counters::default))
}

pub fn host_wait(reason: &str) {
    with(|c| *c.host_waits.entry(reason.to_string()).or_default() += 1);
}

pub fn launch(kernel: &str) {
    with(|c| *c.launches.entry(kernel.to_string()).or_default() += 1);
}

/// One call of a library function (only the calls that do work or queue it are counted).
pub fn call(lib: Lib, name: &str) {
    with(|c| {
        let map = match lib {
            Lib::Cublas => &mut c.cublas,
            Lib::Cudnn => &mut c.cudnn,
            Lib::Nccl => &mut c.nccl,
        };
        *map.entry(name.to_string()).or_default() += 1;
    });
}

/// The counters and the device memory figures as one JSON document.
pub fn snapshot_json() -> String {
    let c = with(|c| c.clone());
    let (now, peak) = crate::memory::device_usage();
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    json!({
        "host_waits": total(&c.host_waits),
        "host_waits_by_reason": c.host_waits,
        "event_queries": c.event_queries,
        "event_records": c.event_records,
        "stream_waits": c.stream_waits,
        "h2d_bytes": c.h2d_bytes,
        "d2h_bytes": c.d2h_bytes,
        "d2d_bytes": c.d2d_bytes,
        "memset_bytes": c.memset_bytes,
        "kernel_launches": total(&c.launches),
        "kernel_launches_by_name": c.launches,
        "cublas_calls": total(&c.cublas),
        "cublas_by_name": c.cublas,
        "cudnn_calls": total(&c.cudnn),
        "cudnn_by_name": c.cudnn,
        "nccl_calls": total(&c.nccl),
        "nccl_by_name": c.nccl,
        "nccl_bytes": c.nccl_bytes,
        "device_bytes_now": now,
        "peak_device_bytes": peak,
    })
    .to_string()
}

extern "C" fn write_at_exit() {
    if let Ok(path) = std::env::var("MOCO_EMU_COUNTERS") {
        let path = path.replace("{pid}", &std::process::id().to_string());
        let tmp = format!("{path}.tmp");
        // Written atomically: a reader never sees half a file.
        let ok = std::fs::write(&tmp, snapshot_json()).and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = ok {
            eprintln!("moco-emu: writing counters to {path}: {e}");
        }
    }
}

/// Registers the exit hook once (called from `cuInit`).
pub fn install_exit_writer() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: write_at_exit is an extern "C" fn with no arguments, as atexit requires.
        unsafe { libc::atexit(write_at_exit) };
    });
}

/// Copies the counters' JSON into `buf` (NUL-terminated, truncated to `cap`) and returns the
/// full length, so a caller can retry with a bigger buffer. Not part of any NVIDIA API: its
/// presence tells a program it runs on the emulator.
#[no_mangle]
pub unsafe extern "C" fn mocoEmuCountersJson(buf: *mut libc::c_char, cap: usize) -> usize {
    let text = snapshot_json();
    if !buf.is_null() && cap > 0 {
        let n = text.len().min(cap - 1);
        // SAFETY: the caller promises `buf` has `cap` writable bytes; n < cap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}
