//! Where a step's time goes: tracing spans with fixed phase names, a `tracing` layer that adds
//! up their time, and an optional Chrome-trace timeline (DESIGN.md, "Observability").
//!
//! - The step opens spans named after its phases ([`DATA`], [`FORWARD`], [`BACKWARD`],
//!   [`COMM`], [`OPTIMIZER`]) and finer ones inside them ([`QUERY_FORWARD`], [`EMA`],
//!   [`KEY_FORWARD`], [`LOSS`], [`ENQUEUE`]). Collective calls open [`COMM`] wherever they
//!   happen, so an all-gather inside the loss counts as communication, not as forward.
//! - [`PhaseLayer`] records every span interval per thread. Time is attributed EXCLUSIVELY: a
//!   span's own time is its duration minus that of the spans nested in it, so nothing is
//!   counted twice; [`phase_of`] maps each span name to the phase it counts toward (a span with
//!   an unknown name counts toward the phase of the span around it).
//! - `--trace FILE`: every interval becomes a Chrome-trace "X" event (pid = rank, tid = thread),
//!   written atomically when the [`Guard`] finishes; open it in chrome://tracing or Perfetto.
//! - On a GPU the host returns long before the work it queued is done, so a [`DeviceClock`]
//!   (`cuda_clock::CudaClock`, CUDA events on the backend's stream) times the spans of the
//!   thread that drives the GPU; those intervals are resolved after the step's synchronize
//!   ([`Guard::resolve`]).
//! - NVTX ranges with the same names are pushed when libnvToolsExt can be loaded (`nvtx.rs`),
//!   so `nsys` shows the phases; without it nothing happens.
//!
//! The worker binary calls [`init`] once; `launcher bench` uses the guard's totals for its
//! phase shares.

mod chrome;
pub mod cuda_clock;
mod layer;
mod nvtx;
mod recorder;
#[cfg(test)]
mod tests;

pub use layer::PhaseLayer;
pub use recorder::{DeviceClock, SpanTotal};

use crate::error::{Result, WorkerError};
use recorder::Recorder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Waiting for the loader's next batch.
pub const DATA: &str = "data";
/// Query forward, EMA, key forward and loss of a micro-batch.
pub const FORWARD: &str = "forward";
pub const QUERY_FORWARD: &str = "query_forward";
pub const EMA: &str = "ema";
pub const KEY_FORWARD: &str = "key_forward";
pub const LOSS: &str = "loss";
/// Backward of both query views (with recomputation when it is on).
pub const BACKWARD: &str = "backward";
/// Any collective call (all-gather, all-reduce, reduce-scatter), wherever it is made.
pub const COMM: &str = "comm";
/// Unscale, inf/NaN verdict, optimiser update, fp16 copies.
pub const OPTIMIZER: &str = "optimizer";
/// Writing the micro-batch's keys into the queue (counted with the optimiser, as the PyTorch
/// reference does).
pub const ENQUEUE: &str = "enqueue";

/// The phases a step's time is split into, in display order. "other" is time inside spans of
/// no known phase.
pub const PHASES: [&str; 6] = [DATA, FORWARD, BACKWARD, COMM, OPTIMIZER, "other"];

/// The phase a span of this name counts toward, if the name is one of the step's.
pub fn phase_of(name: &str) -> Option<&'static str> {
    match name {
        DATA => Some(DATA),
        FORWARD | QUERY_FORWARD | EMA | KEY_FORWARD | LOSS => Some(FORWARD),
        BACKWARD => Some(BACKWARD),
        COMM => Some(COMM),
        OPTIMIZER | ENQUEUE => Some(OPTIMIZER),
        _ => None,
    }
}

/// The per-rank file name for `path` in a run of `world` ranks: `trace.json` stays as is on one
/// rank and becomes `trace.rank3.json` on rank 3 of several, so ranks never write one file.
pub fn rank_path(path: &Path, rank: usize, world: usize) -> PathBuf {
    if world <= 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.rank{rank}.{}", ext.to_string_lossy()),
        None => format!("{stem}.rank{rank}"),
    };
    path.with_file_name(name)
}

