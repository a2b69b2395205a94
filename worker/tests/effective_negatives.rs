//! Effective-batch negatives under accumulation (`effective_negatives`, moco::step_keys), on the
//! CPU backend: A micro-batches of n on one rank give the gradient, the loss terms and the
//! queue writes of one batch of A x n, and switching it off (or one micro-batch) is the
//! micro-batch path, bit for bit.
//!
//! The large batch is A ranks of n images with local BN: its BN statistics are then per n
//! images, as the micro-batches' are (one rank with A x n images and local BN would normalise
//! over all of them, which no micro-batch can see). Its keys are gathered in rank order, which
//! is the accumulated step's micro-batch order, so every query has the same positive column.

mod common;

use common::small_cfg;
use moco_kernels::cpu::Cpu;
use moco_proto::config::{BnMode, TrainConfig};
use moco_worker::collective::{on_local_ring, AsComm, Collective, RingOptions};
use moco_worker::moco::comm::Solo;
use moco_worker::moco::queue::NO_IMAGE;
use moco_worker::moco::{Moco, Views};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 4;
const A: usize = 2;
const QUEUE: usize = 32;
const PER: usize = 32 * 32 * 3;

fn cfg(accumulation: usize, effective: bool) -> TrainConfig {
    TrainConfig { accumulation, effective_negatives: effective, ..small_cfg(N, QUEUE) }
}

/// Two random views of A x N images with dataset indices 100...
fn data() -> (Vec<f32>, Vec<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let len = A * N * PER;
    let x1 = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let x2 = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    (x1, x2, (0..(A * N) as i64).map(|i| 100 + i).collect())
}

fn micro<'a>(d: &'a (Vec<f32>, Vec<f32>, Vec<i64>), j: usize) -> Views<'a> {
    Views {
        x1: &d.0[j * N * PER..(j + 1) * N * PER],
        x2: &d.1[j * N * PER..(j + 1) * N * PER],
        idx: &d.2[j * N..(j + 1) * N],
        n: N,
        size: 32,
        channels: 3,
    }
}

/// Dataset index of global queue row `g` before the step: every 4th row holds an older key of
/// one of the step's images, so the own-image mask has cells to remove on both sides.
fn queued_image(g: usize) -> i64 {
    if g.is_multiple_of(4) {
        100 + ((g / 4) % (A * N)) as i64
    } else {
        NO_IMAGE
    }
}

/// Tag rank `rank` of `world`'s shard with [`queued_image`].
fn tag_queue(m: &mut Moco<Cpu>, rank: usize, world: usize) {
    let q = m.queue.as_mut().unwrap();
    for (r, slot) in q.idx.iter_mut().enumerate() {
        *slot = queued_image(rank * QUEUE / world + r) as f32;
    }
}

/// What one rank's step left behind before the optimiser: its summed gradients, its loss terms
/// (`[micro][term]`), its queue shard (keys, indices, pointer), and its BN running statistics.
struct After {
    grads: Vec<f32>,
    terms: Vec<[f32; 2]>,
    keys: Vec<f32>,
    idx: Vec<i64>,
    ptr: usize,
    stats: (Vec<f32>, Vec<f32>),
}

fn after(m: &Moco<Cpu>, micros: usize) -> After {
    let q = m.queue.as_ref().unwrap();
    After {
        grads: m.grads.to_vec(),
        // metrics: [inf flag, queue error, then two loss terms per micro-batch].
        terms: (0..micros).map(|j| [m.metrics[2 + 2 * j], m.metrics[3 + 2 * j]]).collect(),
        keys: q.keys.to_vec(),
        idx: q.idx_host(&m.be).unwrap(),
        ptr: q.ptr_host(&m.be).unwrap(),
        stats: (m.q_stats.to_vec(), m.k_stats.to_vec()),
    }
}

/// One rank, A micro-batches of the step with the switch as given.
fn accumulated(effective: bool) -> (Moco<Cpu>, After) {
    let d = data();
    let mut m = Moco::new(Cpu { amp: false }, &cfg(A, effective), 3, 0, 1).unwrap();
    tag_queue(&mut m, 0, 1);
    let views: Vec<Views<'_>> = (0..A).map(|j| micro(&d, j)).collect();
    m.queue_step(&Solo, &views, 0.9).unwrap();
    let a = after(&m, A);
    (m, a)
}

