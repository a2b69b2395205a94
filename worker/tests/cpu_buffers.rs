//! The CPU backend's buffer recycling over whole MoCo steps (kernels/src/cpu/host_buf.rs):
//! after the first step, a step's buffers all come from the free list, and the memory held in
//! buffers never exceeds the most ever live at once. Alone in its test binary, so the global
//! list's counters are this test's.
//!
//! Correctness of the recycled (dirty) buffers is covered by the fixture tests: in debug
//! builds every buffer handed out without a zero fill is all NaN, so an op that read one
//! before writing it would fail them.

mod common;

use common::small_cfg;
use moco_kernels::cpu::host_buf::pool_stats;
use moco_kernels::cpu::Cpu;
use moco_proto::config::{BnMode, TrainConfig};
use moco_worker::moco::comm::Solo;
use moco_worker::moco::{Moco, Views};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg() -> TrainConfig {
    // Shuffle BN: the key path's permutation copies and grouped statistics are exercised.
    TrainConfig { bn_mode: BnMode::Shuffle, seed: 5, ..small_cfg(8, 64) }
}

#[test]
fn steps_after_the_first_allocate_no_new_buffers() {
    let mut m = Moco::new(Cpu { amp: false }, &cfg(), 3, 0, 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let len = 8 * 32 * 32 * 3;
    let x1: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let x2: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let idx: Vec<i64> = (0..8).collect();
    let v = Views { x1: &x1, x2: &x2, idx: &idx, n: 8, size: 32, channels: 3 };
    let mut step = || {
        let out = m.micro_batch(&Solo, &v, 0.99).unwrap();
        m.optimizer_step(&Solo, 0.5).unwrap();
        assert!(out.loss.is_finite(), "loss {}", out.loss);
    };
    step();
    let first = pool_stats();
    assert!(first.hits > 0, "the first step already reuses buffers freed within it: {first:?}");
    step();
    step();
    let later = pool_stats();
    assert_eq!(later.misses, first.misses, "steps 2 and 3 allocated: {first:?} -> {later:?}");
    assert!(later.hits > first.hits, "steps 2 and 3 recycled: {first:?} -> {later:?}");
    assert_eq!(later.high_water_len, first.high_water_len, "the footprint grew: {first:?} -> {later:?}");
}
