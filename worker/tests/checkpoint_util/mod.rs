//! Helpers of the checkpoint, export and eval tests: a tiny config, temporary run folders,
//! training a few steps through the real loop and loader.
#![allow(dead_code)]

use moco_kernels::cpu::Cpu;
use moco_proto::config::{AugConfig, BnMode, Optimizer, QueuePrecision, TrainConfig};
use moco_worker::checkpoint::Snapshot;
use moco_worker::data::{Augmenter, Dataset, Sampler, SamplerPos, SyntheticDataset, SyntheticSpec};
use moco_worker::moco::comm::Solo;
use moco_worker::moco::Moco;
use moco_worker::train::{train, Loader, Schedule, StepMetrics};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// ResNet-50 at width 1/16 on 32-px crops with small heads: a step takes milliseconds.
pub fn tiny_cfg() -> TrainConfig {
    TrainConfig {
        width: 0.0625,
        image_size: 32,
        proj_hidden: 64,
        dim: 32,
        pred_hidden: 64,
        batch: 4,
        global_batch: 0,
        accumulation: 1,
        effective_negatives: false,
        queue_size: 32,
        temperature: 0.2,
        momentum: 0.99,
        momentum_cosine: true,
        mask_own: true,
        bn_mode: BnMode::Shuffle,
        shuffle_groups: 2,
        optimizer: Optimizer::Lars,
        base_lr: 0.5,
        weight_decay: 1e-4,
        warmup_epochs: 1.0,
        epochs: 4,
        amp: false,
        recompute: false,
        queue_precision: QueuePrecision::Fp32,
        aug: AugConfig::default(),
        seed: 11,
    }
}

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let d = std::env::temp_dir().join(format!("moco-{name}-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn dataset(count: usize) -> Arc<dyn Dataset> {
    Arc::new(SyntheticDataset::new(SyntheticSpec { count, size: 32 }, 5).unwrap())
}

pub fn schedule(cfg: &TrainConfig, ds_len: usize) -> Schedule {
    let micro_per_epoch = (ds_len / cfg.batch) as u64;
    Schedule {
        peak_lr: cfg.base_lr as f64 * (cfg.batch * cfg.accumulation) as f64 / 256.0,
        warmup_epochs: cfg.warmup_epochs as f64,
        epochs: cfg.epochs as f64,
        steps_per_epoch: micro_per_epoch / cfg.accumulation as u64,
        accumulation: cfg.accumulation,
        m0: cfg.momentum as f64,
        m_cosine: cfg.momentum_cosine,
        images_per_step: (cfg.batch * cfg.accumulation) as u64,
    }
}

pub fn loader(ds: &Arc<dyn Dataset>, cfg: &TrainConfig, start: SamplerPos) -> Loader {
    let aug = Arc::new(Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats()).unwrap());
    let sampler = Sampler::new(ds.len(), cfg.batch, 0, 1, cfg.seed).unwrap();
    Loader::start(ds.clone(), aug, sampler, start, 1, 2).unwrap()
}

pub fn new_moco(cfg: &TrainConfig) -> Moco<Cpu> {
    Moco::new(Cpu { amp: cfg.amp }, cfg, 3, 0, 1).unwrap()
}

/// Train `moco` from its current step to `end` through the real loop; returns every step's
/// metrics.
pub fn train_to(
    moco: &mut Moco<Cpu>,
    ds: &Arc<dyn Dataset>,
    loader: &mut Loader,
    end: u64,
) -> Vec<StepMetrics> {
    let sched = schedule(&moco.cfg, ds.len());
    let mut seen = Vec::new();
    let stop = AtomicBool::new(false);
    train(moco, &Solo, loader, &sched, end, &stop, &mut |m, _, _| {
        seen.push(*m);
        Ok(())
    })
    .unwrap();
    seen
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every tensor and counter of two snapshots equal bit for bit (names the first difference).
pub fn assert_same_bits(a: &Snapshot, b: &Snapshot) {
    for (name, x, y) in [
        ("params", &a.params, &b.params),
        ("key_params", &a.key_params, &b.key_params),
        ("q_stats", &a.q_stats, &b.q_stats),
        ("k_stats", &a.k_stats, &b.k_stats),
        ("opt_m", &a.opt_m, &b.opt_m),
        ("opt_v", &a.opt_v, &b.opt_v),
    ] {
        assert_eq!(x.len(), y.len(), "{name}: length");
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            panic!("{name}[{i}]: {} vs {}", x[i], y[i]);
        }
    }
    match (&a.queue, &b.queue) {
        (Some(p), Some(q)) => {
            assert_eq!(bits(&p.keys), bits(&q.keys), "queue keys");
            assert_eq!(p.idx, q.idx, "queue indices");
            assert_eq!(p.ptr, q.ptr, "queue pointer");
        }
        (None, None) => {}
        _ => panic!("one snapshot has a queue, the other not"),
    }
    assert_eq!(a.opt_steps, b.opt_steps, "optimiser steps");
    assert_eq!(a.scaler, b.scaler, "loss scaler");
    assert_eq!((a.micro_total, a.steps), (b.micro_total, b.steps), "counters");
}
