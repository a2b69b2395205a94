//! Checkpoints on the CPU: k steps + save + resume + k steps equals 2k uninterrupted steps bit
//! for bit (parameters, momentum encoder, BN statistics, optimiser, queue, scaler, losses); the
//! folder layout and pointer; keep-last pruning; per-rank files of a 2-rank group; --init-from.

mod checkpoint_util;

use checkpoint_util::*;
use moco_kernels::cpu::Cpu;
use moco_proto::config::{BnMode, Optimizer};
use moco_worker::checkpoint::tensors::TensorFile;
use moco_worker::checkpoint::{
    find_latest, init_from, resume, save, Checkpoint, SaveRequest, Snapshot, CHECKPOINTS, LATEST,
};
use moco_worker::collective::{on_local_ring, AsComm, Collective, RingOptions};
use moco_worker::data::SamplerPos;
use moco_worker::moco::comm::Solo;
use moco_worker::moco::{Moco, Views};
use moco_worker::model::topology::Part;

fn request(dir: &std::path::Path, pos: SamplerPos, keep: usize) -> SaveRequest<'_> {
    SaveRequest {
        run_dir: dir,
        run_id: "test-run",
        epoch: 0.0,
        data_position: pos,
        band_stats: None,
        keep_last: keep,
    }
}

/// Train 2k steps straight, and k + save + fresh process state + resume + k; compare.
fn resume_matches_uninterrupted(cfg: moco_proto::TrainConfig, k: u64, name: &str) {
    let ds = dataset(48);
    // Uninterrupted.
    let mut a = new_moco(&cfg);
    let mut la = loader(&ds, &cfg, SamplerPos::default());
    let losses_a = train_to(&mut a, &ds, &mut la, 2 * k);
    let want = Snapshot::of(&a).unwrap();

    // Interrupted: k steps, save, drop everything.
    let dir = temp_dir(name);
    let mut b = new_moco(&cfg);
    let mut lb = loader(&ds, &cfg, SamplerPos::default());
    let mut losses_b = train_to(&mut b, &ds, &mut lb, k);
    let mut req = request(&dir, lb.position(), 3);
    req.band_stats = Some(ds.stats());
    let saved = save(&b, &Solo, &req).unwrap();
    assert_eq!(saved.step, k);
    drop((b, lb));

    // A fresh state (as after a restart), resumed from the run folder.
    let ck = find_latest(&dir).unwrap().expect("a checkpoint");
    let mut c = new_moco(&cfg);
    let r = resume(&mut c, &ck, 0, 1).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.step, k);
    let mut lc = loader(&ds, &cfg, r.data_position);
    losses_b.extend(train_to(&mut c, &ds, &mut lc, 2 * k));

    assert_same_bits(&want, &Snapshot::of(&c).unwrap());
    assert_eq!(losses_a.len(), losses_b.len());
    for (x, y) in losses_a.iter().zip(&losses_b) {
        assert_eq!(x.step, y.step);
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "loss at step {}: {} vs {}", x.step, x.loss, y.loss);
        assert_eq!((x.lr, x.momentum, x.loss_scale), (y.lr, y.momentum, y.loss_scale), "step {}", x.step);
    }
    // The run actually moved (a test that compares two frozen states proves nothing).
    let init = new_moco(&cfg).params;
    let moved = want.params.iter().zip(&init).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    let applied: Vec<bool> = losses_a.iter().map(|m| m.applied).collect();
    eprintln!("{name}: {moved} of {} parameters moved; steps applied {applied:?}", init.len());
    assert!(moved > init.len() / 2, "{name}: only {moved} parameters moved; applied {applied:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_is_bit_identical_lars_shuffle_bn_queue() {
    // Shuffle BN draws its permutation from the micro-batch counter; the queue wraps (32 rows,
    // 8 keys per step) so its pointer and indices matter; the lr is in warmup.
    resume_matches_uninterrupted(tiny_cfg(), 3, "resume-lars")
}

#[test]
fn resume_is_bit_identical_adamw_amp_accumulation() {
    // AdamW's moments and bias-correction step count, the loss scaler under AMP emulation, and
    // accumulation over two micro-batches (the data position is in micro-batches).
    let mut cfg = tiny_cfg();
    cfg.optimizer = Optimizer::Adamw;
    cfg.base_lr = 1.5e-4 * 256.0;
    cfg.amp = true;
    cfg.accumulation = 2;
    cfg.bn_mode = BnMode::Local;
    cfg.queue_size = 64;
    resume_matches_uninterrupted(cfg, 5, "resume-adamw")
}

