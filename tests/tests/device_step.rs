//! The device-resident step (issue #15) on the emulated CUDA device: host waits and host-device
//! bytes per optimiser step, measured as scripts/emu_step_counters.sh does (the counters of a
//! longer run minus those of a shorter one, so start-up and the final checkpoint cancel out),
//! must stay at what the step reached, so a host read that creeps back in fails here.
//!
//! Measured 2026-12-05 (results/2026-12-05-device-step.md): one rank 458 waits per step before,
//! 1 after (the metrics read); two ranks 460 before, 9 after the loss moved to the device, 1
//! after the loss's exchanges and SyncBN moved to the device collective as well. With the queue
//! on the device (item 4) the metrics read carries the queue's error flag too (16 bytes), and a
//! corrupted device pointer stops the run with an error naming it.

use moco_tests::{emu_env, launcher, TempDir, TINY_RUN};
use std::path::Path;
use std::process::{Command, Stdio};

/// The emulator's counters of rank 0 after training `steps` steps of TINY_RUN plus `extra`.
fn counters(ranks: usize, steps: u64, extra: &[&str], dir: &Path) -> serde_json::Value {
    let out = dir.join(format!("run-{steps}"));
    let steps_s = steps.to_string();
    let ranks_s = ranks.to_string();
    let mut cmd = Command::new(launcher());
    cmd.args(["--device", "cuda", "--gpus", &ranks_s, "--steps", &steps_s, "--out", out.to_str().unwrap()])
        .args(TINY_RUN)
        .args(extra)
        .env("MOCO_EMU_COUNTERS", dir.join(format!("counters-{steps}-{{pid}}.json")))
        .stdin(Stdio::null());
    for (k, v) in emu_env() {
        cmd.env(k, v);
    }
    let r = cmd.output().expect("the launcher starts");
    assert!(r.status.success(), "training failed:\n{}", String::from_utf8_lossy(&r.stderr));
    // The launcher starts the ranks in order: the lowest pid is rank 0. The launcher's own
    // file (its pre-flight driver query, `launcher doctor`'s quick part) launched nothing.
    let prefix = format!("counters-{steps}-");
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("the counters folder")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let pid = name.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok()?;
            let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
            (c["kernel_launches"].as_u64().unwrap_or(0) > 0).then_some((pid, p))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), ranks, "one counters file per rank: {files:?}");
    serde_json::from_str(&std::fs::read_to_string(&files[0].1).unwrap()).expect("counters JSON")
}

/// Per optimiser step: (host waits, pageable D2H waits, H2D bytes, D2H bytes).
fn per_step(ranks: usize, extra: &[&str]) -> (f64, f64, f64, f64) {
    let dir = TempDir::new("device-step");
    let (a, b) = (2, 4);
    let (s, l) = (counters(ranks, a, extra, dir.path()), counters(ranks, b, extra, dir.path()));
    let per = |v: &dyn Fn(&serde_json::Value) -> f64| (v(&l) - v(&s)) / (b - a) as f64;
    let pageable = |c: &serde_json::Value| {
        c["host_waits_by_reason"]["cuMemcpyDtoHAsync to pageable memory"].as_f64().unwrap_or(0.0)
    };
    let out = (
        per(&|c| c["host_waits"].as_f64().unwrap()),
        per(&pageable),
        per(&|c| c["h2d_bytes"].as_f64().unwrap()),
        per(&|c| c["d2h_bytes"].as_f64().unwrap()),
    );
    println!(
        "{ranks} rank(s) {extra:?}: waits {} (pageable {}), H2D {} B, D2H {} B per step",
        out.0, out.1, out.2, out.3
    );
    out
}

/// The input batch of TINY_RUN in bytes: two views of 8 images, 32x32x3, fp32 (AMP off).
const BATCH_BYTES: f64 = 2.0 * 8.0 * 32.0 * 32.0 * 3.0 * 4.0;