/// The phase layer and its guard, for callers that compose their own subscriber (tests).
/// `trace_file`: where the Chrome trace goes (None: only totals are kept).
pub fn layer(trace_file: Option<&Path>, rank: usize) -> (PhaseLayer, Guard) {
    let recorder = Arc::new(Recorder::new(rank, trace_file.is_some(), recorder::host_clock()));
    (
        PhaseLayer::new(recorder.clone()),
        Guard {
            recorder,
            base_file: trace_file.map(Path::to_path_buf),
            file: trace_file.map(Path::to_path_buf),
            done: false,
        },
    )
}

/// Install the process's tracing subscriber: log lines on stderr filtered by `RUST_LOG`
/// (default `warn`) and the phase layer, which sees every span whatever the log filter.
/// Call once, early; keep the guard alive until the end (dropping it writes `trace_file`).
pub fn init(trace_file: Option<&Path>, rank: usize) -> Result<Guard> {
    let (phases, guard) = layer(trace_file, rank);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let subscriber = tracing_subscriber::registry().with(fmt).with(phases);
    tracing::subscriber::set_global_default(subscriber).map_err(|e| {
        WorkerError::io(
            "installing the trace subscriber (trace::init must run before any other subscriber is set)",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(guard)
}

/// Owns the recorded intervals: their totals, and the Chrome trace written by [`Guard::finish`]
/// (or on drop).
pub struct Guard {
    recorder: Arc<Recorder>,
    /// The path given to `init`, and the one written (per rank, after `set_rank`).
    base_file: Option<PathBuf>,
    file: Option<PathBuf>,
    done: bool,
}

impl Guard {
    /// The rank and world size, known only once the group is joined: the rank becomes the
    /// trace's pid, and on several ranks the file name gets `.rank<r>` ([`rank_path`]).
    pub fn set_rank(&mut self, rank: usize, world: usize) {
        self.recorder.set_rank(rank);
        if let Some(base) = &self.base_file {
            self.file = Some(rank_path(base, rank, world));
        }
    }

    /// Where the trace will be written (None: no trace asked for).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Now, in µs on the trace's host clock (to align a device clock's origin).
    pub fn host_now_us(&self) -> f64 {
        self.recorder.host_now_us()
    }

    /// Time the spans of the CALLING thread on `clock` from now on (the thread that drives the
    /// GPU); other threads stay on the host clock.
    pub fn set_device_clock(&self, clock: Box<dyn DeviceClock>) {
        self.recorder.set_device_clock(clock);
    }

    /// Turn finished intervals into totals and trace events. Intervals timed on a device clock
    /// wait for their events here, so call it after the step's device synchronize; host-timed
    /// intervals are resolved as soon as their thread leaves its outermost span.
    pub fn resolve(&self) {
        self.recorder.resolve_all();
    }

    /// Exclusive and inclusive time per span name since the last reset.
    pub fn totals(&self) -> BTreeMap<String, SpanTotal> {
        self.recorder.totals()
    }

    /// Exclusive seconds per phase ([`PHASES`]) since the last reset.
    pub fn phase_seconds(&self) -> BTreeMap<&'static str, f64> {
        self.recorder.phase_seconds()
    }

    /// Forget the totals (after a warm-up); the trace keeps every event.
    pub fn reset_totals(&self) {
        self.recorder.reset_totals();
    }

    /// Intervals that could not be timed (a device event failed) or were dropped because the
    /// trace reached its event limit.
    pub fn lost(&self) -> u64 {
        self.recorder.lost()
    }

    /// Resolve what is left and write the Chrome trace, if one was asked for.
    pub fn finish(mut self) -> Result<()> {
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        self.recorder.resolve_all();
        match &self.file {
            Some(path) => chrome::write_atomic(path, &self.recorder.trace_snapshot()),
            None => Ok(()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            eprintln!("warning: the trace was not written: {e}");
        }
    }
}
