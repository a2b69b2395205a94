//! Streams and events. Work queued on a stream runs only when the host waits for it (stream,
//! event or context synchronize, a copy to pageable memory), in queue order, one op at a time
//! per process; a host read of a result before the wait sees the bytes from before the work,
//! as it can on a GPU. `cuStreamWaitEvent` orders streams: running a stream past such a wait
//! first runs the other stream up to the recorded event.
//!
//! Collectives are the one exception (see `nccl`): they run the stream up to and including
//! themselves when queued, because on a GPU they progress without the host, and another
//! process may be blocked on them while this one's host is blocked on that process.
//!
//! Two locks: `QUEUES` (the queues and events, held only briefly) and `EXEC` (held while ops
//! run, so ops of different streams never run at once and the kernels' "shared memory" and
//! counters need no further locking).

use crate::error::{EmuError, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Work for a stream: runs on the host when the stream is run. An `Err` is reported and
/// makes later synchronizations fail, as a device fault makes a CUDA context unusable.
pub type Op = Box<dyn FnOnce() -> std::result::Result<(), String> + Send>;

enum Item {
    Op { label: String, op: Op },
    Record { event: u64 },
    Wait { stream: u64, upto: u64 },
}

#[derive(Default)]
struct Stream {
    queue: VecDeque<(u64, Item)>,
    next_seq: u64,
    done: u64,
}

#[derive(Default, Clone, Copy)]
struct Event {
    /// Where the last record sits: (stream, seq). None: never recorded.
    at: Option<(u64, u64)>,
    /// When the record ran (for cuEventElapsedTime).
    time: Option<Instant>,
}

#[derive(Default)]
struct Queues {
    streams: HashMap<u64, Stream>,
    events: HashMap<u64, Event>,
    next_id: u64,
    sticky: Option<String>,
}

static QUEUES: Mutex<Option<Queues>> = Mutex::new(None);
static EXEC: Mutex<()> = Mutex::new(());

/// The label of the op running now, for fault reports (see `fault.rs`).
pub static RUNNING: Mutex<String> = Mutex::new(String::new());

/// The legacy default stream (`CUstream` NULL, and the CU_STREAM_LEGACY/PER_THREAD handles).
pub const DEFAULT_STREAM: u64 = 0;

fn queues() -> MutexGuard<'static, Option<Queues>> {
    QUEUES.lock().unwrap_or_else(|p| p.into_inner())
}

fn with<R>(f: impl FnOnce(&mut Queues) -> R) -> R {
    let mut g = queues();
    let q = g.get_or_insert_with(|| {
        let mut q = Queues { next_id: 16, ..Default::default() };
        q.streams.insert(DEFAULT_STREAM, Stream::default());
        q
    });
    f(q)
}

fn bad_handle(what: &str, id: u64) -> EmuError {
    EmuError::driver(
        cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_HANDLE,
        format!("unknown {what} handle {id:#x}"),
    )
}

/// Maps a `CUstream` value to a stream id (the special handles 0x1 and 0x2 are the default).
pub fn stream_id(handle: usize) -> u64 {
    match handle {
        0..=2 => DEFAULT_STREAM,
        h => h as u64,
    }
}

pub fn create_stream() -> u64 {
    with(|q| {
        let id = q.next_id;
        q.next_id += 16;
        q.streams.insert(id, Stream::default());
        id
    })
}

/// Destroys a stream after running what it still holds (CUDA lets queued work finish).
pub fn destroy_stream(id: u64) -> Result<()> {
    run_all(id)?;
    with(|q| q.streams.remove(&id).map(|_| ()).ok_or_else(|| bad_handle("stream", id)))
}

pub fn create_event() -> u64 {
    with(|q| {
        let id = q.next_id;
        q.next_id += 16;
        q.events.insert(id, Event::default());
        id
    })
}

pub fn destroy_event(id: u64) -> Result<()> {
    with(|q| q.events.remove(&id).map(|_| ()).ok_or_else(|| bad_handle("event", id)))
}

fn push(q: &mut Queues, stream: u64, item: Item) -> Result<u64> {
    let s = q.streams.get_mut(&stream).ok_or_else(|| bad_handle("stream", stream))?;
    s.next_seq += 1;
    let seq = s.next_seq;
    s.queue.push_back((seq, item));
    Ok(seq)
}

/// Queues `op` on `stream`; returns its sequence number there.
pub fn enqueue(stream: u64, label: impl Into<String>, op: Op) -> Result<u64> {
    let label = label.into();
    with(|q| push(q, stream, Item::Op { label, op }))
}

pub fn record_event(event: u64, stream: u64) -> Result<()> {
    with(|q| {
        if !q.events.contains_key(&event) {
            return Err(bad_handle("event", event));
        }
        let seq = push(q, stream, Item::Record { event })?;
        let e = q.events.get_mut(&event).expect("checked above");
        e.at = Some((stream, seq));
        e.time = None;
        Ok(())
    })
}

/// Makes later work on `stream` wait for the event's last record (no-op if never recorded).
pub fn wait_event(stream: u64, event: u64) -> Result<()> {
    with(|q| {
        let e = *q.events.get(&event).ok_or_else(|| bad_handle("event", event))?;
        match e.at {
            Some((other, upto)) if other != stream => {
                push(q, stream, Item::Wait { stream: other, upto }).map(|_| ())
            }
            // Same stream: already ordered. Never recorded: CUDA treats it as complete.
            _ => Ok(()),
        }
    })
}