/// The large batch: A ranks of N images each, one micro-batch, rank r holding micro-batch r.
fn large_batch() -> Vec<After> {
    let d = data();
    on_local_ring(A, RingOptions::default(), |ring| {
        let r = ring.rank();
        let comm = AsComm(&ring);
        let mut m = Moco::new(Cpu { amp: false }, &cfg(1, true), 3, r, A).unwrap();
        tag_queue(&mut m, r, A);
        m.queue_step(&comm, &[micro(&d, r)], 0.9).unwrap();
        after(&m, 1)
    })
    .unwrap()
}

/// Largest |a - b| over a parameter tensor, relative to the tensor's largest |b|.
fn worst_relative(m: &Moco<Cpu>, a: &[f32], b: &[f32]) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for p in &m.topo.params {
        let r = p.range();
        let scale = b[r.clone()].iter().fold(0.0f32, |s, v| s.max(v.abs()));
        if scale == 0.0 {
            continue;
        }
        let diff = a[r.clone()].iter().zip(&b[r]).fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, p.name.clone());
        }
    }
    worst
}

/// Gradient tolerance, relative to each tensor's largest gradient. The two sides run the same
/// kernels on the same rows; what differs is only the order of fp32 reductions in the loss:
/// the queue block's log-sum-exp is one shard of 32 rows against two shards of 16 combined
/// (max/sum-exp merging), the queue gradient reaches the queries through a reduce-scatter
/// instead of a local add, and the two ranks' gradients are summed after the backward instead
/// of accumulated during it. Each reorders sums of at most a few thousand fp32 terms
/// (relative error ~ terms x 2^-24, about 1e-4 at worst); observed: ~1e-6 (the test prints it).
const GRAD_TOL: f32 = 1e-4;

#[test]
fn effective_negatives_give_the_large_batch_gradient_and_queue() {
    let big = large_batch();
    let (m, acc) = accumulated(true);

    // Loss terms: micro-batch j's are rank j's.
    for (j, rank) in big.iter().enumerate() {
        for t in 0..2 {
            let (a, b) = (acc.terms[j][t], rank.terms[0][t]);
            assert!((a - b).abs() <= 1e-5 * b.abs(), "micro-batch {j} term {t}: {a} vs large batch {b}");
        }
    }

    // Gradients: the step's sum over micro-batches against the sum over the large batch's ranks
    // (both are divided by the same A x world = 2 before the optimiser).
    let large: Vec<f32> = big[0].grads.iter().zip(&big[1].grads).map(|(a, b)| a + b).collect();
    let (worst, name) = worst_relative(&m, &acc.grads, &large);
    println!("effective negatives: worst gradient deviation {worst:.2e} of the tensor's scale ({name})");
    assert!(
        worst <= GRAD_TOL,
        "{name}: accumulated gradient off the large batch's by {worst:e} of its scale"
    );

    // Queue: one write of the step's view-1 keys in micro-batch order, then its view-2 keys, as
    // one rank with the whole batch enqueues; the large batch's rank j wrote micro-batch j's
    // keys (view 1, view 2) into its own shard. The keys are the same computation on the same
    // rows (local BN per n images), so they must be equal bit for bit.
    let dim = m.cfg.dim;
    assert_eq!(acc.ptr, 2 * A * N, "one enqueue of 2 x A x N keys");
    for view in 0..2 {
        for (j, rank) in big.iter().enumerate() {
            let (row, src) = (view * A * N + j * N, view * N);
            assert_eq!(acc.idx[row..row + N], rank.idx[src..src + N], "indices: view {view}, micro {j}");
            assert_eq!(
                acc.keys[row * dim..(row + N) * dim],
                rank.keys[src * dim..(src + N) * dim],
                "keys: view {view}, micro-batch {j}"
            );
        }
    }
    for g in 2 * A * N..QUEUE {
        assert_eq!(acc.idx[g], queued_image(g), "row {g} beyond the step's write changed");
    }
}

#[test]
fn micro_batch_negatives_are_not_the_large_batch() {
    // The control for the test above: with the switch off, the same comparison must fail by
    // far more than its tolerance (each micro-batch's queries then miss A-1 micro-batches'
    // negatives), so the tolerance cannot hide the difference the switch makes.
    let big = large_batch();
    let (m, off) = accumulated(false);
    let large: Vec<f32> = big[0].grads.iter().zip(&big[1].grads).map(|(a, b)| a + b).collect();
    let (worst, name) = worst_relative(&m, &off.grads, &large);
    println!("micro-batch negatives: worst gradient deviation {worst:.2e} ({name})");
    assert!(worst > 100.0 * GRAD_TOL, "switch off: deviation only {worst:e} ({name})");
    assert_eq!(off.ptr, 2 * A * N, "every micro-batch enqueued its 2 x N keys");
}

