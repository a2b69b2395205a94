//! The TCP ring (ranks as threads) equals the single-process rank-order reference bit for bit,
//! for every operation, world sizes 2-4, and lengths from 0 up to many pipeline segments.

use half::f16;
use moco_worker::collective::{
    on_local_ring, reference, Collective, LocalCollective, RingCollective, RingOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const WORLDS: [usize; 3] = [2, 3, 4];
/// 0, 1, below the world size, around one 16-float segment, and many segments.
const LENS: [usize; 9] = [0, 1, 2, 3, 5, 16, 17, 1000, 4099];

/// 64-byte segments, so small buffers already run through a deep pipeline.
fn tiny_segments() -> RingOptions {
    RingOptions { segment_bytes: 64, timeout: Duration::from_secs(20), ..RingOptions::default() }
}

/// Values spread over 12 orders of magnitude, so a sum's association shows in its bits.
fn values(rank: usize, len: usize, salt: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(salt * 1000 + rank as u64);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-6..6))).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Run `f` on every rank of a fresh ring twice: once with every call through the pipelined
/// sender thread, once with small calls written from the calling thread. Results of the two
/// runs are concatenated (entry i is rank i % world).
fn ring<R: Send>(world: usize, opts: RingOptions, f: impl Fn(&RingCollective) -> R + Sync) -> Vec<R> {
    let threaded = RingOptions { small_call_bytes: 0, ..opts.clone() };
    let mut out = on_local_ring(world, threaded, |c| f(&c)).expect("loopback ring connects");
    out.extend(on_local_ring(world, opts, |c| f(&c)).expect("loopback ring connects"));
    out
}

#[test]
fn test_data_is_sensitive_to_summation_order() {
    // Guards the tests below: with these values a rotated (textbook-ring) order changes bits.
    let inputs: Vec<Vec<f32>> = (0..4).map(|r| values(r, 1000, 1)).collect();
    let rank_order = reference::all_reduce_sum_f32(&inputs);
    let rotated: Vec<Vec<f32>> = (1..=4).map(|k| inputs[k % 4].clone()).collect();
    assert_ne!(bits(&rank_order), bits(&reference::all_reduce_sum_f32(&rotated)));
}

#[test]
fn all_reduce_f32_equals_rank_order_reference() {
    for world in WORLDS {
        for len in LENS {
            let out = ring(world, tiny_segments(), |c| {
                let mut buf = values(c.rank(), len, 2);
                c.all_reduce_sum_f32(&mut buf).map(|_| buf)
            });
            let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, len, 2)).collect();
            let want = bits(&reference::all_reduce_sum_f32(&inputs));
            for (r, got) in out.into_iter().enumerate() {
                assert_eq!(bits(&got.expect("all_reduce")), want, "world {world} len {len} rank {r}");
            }
        }
    }
}

#[test]
fn all_reduce_f32_large_buffer_default_segments() {
    // 3 M floats = 12 MB: 23 segments of 512 KiB in flight around a ring of 3.
    let len = 3_000_001;
    let out = ring(3, RingOptions::default(), |c| {
        let mut buf = values(c.rank(), len, 3);
        c.all_reduce_sum_f32(&mut buf).map(|_| buf)
    });
    let inputs: Vec<Vec<f32>> = (0..3).map(|r| values(r, len, 3)).collect();
    let want = bits(&reference::all_reduce_sum_f32(&inputs));
    for got in out {
        assert!(bits(&got.expect("all_reduce")) == want);
    }
}

