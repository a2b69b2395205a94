//! The span intervals of every thread, their exclusive-time totals and the trace events.
//!
//! Each thread keeps the intervals it opened since its stack of open spans was last empty.
//! When the stack empties, the thread's intervals are complete and can be resolved: each one's
//! duration, minus its direct children's, is its exclusive time, added to its name and to its
//! phase. Intervals timed on a device clock are resolved only on request (after the device has
//! been synchronised), because their end times are not known before.

use super::chrome::{Event, Snapshot};
use super::phase_of;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Instant;

/// Most trace events kept in memory (about 100 MB); later ones are counted as lost.
const MAX_EVENTS: usize = 2_000_000;

/// Times points in the order of a device's work queue (CUDA events on a stream).
pub trait DeviceClock: Send {
    /// Record a point after everything queued so far; None if that failed.
    fn mark(&mut self) -> Option<u64>;
    /// Wait for the point `mark` and return its time in microseconds since the host clock's
    /// origin; the mark is consumed. None if the device could not say.
    fn time_us(&mut self, mark: u64) -> Option<f64>;
}

/// Time in one span name.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanTotal {
    pub count: u64,
    /// Sum of the intervals' durations.
    pub inclusive_s: f64,
    /// The same minus the time of spans nested inside them.
    pub exclusive_s: f64,
}

/// Microseconds since the recorder's origin, on the host.
pub type HostClock = Box<dyn Fn() -> f64 + Send + Sync>;

pub fn host_clock() -> HostClock {
    let origin = Instant::now();
    Box::new(move || origin.elapsed().as_secs_f64() * 1e6)
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Host(f64),
    Device(u64),
}

struct Interval {
    name: &'static str,
    start: Mark,
    end: Option<Mark>,
    /// Index of the interval this one is nested in (the thread's innermost open one).
    parent: Option<usize>,
}

struct ThreadLog {
    tid: u64,
    intervals: Vec<Interval>,
    /// (span id, interval index) of the open spans, innermost last.
    open: Vec<(u64, usize)>,
    has_device_marks: bool,
}

#[derive(Default)]
struct State {
    threads: HashMap<ThreadId, ThreadLog>,
    device: Option<(ThreadId, Box<dyn DeviceClock>)>,
    totals: BTreeMap<&'static str, SpanTotal>,
    phases: BTreeMap<&'static str, f64>,
    events: Vec<Event>,
    thread_names: Vec<(u64, String)>,
}