#[test]
fn switch_off_or_one_micro_batch_is_the_micro_batch_path_bit_for_bit() {
    let d = data();
    let by_hand = |c: &TrainConfig, micros: usize| {
        let mut m = Moco::new(Cpu { amp: false }, c, 3, 0, 1).unwrap();
        for j in 0..micros {
            m.queue_micro_batch(&Solo, &micro(&d, j), 0.9).unwrap();
        }
        after(&m, micros)
    };
    let stepped = |c: &TrainConfig, micros: usize| {
        let mut m = Moco::new(Cpu { amp: false }, c, 3, 0, 1).unwrap();
        let views: Vec<Views<'_>> = (0..micros).map(|j| micro(&d, j)).collect();
        m.queue_step(&Solo, &views, 0.9).unwrap();
        after(&m, micros)
    };
    for (c, micros) in [(cfg(A, false), A), (cfg(1, true), 1)] {
        let (a, b) = (by_hand(&c, micros), stepped(&c, micros));
        assert_eq!(a.grads, b.grads);
        assert_eq!(a.terms, b.terms);
        assert_eq!((a.keys, a.idx, a.ptr), (b.keys, b.idx, b.ptr));
        assert_eq!(a.stats, b.stats);
    }
}

#[test]
fn shuffle_bn_keys_and_running_statistics_match_the_micro_batch_path() {
    // Under shuffle BN each micro-batch's keys use the permutation of its own micro-batch
    // number, and the key forwards move the running statistics in the same order: the step's
    // keys (enqueued view 1 of every micro-batch first) and statistics equal the one-by-one
    // path's, bit for bit.
    let mut on = cfg(A, true);
    on.bn_mode = BnMode::Shuffle;
    let mut off = on.clone();
    off.effective_negatives = false;
    let d = data();
    let mut m = Moco::new(Cpu { amp: false }, &off, 3, 0, 1).unwrap();
    for j in 0..A {
        m.queue_micro_batch(&Solo, &micro(&d, j), 0.9).unwrap();
    }
    let one_by_one = after(&m, A);
    let mut m = Moco::new(Cpu { amp: false }, &on, 3, 0, 1).unwrap();
    let views: Vec<Views<'_>> = (0..A).map(|j| micro(&d, j)).collect();
    m.queue_step(&Solo, &views, 0.9).unwrap();
    let step = after(&m, A);
    let dim = on.dim;
    for view in 0..2 {
        for j in 0..A {
            let (row, src) = (view * A * N + j * N, j * 2 * N + view * N);
            assert_eq!(
                step.keys[row * dim..(row + N) * dim],
                one_by_one.keys[src * dim..(src + N) * dim],
                "view {view} micro-batch {j}"
            );
        }
    }
    assert_eq!(step.stats, one_by_one.stats, "BN running statistics");
    assert_ne!(step.grads, one_by_one.grads, "the switch must change the query side");
}

#[test]
fn an_image_twice_in_one_step_is_masked_out_of_its_batch_negatives() {
    // A step that straddles an epoch boundary can hold an image in two micro-batches. With the
    // own-image mask, its other key is not a negative: micro-batch 1 given micro-batch 0's
    // dataset indices must change the loss (masked cells), and without the mask the indices
    // must not matter at all (the queue holds no image's key here, so only the batch block
    // could read them).
    let terms = |mask: bool, dup: bool| {
        let mut c = cfg(A, true);
        c.mask_own = mask;
        let mut d = data();
        if dup {
            let first: Vec<i64> = d.2[..N].to_vec();
            d.2[N..2 * N].copy_from_slice(&first);
        }
        let mut m = Moco::new(Cpu { amp: false }, &c, 3, 0, 1).unwrap();
        let views: Vec<Views<'_>> = (0..A).map(|j| micro(&d, j)).collect();
        m.queue_step(&Solo, &views, 0.9).unwrap();
        after(&m, A).terms
    };
    assert_eq!(terms(false, true), terms(false, false), "without the mask, indices change nothing");
    let (masked, distinct) = (terms(true, true), terms(true, false));
    for j in 0..A {
        for t in 0..2 {
            assert!(masked[j][t] < distinct[j][t], "micro-batch {j} term {t}: {masked:?} vs {distinct:?}");
        }
    }
}