#[test]
fn all_reduce_f16_accumulates_in_f32_and_rounds_once() {
    let to_f16 = |v: Vec<f32>| v.into_iter().map(|x| f16::from_f32(x * 1e-2)).collect::<Vec<f16>>();
    for world in WORLDS {
        for len in [0, 3, 33, 1001] {
            let out = ring(world, tiny_segments(), |c| {
                let mut buf = to_f16(values(c.rank(), len, 4));
                c.all_reduce_sum_f16(&mut buf).map(|_| buf)
            });
            let inputs: Vec<Vec<f16>> = (0..world).map(|r| to_f16(values(r, len, 4))).collect();
            let want = reference::all_reduce_sum_f16(&inputs);
            for got in out {
                let got = got.expect("all_reduce f16");
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "world {world} len {len}"
                );
                assert_eq!(got.len(), want.len());
            }
        }
    }
    // Rounding each partial to f16 would lose this: 2048 + 1 + 1 is 2050 in f32, 2048 in f16 steps.
    let out = ring(3, tiny_segments(), |c| {
        let mut buf = vec![f16::from_f32(if c.rank() == 0 { 2048.0 } else { 1.0 })];
        c.all_reduce_sum_f16(&mut buf).map(|_| buf[0].to_f32())
    });
    assert!(out.into_iter().all(|v| v.expect("all_reduce") == 2050.0));
}

#[test]
fn all_gather_is_rank_order_concatenation() {
    for world in WORLDS {
        for len in LENS {
            let out = ring(world, tiny_segments(), |c| {
                let send = values(c.rank(), len, 5);
                let mut recv = vec![f32::NAN; len * world];
                let ints: Vec<i64> =
                    (0..len as i64).map(|i| i * 1_000_003 + c.rank() as i64 - (1 << 40)).collect();
                let mut ints_recv = vec![0i64; len * world];
                c.all_gather_f32(&send, &mut recv)?;
                c.all_gather_i64(&ints, &mut ints_recv)?;
                Ok::<_, moco_worker::collective::CollectiveError>((recv, ints_recv))
            });
            let want = reference::all_gather(&(0..world).map(|r| values(r, len, 5)).collect::<Vec<_>>());
            let want_i = reference::all_gather(
                &(0..world)
                    .map(|r| (0..len as i64).map(|i| i * 1_000_003 + r as i64 - (1 << 40)).collect())
                    .collect::<Vec<Vec<i64>>>(),
            );
            for (r, got) in out.into_iter().enumerate() {
                let (f, i) = got.expect("all_gather");
                assert_eq!(bits(&f), bits(&want), "world {world} len {len} rank {r}");
                assert_eq!(i, want_i, "world {world} len {len} rank {r}");
            }
        }
    }
}

#[test]
fn reduce_scatter_gives_each_rank_its_chunk_sum() {
    for world in WORLDS {
        for chunk in [0, 1, 2, 3, 15, 17, 300] {
            let out = ring(world, tiny_segments(), |c| {
                let send = values(c.rank(), chunk * world, 6);
                let mut recv = vec![f32::NAN; chunk];
                c.reduce_scatter_sum_f32(&send, &mut recv).map(|_| recv)
            });
            let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, chunk * world, 6)).collect();
            for (r, got) in out.into_iter().enumerate() {
                let want = reference::reduce_scatter_sum_f32(&inputs, r % world, chunk);
                assert_eq!(
                    bits(&got.expect("reduce_scatter")),
                    bits(&want),
                    "world {world} chunk {chunk} rank {r}"
                );
            }
        }
    }
}

#[test]
fn broadcast_copies_the_root_buffer_from_every_root() {
    for world in WORLDS {
        for root in 0..world {
            for len in [0, 1, 17, 1000] {
                let out = ring(world, tiny_segments(), |c| {
                    let mut buf = values(c.rank(), len, 7);
                    c.broadcast_f32(&mut buf, root).map(|_| buf)
                });
                let want = bits(&values(root, len, 7));
                for got in out {
                    assert_eq!(bits(&got.expect("broadcast")), want, "world {world} root {root} len {len}");
                }
            }
        }
    }
}