#[test]
fn one_rank_waits_once_per_step_and_moves_only_the_batch_and_scalars() {
    let (waits, _, h2d, d2h) = per_step(1, &[]);
    assert!(waits <= 1.0, "{waits} host waits per optimiser step (the metrics read is the only one)");
    // The inf/NaN flag, the queue's error flag and two loss terms come back (16 bytes);
    // nothing else.
    assert!(d2h <= 16.0, "{d2h} bytes device to host per step");
    // Each view goes up once (the key encoder's copy and shuffle are made on the device), plus
    // the labels, the images' dataset indices and a few scalars.
    assert!(h2d <= BATCH_BYTES + 256.0, "{h2d} bytes host to device per step");
}

#[test]
fn accumulation_micro_steps_add_no_host_wait() {
    // Two micro-batches per optimiser step, with LARS (trust ratios on the device): still one
    // wait per optimiser step, none in the micro-steps. fp32, because AMP's first steps skip
    // (the scale starts at 2^16) and a skipped step reads its diagnosis back on purpose.
    // Micro-batch negatives: each micro-batch crosses to the device once.
    let micro = ["--accumulation", "2", "--optimizer", "lars", "--no-effective-negatives"];
    let (waits, _, h2d, d2h) = per_step(1, &micro);
    assert!(waits <= 1.0, "{waits} host waits per optimiser step of 2 micro-batches");
    assert!(d2h <= 24.0, "{d2h} bytes device to host per step (2 flags + 2 x 2 loss terms)");
    assert!(h2d <= 2.0 * BATCH_BYTES + 512.0, "{h2d} bytes host to device per step (2 batches)");
    // The effective batch's negatives (the default at accumulation > 1): every micro-batch's
    // keys are made before any query forward, and the inputs wait in host memory rather than
    // device memory (the memory plan's "step keys" line), so each crosses twice: still no wait.
    let (waits, _, h2d, d2h) = per_step(1, &["--accumulation", "2", "--optimizer", "lars"]);
    assert!(waits <= 1.0, "{waits} host waits per optimiser step of 2 micro-batches (effective negatives)");
    assert!(d2h <= 24.0, "{d2h} bytes device to host per step (effective negatives)");
    assert!(h2d <= 4.0 * BATCH_BYTES + 512.0, "{h2d} bytes host to device per step (2 batches, twice each)");
}

#[test]
fn two_ranks_over_the_nccl_stand_in_wait_once_per_step_with_sync_bn() {
    // Every exchange of the step runs on the NCCL stand-in: the keys and queries, the loss's
    // (max, sum-exp) pairs, log-sum-exp and queue gradient, the verdict, the gradients, and here
    // SyncBN's moments and backward sums (one per BN layer and pass, which on the host Comm
    // would be hundreds of waits). Only the metrics read is left.
    let (waits, _, h2d, d2h) = per_step(2, &["--bn-mode", "sync"]);
    assert!(waits <= 1.0, "{waits} host waits per step on 2 ranks");
    assert!(d2h <= 16.0, "{d2h} bytes device to host per step");
    // This rank's batch, plus the labels and scalars (256 B on 2 ranks, measured).
    assert!(h2d <= BATCH_BYTES + 512.0, "{h2d} bytes host to device per step");
}

#[test]
fn a_corrupted_queue_pointer_writes_nothing_and_stops_the_run_naming_it() {
    // The fault-injection hook writes 3 into the queue's device pointer before the first step:
    // not a multiple of the 16 keys each step enqueues. The fused enqueue kernel refuses to
    // write, raises the queue's error flag, and the step's one metrics read stops the run.
    let dir = TempDir::new("queue-fault");
    let out = dir.path().join("run");
    let mut cmd = Command::new(launcher());
    cmd.args(["--device", "cuda", "--gpus", "1", "--steps", "2", "--out", out.to_str().unwrap()])
        .args(TINY_RUN)
        .env("MOCO_FAULT_QUEUE_PTR", "3")
        .stdin(Stdio::null());
    for (k, v) in emu_env() {
        cmd.env(k, v);
    }
    let r = cmd.output().expect("the launcher starts");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "a corrupted queue pointer must stop the run:\n{err}");
    for needle in [
        "the negative queue's enqueue was refused at step 1 on rank 0",
        "write pointer",
        "is 3",
        "Nothing was written",
        "Resume from the newest checkpoint",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert!(!out.join("checkpoints/latest").exists(), "no checkpoint is written after the refusal");
}
