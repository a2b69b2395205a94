//! The MoCo step's behaviour on the CPU: initial loss, queue wrap-around, own-image masking,
//! loss scaling with injected overflow, accumulation, and the distributed equivalences
//! (sharded queue = unsharded; world 2 x N = world 1 x 2N under SyncBN), and key-side shuffle BN.

mod common;

use common::small_cfg as cfg;
use moco_kernels::cpu::{Cpu, HostBuf};
use moco_kernels::Backend;
use moco_proto::config::{BnMode, QueuePrecision, TrainConfig};
use moco_worker::collective::{on_local_ring, AsComm, Collective, RingOptions};
use moco_worker::moco::comm::{Comm, Solo};
use moco_worker::moco::loss::{contrastive, CtrIn};
use moco_worker::moco::queue::{QueueShard, NO_IMAGE};
use moco_worker::moco::{Moco, Views};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent random views for `n` images of 32x32x3.
fn views(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = n * 32 * 32 * 3;
    let x1 = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let x2 = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    (x1, x2, (0..n as i64).map(|i| 100 + i).collect())
}

fn unit_rows(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    for r in v.chunks_mut(d) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[test]
fn initial_loss_is_near_4t_ln_of_negatives_plus_one() {
    // A random network maps unrelated views to nearly unrelated unit vectors, so each term's
    // softmax over N*W + K logits is close to uniform: loss ~ 2 * 2T * ln(N*W + K) (MOCO.md).
    // Logits of random unit vectors in d dimensions have std s = 1/(T sqrt d), which raises the
    // expected log-sum-exp by about s^2/2: at d = 256, T = 0.2 that is 0.05 on ln(264) = 5.6,
    // so 5% covers it; at the fixtures' d = 32 it would be 0.39 (7%).
    let mut c = cfg(8, 256);
    c.dim = 256;
    c.proj_hidden = 256;
    c.pred_hidden = 256;
    let mut m = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    let (x1, x2, idx) = views(8, 1);
    let out = m
        .micro_batch(&Solo, &Views { x1: &x1, x2: &x2, idx: &idx, n: 8, size: 32, channels: 3 }, 0.99)
        .unwrap();
    let expect = 4.0 * c.temperature * ((8 + 256) as f32).ln();
    assert!((out.loss - expect).abs() < 0.05 * expect, "initial loss {} vs 4T ln(N+K) = {expect}", out.loss);
}

#[test]
fn queue_wraps_around_and_refuses_partial_writes() {
    let be = Cpu { amp: false };
    let mut q = QueueShard::init(&be, 8, 2, 0, 1, 3, QueuePrecision::Fp32).unwrap();
    assert!(q.idx_host(&be).unwrap().iter().all(|&i| i == NO_IMAGE));
    let mut error = [0.0f32];
    let (mut sk, mut si, mut sp) = (vec![0.0f32; 8], vec![0.0f32; 4], vec![0.0f32]);
    for (step, base) in [0.0f32, 10.0, 20.0].into_iter().enumerate() {
        let keys: Vec<f32> = (0..8).map(|i| base + i as f32).collect();
        let idx: Vec<f32> = (0..4).map(|i| (step * 10 + i) as f32).collect();
        q.enqueue(&be, &keys.into(), &idx.into(), &mut error, [&mut sk, &mut si, &mut sp]).unwrap();
    }
    // Three writes of 4 rows into 8: the third overwrote rows 0..4, which went to the saved rows.
    assert_eq!((q.ptr_host(&be).unwrap(), error[0]), (4, 0.0));
    assert_eq!(&q.keys[..8], &[20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0]);
    assert_eq!(&q.keys[8..], &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]);
    assert_eq!(q.idx_host(&be).unwrap(), vec![20, 21, 22, 23, 10, 11, 12, 13]);
    assert_eq!(
        (&sk[..], &si[..], sp[0]),
        (&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0][..], &[0.0, 1.0, 2.0, 3.0][..], 0.0)
    );
    let err = q.enqueue(
        &be,
        &vec![0.0; 6].into(),
        &vec![1.0, 2.0, 3.0].into(),
        &mut error,
        [&mut sk, &mut si, &mut sp],
    );
    assert!(err.unwrap_err().to_string().contains("multiple"));
    // A corrupted device pointer: nothing written, the error flag raised, the error names it.
    let before = (q.keys.clone(), q.idx.clone());
    q.ptr[0] = 2.0;
    q.enqueue(&be, &vec![9.0; 8].into(), &vec![9.0; 4].into(), &mut error, [&mut sk, &mut si, &mut sp])
        .unwrap();
    assert_eq!(error[0], 2.0);
    assert!(q.keys == before.0 && q.idx == before.1, "nothing written");
    let msg = q.error(&be, error[0], 0, 7).to_string();
    assert!(msg.contains("write pointer") && msg.contains(" 2") && msg.contains("Resume"), "{msg}");
}