#[test]
fn save_writes_rank_file_meta_and_pointer() {
    let cfg = tiny_cfg();
    let dir = temp_dir("layout");
    let mut m = new_moco(&cfg);
    m.steps = 7;
    m.micro_total = 7;
    let saved = save(&m, &Solo, &request(&dir, SamplerPos { epoch: 0, batch: 7 }, 2)).unwrap();
    let step = dir.join(CHECKPOINTS).join("step-000007");
    assert_eq!(saved.dir, step);
    assert_eq!(std::fs::read_to_string(dir.join(CHECKPOINTS).join(LATEST)).unwrap().trim(), "step-000007");
    let ck = Checkpoint::open(&step).unwrap();
    assert_eq!((ck.meta.step, ck.meta.world, ck.meta.micro_total), (7, 1, 7));
    assert_eq!(ck.meta.data_position, SamplerPos { epoch: 0, batch: 7 });
    assert_eq!(ck.meta.config, cfg);
    let f = TensorFile::open(&step.join("rank-0.safetensors")).unwrap();
    assert_eq!(f.len_bytes(), ck.meta.files[0].bytes);
    // Conv weights in our OHWI layout; BN stats per layer; the queue with its indices.
    assert_eq!(f.shape("param.conv1.weight").unwrap(), vec![4, 7, 7, 3]);
    assert_eq!(f.shape("key_param.projector.0.weight").unwrap(), vec![64, m.topo.backbone.feat_dim]);
    assert!(!f.has("key_param.predictor.0.weight"));
    assert_eq!(f.shape("q_stats.layer4.2.bn3.running_var").unwrap(), vec![m.topo.backbone.feat_dim]);
    assert_eq!(f.shape("queue.keys").unwrap(), vec![32, 32]);
    assert_eq!(f.i64("queue.idx", Some(&[32])).unwrap(), vec![-1; 32]);
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("moco-rs-checkpoint"));
    // Every path a user may type resolves to it.
    for p in
        [dir.clone(), dir.join("last"), dir.join(CHECKPOINTS), step.clone(), step.join("rank-0.safetensors")]
    {
        assert_eq!(Checkpoint::resolve(&p).unwrap().dir, step, "{}", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keeps_the_last_k_checkpoints() {
    let dir = temp_dir("prune");
    let mut m = new_moco(&tiny_cfg());
    for s in 1..=5 {
        m.steps = s;
        let saved = save(&m, &Solo, &request(&dir, SamplerPos::default(), 2)).unwrap();
        if s >= 3 {
            assert_eq!(saved.pruned.len(), 1, "step {s}");
        }
    }
    let left: Vec<u64> = moco_worker::checkpoint::complete_checkpoints(&dir).iter().map(|c| c.0).collect();
    assert_eq!(left, vec![5, 4]);
    assert_eq!(find_latest(&dir).unwrap().unwrap().step(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_ranks_write_their_own_files_and_load_their_own_state() {
    let mut cfg = tiny_cfg();
    cfg.bn_mode = BnMode::Local; // statistics differ per rank: each rank must get its own back
    let dir = temp_dir("ranks");
    let n = 4;
    let per = n * 32 * 32 * 3;
    let x: Vec<f32> = (0..4 * per).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let snaps = on_local_ring(2, RingOptions::default(), |ring| {
        let r = ring.rank();
        let comm = AsComm(&ring);
        let mut m = Moco::new(Cpu { amp: false }, &cfg, 3, r, 2).unwrap();
        let idx: Vec<i64> = (0..n as i64).map(|i| i + 10 * r as i64).collect();
        let v = Views {
            x1: &x[r * per..(r + 1) * per],
            x2: &x[(r + 2) * per..(r + 3) * per],
            idx: &idx,
            n,
            size: 32,
            channels: 3,
        };
        m.micro_batch(&comm, &v, 0.99).unwrap();
        m.optimizer_step(&comm, 0.1).unwrap();
        save(&m, &comm, &request(&dir, SamplerPos { epoch: 0, batch: 1 }, 2)).unwrap();
        Snapshot::of(&m).unwrap()
    })
    .unwrap();
    assert_ne!(bits(&snaps[0].q_stats), bits(&snaps[1].q_stats), "ranks saw different data");
    let ck = find_latest(&dir).unwrap().unwrap();
    assert_eq!(ck.meta.world, 2);
    for (r, want) in snaps.iter().enumerate() {
        assert_same_bits(want, &ck.load_snapshot(r).unwrap());
    }
    // Shared state is stored once, in rank 0's file.
    let f1 = TensorFile::open(&ck.dir.join("rank-1.safetensors")).unwrap();
    assert!(!f1.has("param.conv1.weight") && f1.has("q_stats.bn1.running_mean") && f1.has("queue.keys"));
    // Resuming needs the same world size.
    let mut one = new_moco(&cfg);
    let e = resume(&mut one, &ck, 0, 1).unwrap_err().to_string();
    assert!(e.contains("written by 2 ranks, this run has 1"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_from_carries_weights_only_and_says_so() {
    let cfg = tiny_cfg();
    let ds = dataset(48);
    let dir = temp_dir("initfrom");
    let mut a = new_moco(&cfg);
    let mut la = loader(&ds, &cfg, SamplerPos::default());
    train_to(&mut a, &ds, &mut la, 2);
    save(&a, &Solo, &request(&dir, la.position(), 2)).unwrap();
    let ck = Checkpoint::resolve(&dir).unwrap();

    // Another preset: other heads, other optimiser, same backbone.
    let mut other = cfg.clone();
    other.proj_hidden = 32;
    other.optimizer = Optimizer::Sgd;
    other.queue_size = 0;
    let mut b = new_moco(&other);
    let fresh_projector = b.params[b.topo.param("projector.0.weight").unwrap().range()].to_vec();
    let rep = init_from(&mut b, &ck).unwrap();
    assert!(
        rep.warning.contains("NOT carried over") && rep.warning.contains("optimiser state"),
        "{}",
        rep.warning
    );
    assert!(rep.warning.contains("projector hidden width 64 (this run: 32)"), "{}", rep.warning);
    let bb = b.topo.part_len(Part::Backbone);
    assert_eq!(bits(&b.params[..bb]), bits(&a.params[..bb]), "backbone copied");
    assert_eq!(bits(&b.key_params[..bb]), bits(&a.key_params[..bb]), "momentum backbone copied");
    assert_eq!(b.params[b.topo.param("projector.0.weight").unwrap().range()], fresh_projector[..]);
    assert!(
        rep.fresh.iter().all(|n| n.starts_with("projector.") || n.starts_with("predictor.")),
        "{:?}",
        rep.fresh
    );
    assert_eq!((b.steps, b.micro_total, b.opt.steps), (0, 0, 0));

    // Another width cannot start from it.
    let mut wide = cfg.clone();
    wide.width = 0.125;
    let e = init_from(&mut new_moco(&wide), &ck).unwrap_err().to_string();
    assert!(e.contains("width 0.0625 (this run: 0.125)"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_rejects_structural_changes_and_warns_about_others() {
    let cfg = tiny_cfg();
    let dir = temp_dir("resumecfg");
    let m = new_moco(&cfg);
    save(&m, &Solo, &request(&dir, SamplerPos::default(), 2)).unwrap();
    let ck = find_latest(&dir).unwrap().unwrap();

    let mut longer = cfg.clone();
    longer.epochs = 8;
    let r = resume(&mut new_moco(&longer), &ck, 0, 1).unwrap();
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("epochs changed from 4 to 8"), "{:?}", r.warnings);

    let mut bigger = cfg.clone();
    bigger.batch = 8;
    let e = resume(&mut new_moco(&bigger), &ck, 0, 1).unwrap_err().to_string();
    assert!(e.contains("batch 4 -> 8") && e.contains("--init-from"), "{e}");

    let mut wider = cfg.clone();
    wider.width = 0.125;
    let e = resume(&mut new_moco(&wider), &ck, 0, 1).unwrap_err().to_string();
    assert!(e.contains("width"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_with_another_queue_precision_converts_the_keys_and_says_so() {
    use moco_proto::config::QueuePrecision;
    let cfg = tiny_cfg();
    let dir = temp_dir("resumeqprec");
    let m = new_moco(&cfg);
    let keys32 = m.queue.as_ref().unwrap().keys.clone();
    save(&m, &Solo, &request(&dir, SamplerPos::default(), 2)).unwrap();
    let ck = find_latest(&dir).unwrap().unwrap();

    // fp32 checkpoint, fp16 run: the keys are rounded to nearest, and the warning says so.
    let c16 = moco_proto::TrainConfig { queue_precision: QueuePrecision::Fp16, ..cfg.clone() };
    let mut h = new_moco(&c16);
    let r = resume(&mut h, &ck, 0, 1).unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("queue_precision changed") && r.warnings[0].contains("rounded to fp16"));
    let q = h.queue.as_ref().unwrap();
    assert_eq!(q.precision, QueuePrecision::Fp16);
    let want: Vec<f32> = keys32.iter().map(|&k| half::f16::from_f32(k).to_f32()).collect();
    assert_eq!(bits(&q.keys), bits(&want));
    assert_ne!(bits(&q.keys), bits(&keys32), "the fp32 keys were not all fp16 values");

    // fp16 checkpoint, fp32 run: the fp16 values are kept exactly.
    let dir16 = temp_dir("resumeqprec16");
    save(&h, &Solo, &request(&dir16, SamplerPos::default(), 2)).unwrap();
    let ck16 = find_latest(&dir16).unwrap().unwrap();
    let mut f = new_moco(&cfg);
    let r = resume(&mut f, &ck16, 0, 1).unwrap();
    assert!(r.warnings[0].contains("kept exactly"), "{:?}", r.warnings);
    assert_eq!(f.queue.as_ref().unwrap().precision, QueuePrecision::Fp32);
    assert_eq!(bits(&f.queue.as_ref().unwrap().keys), bits(&want));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir16);
}