#[test]
fn barrier_or_and_max_agree_on_every_rank() {
    for world in WORLDS {
        let out = ring(world, tiny_segments(), |c| {
            c.barrier()?;
            let any_last = c.all_reduce_or(c.rank() == world - 1)?;
            let none = c.all_reduce_or(false)?;
            let max = c.all_reduce_max_f64(c.rank() as f64 * -3.5 + 1.0)?;
            let nan = c.all_reduce_max_f64(if c.rank() == 1 { f64::NAN } else { 0.0 })?;
            Ok::<_, moco_worker::collective::CollectiveError>((any_last, none, max, nan.is_nan()))
        });
        for got in out {
            assert_eq!(got.expect("small collectives"), (true, false, 1.0, true), "world {world}");
        }
    }
}

#[test]
fn repeated_mixed_calls_stay_in_step_and_deterministic() {
    let run = || {
        ring(4, RingOptions { segment_bytes: 4096, ..tiny_segments() }, |c| {
            let mut log = Vec::new();
            for i in 0..25 {
                let len = (i * 37) % 3000;
                let mut buf = values(c.rank(), len, 100 + i as u64);
                c.all_reduce_sum_f32(&mut buf)?;
                log.extend(bits(&buf));
                let mut all = vec![0.0; 3 * 4];
                c.all_gather_f32(&values(c.rank(), 3, i as u64), &mut all)?;
                log.extend(bits(&all));
                c.barrier()?;
            }
            Ok::<_, moco_worker::collective::CollectiveError>(log)
        })
        .into_iter()
        .map(|r| r.expect("repeated calls"))
        .collect::<Vec<_>>()
    };
    let first = run();
    assert!(first.iter().all(|l| *l == first[0]), "ranks disagree");
    assert_eq!(first, run(), "a second run differs");
}

#[test]
fn world_one_ring_and_local_are_copies() {
    let out = ring(1, RingOptions::default(), |c| {
        let mut buf = vec![1.5f32, -2.0];
        c.all_reduce_sum_f32(&mut buf)?;
        let mut all = vec![0.0; 2];
        c.all_gather_f32(&buf, &mut all)?;
        c.barrier()?;
        Ok::<_, moco_worker::collective::CollectiveError>(all)
    });
    assert!(out.iter().all(|o| o.as_ref().expect("world 1") == &vec![1.5, -2.0]));
    let local = LocalCollective;
    let mut rs = vec![0.0f32; 2];
    local.reduce_scatter_sum_f32(&[3.0, 4.0], &mut rs).expect("local reduce_scatter");
    assert_eq!(rs, vec![3.0, 4.0]);
    assert!(local.all_reduce_or(true).expect("local or"));
    assert!(local.broadcast_f32(&mut rs, 1).is_err(), "root 1 does not exist in world 1");
}

#[test]
fn many_small_calls_at_the_direct_write_limit_never_deadlock() {
    // Calls at the 16 KiB limit of calling-thread writes, with ranks drifting apart (rank r
    // pauses every few calls), so connections hold data of two calls at once. A deadlock would
    // surface as a timeout error.
    let opts = RingOptions { timeout: Duration::from_secs(20), ..RingOptions::default() };
    let out = on_local_ring(3, opts, |c| {
        let mut acc = 0.0f64;
        for i in 0..300 {
            if i % (7 + c.rank()) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut buf = vec![1.0f32; 4096]; // 16 KiB: the limit
            c.all_reduce_sum_f32(&mut buf)?;
            let mut b = vec![c.rank() as f32; 4096];
            c.broadcast_f32(&mut b, i % 3)?;
            let mut all = vec![0.0f32; 3 * 1365];
            c.all_gather_f32(&vec![i as f32; 1365], &mut all)?;
            acc += f64::from(buf[4095] + b[0] + all[3 * 1365 - 1]);
        }
        Ok::<_, moco_worker::collective::CollectiveError>(acc)
    })
    .expect("ring connects");
    let want: f64 = (0..300).map(|i| 3.0 + (i % 3) as f64 + i as f64).sum();
    for got in out {
        assert_eq!(got.expect("no call failed"), want);
    }
}