/// contrastive() for `n` local rows out of `nw` global rows on a given queue shard.
fn ctr_loss(
    comm: &dyn Comm,
    q: &[f32],
    k_all: &[f32],
    idx_all: &[i64],
    queue: &QueueShard<Cpu>,
    mask: bool,
) -> (f32, Vec<f32>) {
    let d = queue.dim;
    let idx_dev: HostBuf = idx_all.iter().map(|&i| i as f32).collect::<Vec<f32>>().into();
    let inp = CtrIn {
        q: &q.to_vec().into(),
        k_all: &k_all.to_vec().into(),
        keys_per_rank: q.len() / d,
        key_offset: 0,
        q_idx_all: Some(&idx_dev),
        k_idx_all: None,
        n: q.len() / d,
        dim: d,
        temperature: 0.2,
        mask_own: mask,
        grad_scale: 1.0,
    };
    let mut loss = [0.0f32];
    let out = contrastive(&Cpu { amp: false }, comm, None, &inp, Some(queue), &mut loss).unwrap();
    (loss[0], out.dq.to_vec())
}

fn shard(keys: &[f32], idx: &[i64], d: usize) -> QueueShard<Cpu> {
    QueueShard::from_host(&Cpu { amp: false }, keys, idx, 0, d, QueuePrecision::Fp32).unwrap()
}

