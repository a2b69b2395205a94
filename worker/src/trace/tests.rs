//! The recorder driven through a real `tracing` subscriber with a scripted clock: durations
//! are exact, so the assertions check the accounting, not the machine's speed.

use super::recorder::Recorder;
use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::info_span;

struct Harness {
    now: Arc<AtomicU64>,
    layer: Option<PhaseLayer>,
    guard: Guard,
}

fn harness(file: Option<&Path>, rank: usize) -> Harness {
    let now = Arc::new(AtomicU64::new(0));
    let n = now.clone();
    let recorder =
        Arc::new(Recorder::new(rank, file.is_some(), Box::new(move || n.load(Ordering::SeqCst) as f64)));
    let layer = PhaseLayer::new(recorder.clone());
    Harness {
        now,
        layer: Some(layer),
        guard: Guard {
            recorder,
            base_file: file.map(Path::to_path_buf),
            file: file.map(Path::to_path_buf),
            done: false,
        },
    }
}

impl Harness {
    /// Run `f` with the phase layer as this thread's subscriber.
    fn run(&mut self, f: impl FnOnce(&dyn Fn(u64))) {
        let layer = self.layer.take().expect("one run per harness");
        let subscriber = tracing_subscriber::registry().with(layer);
        let now = self.now.clone();
        tracing::subscriber::with_default(subscriber, || f(&move |t| now.store(t, Ordering::SeqCst)));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("moco-trace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn comm_inside_forward_counts_as_comm_not_forward() {
    let mut h = harness(None, 0);
    h.run(|at| {
        at(0);
        let fwd = info_span!("forward").entered();
        at(20);
        let comm = info_span!("comm").entered();
        at(50);
        drop(comm);
        at(100);
        drop(fwd);
        let opt = info_span!("optimizer").entered();
        at(110);
        drop(opt);
    });
    let t = h.guard.totals();
    assert!(close(t["forward"].inclusive_s, 100e-6), "{t:?}");
    assert!(close(t["forward"].exclusive_s, 70e-6), "{t:?}");
    assert!(close(t["comm"].exclusive_s, 30e-6), "{t:?}");
    assert_eq!(t["forward"].count, 1);
    let p = h.guard.phase_seconds();
    assert!(close(p["forward"], 70e-6), "{p:?}");
    assert!(close(p["comm"], 30e-6), "{p:?}");
    assert!(close(p["optimizer"], 10e-6), "{p:?}");
    assert!(close(p.values().sum::<f64>(), 110e-6), "phases must add up to the wall time: {p:?}");
}

#[test]
fn unknown_spans_count_toward_the_phase_around_them() {
    let mut h = harness(None, 0);
    h.run(|at| {
        at(0);
        let bwd = info_span!("backward").entered();
        at(10);
        let inner = info_span!("conv_bwd").entered();
        at(40);
        drop(inner);
        at(50);
        drop(bwd);
        let setup = info_span!("setup").entered();
        at(55);
        drop(setup);
        // Fine names map to their phase: the EMA and the key forward count as forward.
        let ema = info_span!("ema").entered();
        at(60);
        drop(ema);
        let enq = info_span!("enqueue").entered();
        at(64);
        drop(enq);
    });
    let p = h.guard.phase_seconds();
    assert!(close(p["backward"], 50e-6), "{p:?}");
    assert!(close(p["other"], 5e-6), "{p:?}");
    assert!(close(p["forward"], 5e-6), "{p:?}");
    assert!(close(p["optimizer"], 4e-6), "{p:?}");
    let t = h.guard.totals();
    assert!(close(t["conv_bwd"].exclusive_s, 30e-6) && close(t["backward"].exclusive_s, 20e-6), "{t:?}");
}

#[test]
fn reset_totals_forgets_the_warmup() {
    let mut h = harness(None, 0);
    let recorder = h.guard.recorder.clone();
    h.run(|at| {
        at(0);
        drop(info_span!("forward").entered());
        at(0);
        let s = info_span!("forward").entered();
        at(1000);
        drop(s);
        recorder.reset_totals();
        let s = info_span!("forward").entered();
        at(1007);
        drop(s);
    });
    let t = h.guard.totals();
    assert_eq!(t["forward"].count, 1);
    assert!(close(t["forward"].inclusive_s, 7e-6), "{t:?}");
}

/// Device marks with scripted times: mark i is at `times[i]` µs.
struct FakeDevice {
    times: Vec<f64>,
    next: u64,
    asked: Arc<AtomicU64>,
}

impl DeviceClock for FakeDevice {
    fn mark(&mut self) -> Option<u64> {
        self.next += 1;
        Some(self.next - 1)
    }
    fn time_us(&mut self, mark: u64) -> Option<f64> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.times.get(mark as usize).copied()
    }
}

#[test]
fn device_timed_intervals_wait_for_resolve_and_use_device_times() {
    let mut h = harness(None, 0);
    let asked = Arc::new(AtomicU64::new(0));
    // forward [100, 400] on the device with comm [150, 250] inside; the host clock says 0.
    h.guard.set_device_clock(Box::new(FakeDevice {
        times: vec![100.0, 150.0, 250.0, 400.0],
        next: 0,
        asked: asked.clone(),
    }));
    h.run(|_| {
        let f = info_span!("forward").entered();
        drop(info_span!("comm").entered());
        drop(f);
    });
    assert!(
        h.guard.totals().is_empty(),
        "device intervals must not be resolved before the device is synchronised"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0);
    h.guard.resolve();
    let t = h.guard.totals();
    assert!(close(t["forward"].inclusive_s, 300e-6) && close(t["forward"].exclusive_s, 200e-6), "{t:?}");
    assert!(close(t["comm"].exclusive_s, 100e-6), "{t:?}");
    assert_eq!(h.guard.lost(), 0);
}

#[test]
fn a_device_mark_that_cannot_be_timed_is_counted_as_lost() {
    let mut h = harness(None, 0);
    let asked = Arc::new(AtomicU64::new(0));
    // Only the first mark has a time.
    h.guard.set_device_clock(Box::new(FakeDevice { times: vec![5.0], next: 0, asked }));
    h.run(|_| drop(info_span!("backward").entered()));
    h.guard.resolve();
    assert_eq!(h.guard.lost(), 1);
    assert!(!h.guard.totals().contains_key("backward"));
}

#[test]
fn trace_file_holds_one_complete_event_per_interval() {
    let dir = temp_dir("file");
    let path = dir.join("sub/trace.json");
    let mut h = harness(Some(&path), 3);
    h.run(|at| {
        at(10);
        let f = info_span!("forward").entered();
        at(12);
        let c = info_span!("comm").entered();
        at(15);
        drop(c);
        at(30);
        drop(f);
    });
    let Harness { guard, .. } = h;
    guard.finish().unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = v.as_array().unwrap();
    let x: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(x.len(), 2, "{v}");
    let fwd = x.iter().find(|e| e["name"] == "forward").unwrap();
    assert_eq!(
        (fwd["ts"].as_f64(), fwd["dur"].as_f64(), fwd["pid"].as_u64()),
        (Some(10.0), Some(20.0), Some(3))
    );
    let comm = x.iter().find(|e| e["name"] == "comm").unwrap();
    assert_eq!((comm["ts"].as_f64(), comm["dur"].as_f64()), (Some(12.0), Some(3.0)));
    assert_eq!(comm["tid"], fwd["tid"]);
    let names: Vec<_> = events.iter().filter(|e| e["name"] == "thread_name").collect();
    assert_eq!(names.len(), 1, "{v}");
    let left: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("trace.json")], "no temporary file may be left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn set_rank_names_the_file_and_the_pid_of_that_rank() {
    let dir = temp_dir("rank");
    let mut h = harness(Some(&dir.join("t.json")), 0);
    h.guard.set_rank(1, 2);
    assert_eq!(h.guard.file(), Some(dir.join("t.rank1.json").as_path()));
    h.run(|_| drop(info_span!("optimizer").entered()));
    let Harness { guard, .. } = h;
    guard.finish().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("t.rank1.json")).unwrap()).unwrap();
    assert!(v.as_array().unwrap().iter().all(|e| e["pid"] == 1), "{v}");
    assert!(!dir.join("t.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropping_the_guard_writes_the_trace() {
    let dir = temp_dir("drop");
    let path = dir.join("t.json");
    let mut h = harness(Some(&path), 0);
    h.run(|_| drop(info_span!("data").entered()));
    drop(h);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().iter().filter(|e| e["name"] == "data").count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spans_of_other_threads_are_kept_apart() {
    let mut h = harness(None, 0);
    h.run(|at| {
        at(0);
        let outer = info_span!("forward").entered();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        // A span on another thread while "forward" is open here must not nest inside it.
        std::thread::scope(|s| {
            s.spawn(|| {
                tracing::dispatcher::with_default(&dispatch, || drop(info_span!("data").entered()));
            });
        });
        at(10);
        drop(outer);
    });
    let t = h.guard.totals();
    assert!(close(t["forward"].exclusive_s, 10e-6), "{t:?}");
    assert_eq!(t["data"].count, 1);
}

#[test]
fn rank_path_names_one_file_per_rank() {
    assert_eq!(rank_path(Path::new("out/trace.json"), 0, 1), PathBuf::from("out/trace.json"));
    assert_eq!(rank_path(Path::new("out/trace.json"), 2, 4), PathBuf::from("out/trace.rank2.json"));
    assert_eq!(rank_path(Path::new("trace"), 1, 2), PathBuf::from("trace.rank1"));
}

#[test]
fn phase_names_cover_the_step() {
    for n in [DATA, FORWARD, QUERY_FORWARD, EMA, KEY_FORWARD, LOSS, BACKWARD, COMM, OPTIMIZER, ENQUEUE] {
        let p = phase_of(n).unwrap();
        assert!(PHASES.contains(&p), "{n} -> {p}");
    }
    assert_eq!(phase_of("conv"), None);
}