pub struct Recorder {
    rank: AtomicUsize,
    keep_events: bool,
    now_us: HostClock,
    lost: AtomicU64,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(rank: usize, keep_events: bool, now_us: HostClock) -> Recorder {
        Recorder {
            rank: AtomicUsize::new(rank),
            keep_events,
            now_us,
            lost: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep recording.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn host_now_us(&self) -> f64 {
        (self.now_us)()
    }

    pub fn set_rank(&self, rank: usize) {
        self.rank.store(rank, Ordering::Relaxed);
    }

    pub fn set_device_clock(&self, clock: Box<dyn DeviceClock>) {
        self.lock().device = Some((std::thread::current().id(), clock));
    }

    fn mark(&self, st: &mut State, thread: ThreadId) -> Mark {
        if let Some((t, clock)) = st.device.as_mut() {
            if *t == thread {
                if let Some(m) = clock.mark() {
                    return Mark::Device(m);
                }
            }
        }
        Mark::Host((self.now_us)())
    }

    pub fn enter(&self, span: u64, name: &'static str) {
        let thread = std::thread::current();
        let id = thread.id();
        let mut st = self.lock();
        let mark = self.mark(&mut st, id);
        if !st.threads.contains_key(&id) {
            let tid = st.threads.len() as u64 + 1;
            st.thread_names.push((tid, thread.name().unwrap_or("unnamed").to_string()));
            st.threads.insert(
                id,
                ThreadLog { tid, intervals: Vec::new(), open: Vec::new(), has_device_marks: false },
            );
        }
        let Some(log) = st.threads.get_mut(&id) else { return };
        log.has_device_marks |= matches!(mark, Mark::Device(_));
        let parent = log.open.last().map(|&(_, i)| i);
        log.intervals.push(Interval { name, start: mark, end: None, parent });
        log.open.push((span, log.intervals.len() - 1));
    }

    pub fn exit(&self, span: u64) {
        let id = std::thread::current().id();
        let mut st = self.lock();
        let mark = self.mark(&mut st, id);
        let Some(log) = st.threads.get_mut(&id) else { return };
        let Some(pos) = log.open.iter().rposition(|&(s, _)| s == span) else { return };
        let (_, idx) = log.open.remove(pos);
        log.has_device_marks |= matches!(mark, Mark::Device(_));
        log.intervals[idx].end = Some(mark);
        if log.open.is_empty() && !log.has_device_marks {
            self.resolve_thread(&mut st, id);
        }
    }

    /// Resolve every thread that has no open span.
    pub fn resolve_all(&self) {
        let mut st = self.lock();
        let ready: Vec<ThreadId> = st
            .threads
            .iter()
            .filter(|(_, l)| l.open.is_empty() && !l.intervals.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for t in ready {
            self.resolve_thread(&mut st, t);
        }
    }

    fn resolve_thread(&self, st: &mut State, thread: ThreadId) {
        let State { threads, device, totals, phases, events, .. } = st;
        let Some(log) = threads.get_mut(&thread) else { return };
        let intervals = std::mem::take(&mut log.intervals);
        log.has_device_marks = false;
        let mut time = |m: Mark| -> Option<f64> {
            match m {
                Mark::Host(t) => Some(t),
                Mark::Device(d) => device.as_mut().and_then(|(_, c)| c.time_us(d)),
            }
        };
        // (start, duration) in µs; None when a mark could not be timed.
        let spans: Vec<Option<(f64, f64)>> = intervals
            .iter()
            .map(|iv| {
                let start = time(iv.start);
                let end = iv.end.and_then(&mut time);
                match (start, end) {
                    (Some(s), Some(e)) => Some((s, (e - s).max(0.0))),
                    _ => None,
                }
            })
            .collect();
        let mut children = vec![0.0f64; intervals.len()];
        for (iv, span) in intervals.iter().zip(&spans) {
            if let (Some(p), Some((_, d))) = (iv.parent, span) {
                children[p] += d;
            }
        }
        // Parents come before their children (they were entered first), so each interval's
        // phase can take its parent's, already known.
        let mut phase_at: Vec<&'static str> = Vec::with_capacity(intervals.len());
        for (i, iv) in intervals.iter().enumerate() {
            let inherited = iv.parent.map(|p| phase_at[p]).unwrap_or("other");
            phase_at.push(phase_of(iv.name).unwrap_or(inherited));
            let Some((start, dur)) = spans[i] else {
                self.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let exclusive = (dur - children[i]).max(0.0);
            let t = totals.entry(iv.name).or_default();
            t.count += 1;
            t.inclusive_s += dur * 1e-6;
            t.exclusive_s += exclusive * 1e-6;
            *phases.entry(phase_at[i]).or_default() += exclusive * 1e-6;
            if self.keep_events {
                if events.len() < MAX_EVENTS {
                    events.push(Event { name: iv.name, ts_us: start, dur_us: dur, tid: log.tid });
                } else {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn totals(&self) -> BTreeMap<String, SpanTotal> {
        self.lock().totals.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    pub fn phase_seconds(&self) -> BTreeMap<&'static str, f64> {
        self.lock().phases.clone()
    }

    pub fn reset_totals(&self) {
        let mut st = self.lock();
        st.totals.clear();
        st.phases.clear();
    }

    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn trace_snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            pid: self.rank.load(Ordering::Relaxed),
            threads: st.thread_names.clone(),
            events: st.events.clone(),
        }
    }
}