#[test]
fn own_image_entries_are_masked_out_of_the_negatives() {
    let (n, d, k) = (4, 8, 12);
    let q = unit_rows(n, d, 1);
    let keys = unit_rows(n, d, 2);
    let qk = unit_rows(k, d, 3);
    let idx: Vec<i64> = vec![5, 6, 7, 8];
    // Rows 1 and 9 hold older keys of image 6 (query row 1); row 4 of image 5 (query row 0).
    let mut qidx = vec![NO_IMAGE; k];
    qidx[1] = 6;
    qidx[9] = 6;
    qidx[4] = 5;
    let (masked, _) = ctr_loss(&Solo, &q, &keys, &idx, &shard(&qk, &qidx, d), true);
    let (unmasked, _) = ctr_loss(&Solo, &q, &keys, &idx, &shard(&qk, &qidx, d), false);
    assert!((masked - unmasked).abs() > 1e-4, "masking changed nothing");
    // Masking equals removing those rows for exactly the queries they belong to: compute each
    // row's loss with its own reduced queue and average.
    let mut per_row = 0.0f32;
    for i in 0..n {
        let keep: Vec<usize> = (0..k).filter(|&j| qidx[j] != idx[i]).collect();
        let kept: Vec<f32> = keep.iter().flat_map(|&j| qk[j * d..(j + 1) * d].to_vec()).collect();
        let kidx: Vec<i64> = keep.iter().map(|&j| qidx[j]).collect();
        let logits: Vec<f32> = (0..n)
            .map(|j| dot(&q[i * d..(i + 1) * d], &keys[j * d..(j + 1) * d]) / 0.2)
            .chain((0..kidx.len()).map(|j| dot(&q[i * d..(i + 1) * d], &kept[j * d..(j + 1) * d]) / 0.2))
            .collect();
        let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f32>().ln();
        per_row += (lse - logits[i]) / n as f32 * 2.0 * 0.2;
    }
    assert!((masked - per_row).abs() < 1e-5, "masked loss {masked} vs rows removed {per_row}");
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn sharded_queue_loss_equals_unsharded() {
    // World 1 with the whole queue and all 8 queries vs world 2 with half of each: the
    // distributed log-sum-exp must give the same loss and the same query gradients.
    let (n, d, k) = (8, 16, 24);
    let q = unit_rows(n, d, 4);
    let keys = unit_rows(n, d, 5);
    let qk = unit_rows(k, d, 6);
    let idx: Vec<i64> = (0..n as i64).collect();
    let mut qidx: Vec<i64> = (0..k as i64).map(|j| if j % 5 == 0 { j % 8 } else { NO_IMAGE }).collect();
    qidx[13] = 6;
    let (loss1, dq1) = ctr_loss(&Solo, &q, &keys, &idx, &shard(&qk, &qidx, d), true);
    let results = on_local_ring(2, RingOptions::default(), |ring| {
        let r = ring.rank();
        let comm = AsComm(&ring);
        let half = k / 2;
        let my_shard = shard(&qk[r * half * d..(r + 1) * half * d], &qidx[r * half..(r + 1) * half], d);
        ctr_loss(&comm, &q[r * 4 * d..(r + 1) * 4 * d], &keys, &idx, &my_shard, true)
    })
    .unwrap();
    let loss2 = (results[0].0 + results[1].0) / 2.0;
    assert!((loss1 - loss2).abs() < 1e-5 * loss1.abs(), "unsharded {loss1} vs sharded {loss2}");
    // World 2 rows carry 1/N of their rank's mean; world 1 rows 1/(2N): a factor 2.
    let dq2: Vec<f32> = results.iter().flat_map(|r| r.1.iter().map(|g| g / 2.0)).collect();
    for (a, b) in dq1.iter().zip(&dq2) {
        assert!((a - b).abs() < 1e-5, "dq {a} vs {b}");
    }
}

#[test]
fn overflow_skips_the_step_and_halves_the_scale() {
    let mut c = cfg(4, 32);
    c.amp = true;
    let mut m = Moco::new(Cpu { amp: true }, &c, 3, 0, 1).unwrap();
    let (x1, x2, idx) = views(4, 2);
    let v = Views { x1: &x1, x2: &x2, idx: &idx, n: 4, size: 32, channels: 3 };
    m.micro_batch(&Solo, &v, 0.99).unwrap();
    let before = m.params.clone();
    m.grads[17] = f32::INFINITY;
    let out = m.optimizer_step(&Solo, 0.5).unwrap();
    assert!(!out.applied);
    assert_eq!(out.scale, 32768.0);
    assert_eq!(m.params, before, "a skipped step must not touch the weights");
    assert!(m.grads.iter().all(|&g| g == 0.0), "gradients are cleared after a skipped step");
    // Real fp16 overflow (emulated rounding) may skip more steps at first, as with PyTorch's
    // GradScaler: every skip halves the scale, and a clean step applies without changing it.
    let mut scale = out.scale;
    let mut applied = false;
    for _ in 0..16 {
        m.micro_batch(&Solo, &v, 0.99).unwrap();
        let out = m.optimizer_step(&Solo, 0.5).unwrap();
        if out.applied {
            assert_eq!(out.scale, scale, "a clean step keeps the scale (growth needs 2000)");
            applied = true;
            break;
        }
        assert_eq!(out.scale, scale / 2.0);
        assert_eq!(m.params, before);
        scale = out.scale;
    }
    assert!(applied, "no clean step within 16 halvings");
    assert_ne!(m.params, before);
}

#[test]
fn amp_emulation_rounds_to_fp16_and_tracks_fp32() {
    let c = cfg(4, 32);
    let mut full = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    let mut ca = c.clone();
    ca.amp = true;
    let mut half = Moco::new(Cpu { amp: true }, &ca, 3, 0, 1).unwrap();
    let (x1, x2, idx) = views(4, 3);
    let v = Views { x1: &x1, x2: &x2, idx: &idx, n: 4, size: 32, channels: 3 };
    let a = full.micro_batch(&Solo, &v, 0.99).unwrap().loss;
    let b = half.micro_batch(&Solo, &v, 0.99).unwrap().loss;
    assert_ne!(a, b, "AMP emulation must change the numbers");
    assert!((a - b).abs() < 1e-2 * a, "fp16 loss {b} strays from fp32 {a}");
    // The compute copy of the weights holds fp16 values.
    let w = half.weights.as_ref().unwrap();
    assert!(w.iter().all(|&x| half::f16::from_f32(x).to_f32() == x));
}

#[test]
fn an_fp16_queue_trains_stores_fp16_values_and_tracks_the_fp32_queue() {
    let is_f16 = |v: &[f32]| v.iter().all(|&x| half::f16::from_f32(x).to_f32() == x);
    let c = cfg(4, 32);
    let mut full = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    let c16 = TrainConfig { queue_precision: QueuePrecision::Fp16, ..c.clone() };
    let mut half = Moco::new(Cpu { amp: false }, &c16, 3, 0, 1).unwrap();
    assert!(!is_f16(&full.queue.as_ref().unwrap().keys), "the fp32 queue's random keys are not all fp16");
    assert!(is_f16(&half.queue.as_ref().unwrap().keys), "the fp16 queue's initial keys are rounded");
    let before = half.params.clone();
    for step in 0..3u64 {
        let (x1, x2, idx) = views(4, 40 + step);
        let v = Views { x1: &x1, x2: &x2, idx: &idx, n: 4, size: 32, channels: 3 };
        let a = full.micro_batch(&Solo, &v, 0.99).unwrap().loss;
        let b = half.micro_batch(&Solo, &v, 0.99).unwrap().loss;
        assert!(b.is_finite(), "step {step}: fp16-queue loss {b}");
        if step == 0 {
            // Same weights, only the queue's rounding differs (later steps' weights differ too).
            assert_ne!(a, b, "the logits read the rounded queue");
            assert!((a - b).abs() < 1e-2 * a, "fp16-queue loss {b} vs fp32 {a}");
        }
        assert!(full.optimizer_step(&Solo, 0.5).unwrap().applied);
        assert!(half.optimizer_step(&Solo, 0.5).unwrap().applied);
    }
    assert_ne!(half.params, before, "the fp16-queue run updates its weights");
    let q = half.queue.as_ref().unwrap();
    // 3 steps x 2 views x 4 keys = 24 of the 32 rows hold enqueued keys, rounded to fp16: the
    // enqueued keys themselves (the fp32 run's same rows) are not all fp16 values.
    let written = q.idx_host(&half.be).unwrap().iter().filter(|&&i| i != NO_IMAGE).count();
    assert_eq!((written, q.ptr_host(&half.be).unwrap()), (24, 24));
    assert!(is_f16(&q.keys), "every stored key is an fp16 value");
    let fq = &full.queue.as_ref().unwrap().keys;
    assert!(!is_f16(&fq[..24 * c.dim]), "the fp32 run keeps unrounded keys");
    // Rows 0..8 (step 0's keys, from identical weights) and 24..32 (the random initial keys)
    // are the fp32 run's values rounded to nearest: within half an fp16 ulp (|x| < 1: 2^-12).
    let d = c.dim;
    for r in (0..8).chain(24..32) {
        let (h, f) = (&q.keys[r * d..(r + 1) * d], &fq[r * d..(r + 1) * d]);
        assert!(h.iter().zip(f).all(|(h, f)| (h - f).abs() <= 1.0 / 4096.0), "row {r}");
    }
}

#[test]
fn accumulation_sums_micro_batches_with_one_ema_and_one_update() {
    let mut c = cfg(4, 32);
    c.accumulation = 2;
    let (x1, x2, idx) = views(8, 4);
    let per = 4 * 32 * 32 * 3;
    let mb = |i: usize| {
        (
            x1[i * per..(i + 1) * per].to_vec(),
            x2[i * per..(i + 1) * per].to_vec(),
            idx[i * 4..(i + 1) * 4].to_vec(),
        )
    };
    let (a1, a2, ai) = mb(0);
    let (b1, b2, bi) = mb(1);
    let va = Views { x1: &a1, x2: &a2, idx: &ai, n: 4, size: 32, channels: 3 };
    let vb = Views { x1: &b1, x2: &b2, idx: &bi, n: 4, size: 32, channels: 3 };

    // Accumulated: two micro-batches, one optimiser step.
    let mut acc = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    let key0 = acc.key_params.clone();
    acc.micro_batch(&Solo, &va, 0.9).unwrap();
    let key1 = acc.key_params.clone();
    acc.micro_batch(&Solo, &vb, 0.9).unwrap();
    assert_eq!(acc.key_params, key1, "the EMA runs once per optimiser step, not per micro-batch");
    assert_ne!(key1, key0);
    assert_eq!(
        acc.queue.as_ref().unwrap().ptr_host(&acc.be).unwrap(),
        16,
        "every micro-batch enqueues 2N keys"
    );
    let summed = acc.grads.clone();

    // The same two micro-batches, gradients taken separately from the same state.
    let mut sep = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    sep.micro_batch(&Solo, &va, 0.9).unwrap();
    let g1 = std::mem::replace(&mut sep.grads, vec![0.0; summed.len()].into());
    sep.micro_batch(&Solo, &vb, 0.9).unwrap();
    let scale = summed.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for (i, (s, (a, b))) in summed.iter().zip(g1.iter().zip(&sep.grads)).enumerate() {
        assert!((s - (a + b)).abs() <= 1e-6 * scale, "grad[{i}]: accumulated {s} vs {a} + {b}");
    }
    // The update uses the mean of the micro-batch gradients.
    let mut mean = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
    mean.grads = g1.iter().zip(&sep.grads).map(|(a, b)| a + b).collect();
    mean.micro_in_step = 2;
    acc.optimizer_step(&Solo, 0.5).unwrap();
    mean.optimizer_step(&Solo, 0.5).unwrap();
    let pscale = acc.params.iter().fold(0.0f32, |m, p| m.max(p.abs()));
    for (a, b) in acc.params.iter().zip(&mean.params) {
        assert!((a - b).abs() <= 1e-6 * pscale);
    }
    let _ = Cpu { amp: false }.name();
}

#[test]
fn world_two_equals_world_one_with_twice_the_batch() {
    // SyncBN: statistics over the global batch either way; gradients averaged over ranks equal
    // the gradient of the mean over the global batch. Differences are float reassociation
    // (moment merging, rank-order sums), so compare each tensor's UPDATE to 1e-3 of its scale.
    let mut c1 = cfg(8, 32);
    c1.bn_mode = BnMode::Sync;
    let mut c2 = c1.clone();
    c2.batch = 4;
    let (x1, x2, idx) = views(8, 5);
    let mut one = Moco::new(Cpu { amp: false }, &c1, 3, 0, 1).unwrap();
    let start = one.params.clone();
    let l1 = one
        .micro_batch(&Solo, &Views { x1: &x1, x2: &x2, idx: &idx, n: 8, size: 32, channels: 3 }, 0.99)
        .unwrap();
    one.optimizer_step(&Solo, 0.5).unwrap();
    let per = 4 * 32 * 32 * 3;
    let results = on_local_ring(2, RingOptions::default(), |ring| {
        let r = ring.rank();
        let comm = AsComm(&ring);
        let mut m = Moco::new(Cpu { amp: false }, &c2, 3, r, 2).unwrap();
        let (a, b, i) = (&x1[r * per..(r + 1) * per], &x2[r * per..(r + 1) * per], &idx[r * 4..(r + 1) * 4]);
        let l =
            m.micro_batch(&comm, &Views { x1: a, x2: b, idx: i, n: 4, size: 32, channels: 3 }, 0.99).unwrap();
        m.optimizer_step(&comm, 0.5).unwrap();
        (l.loss, m.params, m.key_params)
    })
    .unwrap();
    let l2 = (results[0].0 + results[1].0) / 2.0;
    assert!((l1.loss - l2).abs() < 1e-5 * l1.loss, "world 1 loss {} vs world 2 {l2}", l1.loss);
    assert_eq!(results[0].1, results[1].1, "ranks must hold identical weights");
    assert_eq!(results[0].2, one.key_params, "EMA is element-wise: identical");
    for p in &one.topo.params {
        let r = p.range();
        let d1: Vec<f32> = one.params[r.clone()].iter().zip(&start[r.clone()]).map(|(a, b)| a - b).collect();
        let d2: Vec<f32> =
            results[0].1[r.clone()].iter().zip(&start[r.clone()]).map(|(a, b)| a - b).collect();
        let scale = d1.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in d1.iter().zip(&d2) {
            assert!((a - b).abs() <= 1e-3 * scale + 1e-9, "{}: update {a} vs {b}", p.name);
        }
    }
}

#[test]
fn bucketed_overlapped_all_reduce_equals_one_all_reduce() {
    // Two rings per rank: the main one (SyncBN, gathers) and one for gradient buckets. Buckets
    // sum in rank order like one whole-buffer all-reduce, so the weights must be bit-identical.
    use moco_worker::collective::local_ring;
    use moco_worker::moco::grad_sync::GradSync;
    use std::sync::Arc;
    let mut c = cfg(4, 32);
    c.bn_mode = BnMode::Sync;
    c.accumulation = 2;
    let (x1, x2, idx) = views(16, 6);
    let per = 4 * 32 * 32 * 3;
    let run = |bucketed: bool| -> (Vec<f32>, usize) {
        let main = local_ring(2, RingOptions::default()).unwrap();
        let grads = local_ring(2, RingOptions::default()).unwrap();
        let handles: Vec<_> = main
            .into_iter()
            .zip(grads)
            .map(|(ring, gring)| {
                let (c, x1, x2, idx) = (c.clone(), x1.clone(), x2.clone(), idx.clone());
                std::thread::spawn(move || {
                    let r = ring.rank();
                    let comm = AsComm(&ring);
                    let mut m = Moco::new(Cpu { amp: false }, &c, 3, r, 2).unwrap();
                    if bucketed {
                        // Small buckets so that many leave during the backward.
                        m.grad_sync = Some(GradSync::new(Arc::new(gring), 4096).unwrap());
                    }
                    let mut buckets = 0;
                    for micro in 0..2 {
                        let b = micro * 2 + r;
                        let (a, bb, i) = (
                            &x1[b * per..(b + 1) * per],
                            &x2[b * per..(b + 1) * per],
                            &idx[b * 4..(b + 1) * 4],
                        );
                        m.micro_batch(
                            &comm,
                            &Views { x1: a, x2: bb, idx: i, n: 4, size: 32, channels: 3 },
                            0.99,
                        )
                        .unwrap();
                        buckets = m.grad_sync.as_ref().map_or(0, |g| g.buckets());
                    }
                    m.optimizer_step(&comm, 0.5).unwrap();
                    (m.params.to_vec(), buckets)
                })
            })
            .collect();
        let mut out: Vec<(Vec<f32>, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(out[0].0, out[1].0);
        out.remove(0)
    };
    let (plain, none) = run(false);
    let (bucketed, buckets) = run(true);
    assert_eq!(none, 0);
    assert!(buckets > 3, "only {buckets} buckets left during the backward");
    assert_eq!(plain, bucketed, "bucketed all-reduce must give bit-identical weights");
}

/// Shuffle BN on the key side: each image's key is normalised with the statistics of the group
/// it was shuffled into, and handed back in its own place. The test does not know the seeded
/// permutation: it computes every image's key for every possible partner (Local BN over just
/// that pair) and requires that each shuffled key equals exactly one of them, that the partners
/// pair up, and that the keys differ from plain Local BN over the whole batch.
#[test]
fn shuffle_bn_normalises_each_key_within_its_shuffled_group() {
    let n = 4;
    let per = 32 * 32 * 3;
    let (x1, x2, idx) = views(n, 21);
    // The keys of a micro-batch as enqueued: view 1's n rows, then view 2's.
    let keys_of = |bn: BnMode, groups: usize, imgs: &[usize]| -> Vec<Vec<f32>> {
        let mut c = cfg(imgs.len(), 32);
        c.bn_mode = bn;
        c.shuffle_groups = groups;
        let pick = |x: &[f32]| -> Vec<f32> {
            imgs.iter().flat_map(|&i| x[i * per..(i + 1) * per].to_vec()).collect()
        };
        let (a, b) = (pick(&x1), pick(&x2));
        let ids: Vec<i64> = imgs.iter().map(|&i| idx[i]).collect();
        let mut m = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
        m.micro_batch(&Solo, &Views { x1: &a, x2: &b, idx: &ids, n: imgs.len(), size: 32, channels: 3 }, 0.9)
            .unwrap();
        let q = m.queue.as_ref().unwrap();
        (0..2 * imgs.len()).map(|r| q.keys[r * q.dim..(r + 1) * q.dim].to_vec()).collect()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4);

    let shuffled = keys_of(BnMode::Shuffle, 2, &[0, 1, 2, 3]);
    let local = keys_of(BnMode::Local, 2, &[0, 1, 2, 3]);
    // pair_keys[(i, j)] = keys of i and j under Local BN over {i, j}, as enqueued.
    let mut pair_keys = std::collections::BTreeMap::new();
    for i in 0..n {
        for j in i + 1..n {
            pair_keys.insert((i, j), keys_of(BnMode::Local, 2, &[i, j]));
        }
    }
    for view in 0..2 {
        let mut partner = [usize::MAX; 4];
        for i in 0..n {
            let got = &shuffled[view * n + i];
            assert!(
                !close(got, &local[view * n + i]),
                "view {view} image {i}: shuffle BN gave Local BN's key"
            );
            let matches: Vec<usize> = (0..n)
                .filter(|&j| j != i)
                .filter(|&j| {
                    let (lo, hi) = (i.min(j), i.max(j));
                    let row = if i == lo { 0 } else { 1 };
                    close(got, &pair_keys[&(lo, hi)][view * 2 + row])
                })
                .collect();
            assert_eq!(matches.len(), 1, "view {view} image {i}: key matches the groups with {matches:?}");
            partner[i] = matches[0];
        }
        for i in 0..n {
            assert_eq!(partner[partner[i]], i, "view {view}: groups {partner:?} do not pair up");
        }
    }
}

/// The step's device-collective path (NCCL on GPUs: gradient all-reduce and key all-gather on
/// device buffers) gives the same bits as the host path, here with the host-staged
/// implementation over the same ring: what differs is only where the step hands its buffers.
#[test]
fn device_collective_path_equals_the_host_path() {
    use moco_worker::moco::device_comm::{DeviceComm, HostStaged};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    /// Counts the calls [all_reduce, all_gather, all_gather_f32, reduce_scatter_sum_f32], so
    /// the test knows the path was taken.
    struct Counted(HostStaged, Arc<[AtomicUsize; 4]>);
    impl DeviceComm<Cpu> for Counted {
        fn world(&self) -> usize {
            DeviceComm::<Cpu>::world(&self.0)
        }
        fn all_reduce_sum(&self, be: &Cpu, buf: &mut HostBuf) -> moco_worker::error::Result<()> {
            self.1[0].fetch_add(1, Ordering::SeqCst);
            self.0.all_reduce_sum(be, buf)
        }
        fn all_gather(&self, be: &Cpu, send: &HostBuf) -> moco_worker::error::Result<HostBuf> {
            self.1[1].fetch_add(1, Ordering::SeqCst);
            self.0.all_gather(be, send)
        }
        fn all_gather_f32(&self, be: &Cpu, send: &HostBuf) -> moco_worker::error::Result<HostBuf> {
            self.1[2].fetch_add(1, Ordering::SeqCst);
            self.0.all_gather_f32(be, send)
        }
        fn reduce_scatter_sum_f32(&self, be: &Cpu, send: &HostBuf) -> moco_worker::error::Result<HostBuf> {
            self.1[3].fetch_add(1, Ordering::SeqCst);
            self.0.reduce_scatter_sum_f32(be, send)
        }
    }
    let mut c = cfg(4, 32);
    c.bn_mode = BnMode::Sync;
    c.accumulation = 2;
    // BN layers of the query encoder (backbone, projector, predictor) and of the key encoder.
    let topo = moco_worker::model::Topology::new(moco_worker::model::ModelDims::from_config(&c, 3));
    let backbone_bns =
        1 + topo.backbone.blocks.iter().map(|b| 3 + usize::from(b.downsample.is_some())).sum::<usize>();
    let head_bns =
        |h: &[moco_worker::model::topology::LinearSpec]| h.iter().filter(|l| l.bn.is_some()).count();
    let k_bns = backbone_bns + head_bns(&topo.projector);
    let q_bns = k_bns + head_bns(&topo.predictor);
    assert!(!c.recompute, "a recomputed forward would sync its statistics again");
    let (x1, x2, idx) = views(32, 8);
    let per = 4 * 32 * 32 * 3;
    let run = |device_path: bool| {
        on_local_ring(2, RingOptions::default(), |ring| {
            let r = ring.rank();
            let ring: Arc<dyn Collective> = Arc::new(ring);
            let comm = AsComm(ring.as_ref());
            let mut m = Moco::new(Cpu { amp: false }, &c, 3, r, 2).unwrap();
            let calls = Arc::new(std::array::from_fn(|_| AtomicUsize::new(0)));
            if device_path {
                m.dev_comm = Some(Box::new(Counted(HostStaged(ring.clone()), calls.clone())));
            }
            let mut losses = Vec::new();
            for step in 0..2 {
                for micro in 0..2 {
                    let b = (step * 2 + micro) * 2 + r; // this rank's block of 4 images
                    let (a, bb, i) =
                        (&x1[b * per..(b + 1) * per], &x2[b * per..(b + 1) * per], &idx[b * 4..(b + 1) * 4]);
                    let v = Views { x1: a, x2: bb, idx: i, n: 4, size: 32, channels: 3 };
                    losses.push(m.micro_batch(&comm, &v, 0.99).unwrap().loss);
                }
                m.optimizer_step(&comm, 0.5).unwrap();
            }
            if device_path {
                // Per rank and step: 1 gradient all-reduce and 1 of the inf/NaN verdict (a device
                // flag, so it never visits the host); per micro-batch, one SyncBN sum per BN layer
                // and pass: both views through the query encoder (forward and backward) and the
                // key encoder (forward).
                assert_eq!(
                    calls[0].load(Ordering::SeqCst),
                    2 * 2 + 4 * (2 * q_bns + 2 * k_bns + 2 * q_bns),
                    "gradient, verdict and SyncBN all-reduces on the device path"
                );
                // Per micro-batch and contrastive term (2 x 2 x 2 = 8): the query all-gather, the
                // (max, sum-exp) pairs and the log-sum-exp (fp32) and the queue gradient's
                // reduce-scatter; plus the 2 key all-gathers and the image indices' fp32
                // all-gather (own-image masking on the device) per micro-batch (4).
                assert_eq!(calls[1].load(Ordering::SeqCst), 8 + 8, "key and query all-gathers");
                assert_eq!(
                    calls[2].load(Ordering::SeqCst),
                    2 * 8 + 4,
                    "fp32 all-gathers of the loss and indices"
                );
                assert_eq!(calls[3].load(Ordering::SeqCst), 8, "queue-gradient reduce-scatters");
            }
            let q = m.queue.as_ref().unwrap();
            (losses, m.params, m.key_params, q.keys.clone(), q.ptr.clone())
        })
        .unwrap()
    };
    let host = run(false);
    let device = run(true);
    for r in 0..2 {
        assert_eq!(host[r].0, device[r].0, "rank {r}: losses");
        assert!(host[r].1 == device[r].1, "rank {r}: updated weights differ");
        assert!(host[r].2 == device[r].2, "rank {r}: momentum weights differ");
        assert!(host[r].3 == device[r].3 && host[r].4 == device[r].4, "rank {r}: queue differs");
    }
    assert!(
        host[0].1 != Moco::new(Cpu { amp: false }, &c, 3, 0, 2).unwrap().params,
        "the steps changed nothing"
    );
}