fn exec_lock() -> MutexGuard<'static, ()> {
    EXEC.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `stream` up to and including op `upto`. The caller holds the EXEC lock.
fn run_locked(stream: u64, upto: u64) -> Result<()> {
    loop {
        let next = with(|q| {
            let s = q.streams.get_mut(&stream).ok_or_else(|| bad_handle("stream", stream))?;
            if s.done >= upto {
                return Ok(None);
            }
            Ok(s.queue.pop_front())
        })?;
        let Some((seq, item)) = next else { break };
        match item {
            Item::Op { label, op } => {
                *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = label.clone();
                let r = op();
                RUNNING.lock().unwrap_or_else(|p| p.into_inner()).clear();
                if let Err(msg) = r {
                    let msg = format!("{label}: {msg}");
                    eprintln!("moco-emu: device error: {msg}");
                    with(|q| q.sticky.get_or_insert(msg.clone()).clone());
                }
            }
            Item::Record { event } => with(|q| {
                if let Some(e) = q.events.get_mut(&event) {
                    if e.at == Some((stream, seq)) {
                        e.time = Some(Instant::now());
                    }
                }
            }),
            Item::Wait { stream: other, upto } => run_locked(other, upto)?,
        }
        with(|q| {
            if let Some(s) = q.streams.get_mut(&stream) {
                s.done = seq;
            }
        });
    }
    match with(|q| q.sticky.clone()) {
        Some(msg) => Err(EmuError::Op(msg)),
        None => Ok(()),
    }
}

fn last_seq(stream: u64) -> Result<u64> {
    with(|q| q.streams.get(&stream).map(|s| s.next_seq).ok_or_else(|| bad_handle("stream", stream)))
}

/// Runs everything queued on `stream` so far. Not counted as a host wait by itself: callers
/// that make the host wait count it (see `counters::host_wait`).
pub fn run_all(stream: u64) -> Result<()> {
    let _exec = exec_lock();
    let upto = last_seq(stream)?;
    run_locked(stream, upto)
}

/// Runs `stream` up to op `upto` (a collective runs itself this way when queued).
pub fn run_until(stream: u64, upto: u64) -> Result<()> {
    let _exec = exec_lock();
    run_locked(stream, upto)
}

/// Runs every stream to its end (context synchronize, frees that CUDA makes synchronous).
pub fn run_everything() -> Result<()> {
    let _exec = exec_lock();
    let ids: Vec<(u64, u64)> = with(|q| q.streams.iter().map(|(id, s)| (*id, s.next_seq)).collect());
    for (id, upto) in ids {
        run_locked(id, upto)?;
    }
    Ok(())
}

/// Runs the stream of the event's last record up to it. Returns the record's time.
pub fn run_to_event(event: u64) -> Result<Option<Instant>> {
    let e = with(|q| q.events.get(&event).copied()).ok_or_else(|| bad_handle("event", event))?;
    if let Some((stream, seq)) = e.at {
        run_until(stream, seq)?;
    }
    Ok(with(|q| q.events.get(&event).and_then(|e| e.time)))
}

/// Whether `stream` holds work that has not run.
pub fn has_pending(stream: u64) -> Result<bool> {
    with(|q| q.streams.get(&stream).map(|s| !s.queue.is_empty()).ok_or_else(|| bad_handle("stream", stream)))
}

/// Whether the event's last record has not run yet.
pub fn event_pending(event: u64) -> Result<bool> {
    with(|q| {
        let e = q.events.get(&event).ok_or_else(|| bad_handle("event", event))?;
        Ok(match e.at {
            Some((stream, seq)) => q.streams.get(&stream).map(|s| s.done < seq).unwrap_or(false),
            None => false,
        })
    })
}

/// Whether any stream holds work that has not run.
pub fn any_pending() -> Result<bool> {
    Ok(with(|q| q.streams.values().any(|s| !s.queue.is_empty())))
}

/// The error that made the context unusable, if any.
pub fn sticky_error() -> Option<String> {
    with(|q| q.sticky.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn work_runs_only_when_waited_for_and_in_order() {
        let s = create_stream();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            enqueue(
                s,
                "push",
                Box::new(move || {
                    log.lock().unwrap().push(i);
                    Ok(())
                }),
            )
            .unwrap();
        }
        assert!(log.lock().unwrap().is_empty(), "nothing runs at enqueue time");
        run_all(s).unwrap();
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
        destroy_stream(s).unwrap();
    }

    #[test]
    fn waiting_on_an_event_runs_the_recording_stream_first() {
        let (a, b) = (create_stream(), create_stream());
        let e = create_event();
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        enqueue(
            a,
            "a1",
            Box::new(move || {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        )
        .unwrap();
        record_event(e, a).unwrap();
        let h = hits.clone();
        enqueue(
            a,
            "a2 after the record",
            Box::new(move || {
                h.fetch_add(100, Ordering::SeqCst);
                Ok(())
            }),
        )
        .unwrap();
        wait_event(b, e).unwrap();
        let h = hits.clone();
        enqueue(
            b,
            "b1",
            Box::new(move || {
                assert_eq!(h.load(Ordering::SeqCst), 1, "b1 runs after a1 and before a2");
                Ok(())
            }),
        )
        .unwrap();
        run_all(b).unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a2 was not needed and did not run");
        assert!(run_to_event(e).unwrap().is_some());
        run_all(a).unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 101);
    }
}
