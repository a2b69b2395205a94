//! The step's spans, seen through the trace layer: one tiny training step must report time in
//! every phase and every finer span it is supposed to open, and write a Chrome trace with them.

use moco_kernels::cpu::Cpu;
use moco_worker::collective::{AsComm, LocalCollective};
use moco_worker::data::{Augmenter, Dataset, SyntheticDataset, SyntheticSpec, TwoViewBatch};
use moco_worker::moco::{Moco, Views};
use moco_worker::trace;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn one_step_reports_every_phase_and_writes_them_to_the_trace() {
    let dir = std::env::temp_dir().join(format!("moco-trace-phases-{}", std::process::id()));
    let path = dir.join("trace.json");
    let mut cfg = moco_proto::presets::get("tiny").unwrap();
    cfg.batch = 8;
    cfg.queue_size = 64;
    let ds = SyntheticDataset::new(SyntheticSpec { count: 16, size: 64 }, 7).unwrap();
    let aug = Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let b = TwoViewBatch::build(&pool, &ds, &aug, 0, &(0..8).collect::<Vec<u32>>()).unwrap();
    let idx = b.indices_i64();
    let v = Views { x1: &b.x1, x2: &b.x2, idx: &idx, n: b.n, size: b.size, channels: b.channels };
    let mut moco = Moco::new(Cpu { amp: false }, &cfg, ds.bands(), 0, 1).unwrap();
    let local = LocalCollective;
    let comm = AsComm(&local);

    let (layer, guard) = trace::layer(Some(&path), 0);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let _d = tracing::info_span!("data").entered();
        drop(_d);
        moco.micro_batch(&comm, &v, 0.99).unwrap();
        moco.optimizer_step(&comm, 0.01).unwrap();
    });
    let totals = guard.totals();
    for name in
        ["data", "forward", "query_forward", "ema", "key_forward", "loss", "backward", "enqueue", "optimizer"]
    {
        assert!(totals.contains_key(name), "no {name:?} span in {totals:?}");
    }
    // One rank exchanges nothing: since the image indices stay on the device (issue #15 item
    // 2), no collective runs at all, not even a one-rank copy through the host Comm.
    assert!(!totals.contains_key("comm"), "a \"comm\" span on one rank: {totals:?}");
    assert_eq!(totals["query_forward"].count, 2, "one query forward per view");
    assert_eq!(totals["backward"].count, 1);
    let phases = guard.phase_seconds();
    for p in ["forward", "backward", "optimizer"] {
        assert!(phases.get(p).copied().unwrap_or(0.0) > 0.0, "phase {p} has no time: {phases:?}");
    }
    // Exclusive times add up to the inclusive time of the outermost spans.
    let outer: f64 =
        ["data", "forward", "backward", "enqueue", "optimizer"].iter().map(|n| totals[*n].inclusive_s).sum();
    let all: f64 = phases.values().sum();
    assert!((outer - all).abs() <= 1e-9 * outer.max(1.0) + 1e-9, "phases {all} s vs outer spans {outer} s");

    guard.finish().unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let names: std::collections::BTreeSet<&str> =
        v.as_array().unwrap().iter().filter(|e| e["ph"] == "X").filter_map(|e| e["name"].as_str()).collect();
    for name in ["forward", "backward", "optimizer", "enqueue", "loss"] {
        assert!(names.contains(name), "{name} missing from the trace: {names:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
