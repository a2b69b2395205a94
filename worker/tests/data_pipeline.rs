//! The data pipeline end to end: synthetic tiles, two-view augmentation, batches, sampler,
//! preview. Op-level tests live beside the ops (worker/src/data/augment/*.rs).

use moco_proto::config::AugConfig;
use moco_worker::data::synthetic::{render_tile, NUM_CLASSES};
use moco_worker::data::{
    Augmenter, BandStats, Dataset, MemoryDataset, Sampler, SamplerPos, SyntheticDataset, SyntheticSpec, Tile,
    TwoViewBatch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn synth(count: usize, seed: u64) -> SyntheticDataset {
    SyntheticDataset::new(SyntheticSpec { count, size: 48 }, seed).unwrap()
}

/// A config with every random op off: each view is the whole tile, normalised.
fn identity_aug() -> AugConfig {
    AugConfig {
        crop_min: 1.0,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: [0.0, 0.0],
        solarize_p: [0.0, 0.0],
        hflip_p: 0.0,
        vflip_p: 0.0,
        rot90: false,
        noise_std: 0.0,
        ..AugConfig::default()
    }
}

fn all_pixels(ds: &SyntheticDataset) -> Vec<u8> {
    (0..ds.len()).flat_map(|i| ds.tile(i).unwrap().into_owned().pixels().clone().into_u8()).collect()
}

trait IntoU8 {
    fn into_u8(self) -> Vec<u8>;
}
impl IntoU8 for moco_worker::data::Pixels<'_> {
    fn into_u8(self) -> Vec<u8> {
        match self {
            moco_worker::data::Pixels::U8(p) => p.into_owned(),
            moco_worker::data::Pixels::U16(_) => panic!("synthetic tiles are u8"),
        }
    }
}

#[test]
fn synthetic_is_deterministic_per_seed_and_independent_of_threads_and_storage() {
    let a = pool(1).install(|| synth(18, 7));
    let b = pool(3).install(|| synth(18, 7));
    let (pa, pb) = (all_pixels(&a), all_pixels(&b));
    assert_eq!(pa, pb, "same seed, different thread count");
    assert_eq!(a.stats(), b.stats());
    let lazy = SyntheticDataset::build(SyntheticSpec { count: 18, size: 48 }, 7, false).unwrap();
    assert!(!lazy.is_materialised() && a.is_materialised());
    assert_eq!(all_pixels(&lazy), pa, "rendering on demand gives the stored bytes");
    let c = synth(18, 8);
    let pc = all_pixels(&c);
    let per = 48 * 48 * 3;
    for i in 0..18 {
        assert_ne!(
            pa[i * per..(i + 1) * per],
            pc[i * per..(i + 1) * per],
            "tile {i} same under seeds 7 and 8"
        );
    }
    // A tile does not depend on the dataset size it belongs to.
    assert_eq!(render_tile(48, 7, 5), pa[5 * per..6 * per]);
}

#[test]
fn synthetic_labels_cover_every_class_evenly_and_tiles_look_different() {
    let ds = synth(60, 1);
    let mut count = [0usize; NUM_CLASSES];
    for i in 0..ds.len() {
        count[ds.label(i).unwrap() as usize] += 1;
    }
    assert_eq!(count, [10; NUM_CLASSES]);
    assert_eq!(ds.class_names().len(), NUM_CLASSES);
    assert_eq!(ds.label(60), None);
    assert!(ds.tile(60).is_err());
    // Tiles have structure beyond sensor noise: averaged over each class, the luminance std
    // within a tile is over twice the largest sensor noise (0.015; calm water alone may be
    // flatter). And every pair of classes differs in mean colour.
    let mut class_mean = [[0f64; 3]; NUM_CLASSES];
    let mut class_std = [0f64; NUM_CLASSES];
    let px = 48.0 * 48.0;
    for i in 0..ds.len() {
        let t = ds.tile(i).unwrap();
        let (mut s1, mut s2) = (0f64, 0f64);
        for y in 0..48 {
            for x in 0..48 {
                let l = (0..3).map(|b| t.unit(y, x, b) as f64).sum::<f64>() / 3.0;
                s1 += l;
                s2 += l * l;
                for (b, m) in class_mean[i % NUM_CLASSES].iter_mut().enumerate() {
                    *m += t.unit(y, x, b) as f64 / (10.0 * px);
                }
            }
        }
        class_std[i % NUM_CLASSES] += (s2 / px - (s1 / px).powi(2)).max(0.0).sqrt() / 10.0;
    }
    for (c, s) in class_std.iter().enumerate() {
        assert!(*s > 0.03, "class {c} has mean luminance std {s}");
    }
    for a in 0..NUM_CLASSES {
        for b in a + 1..NUM_CLASSES {
            let d: f64 = (0..3).map(|k| (class_mean[a][k] - class_mean[b][k]).abs()).sum();
            assert!(d > 0.01, "classes {a} and {b} have the same mean colour");
        }
    }
}

#[test]
fn normalisation_gives_zero_mean_unit_std_on_the_dataset_statistics() {
    let ds = synth(24, 2);
    let aug = Augmenter::new(&identity_aug(), 48, 0, ds.stats()).unwrap();
    let idx: Vec<u32> = (0..24).collect();
    let b = TwoViewBatch::build(&pool(2), &ds, &aug, 0, &idx).unwrap();
    assert_eq!(b.x1, b.x2, "with every op off both views are the normalised tile");
    for band in 0..3 {
        let vals: Vec<f64> = b.x1.iter().skip(band).step_by(3).map(|&v| v as f64).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        assert!(mean.abs() < 1e-4, "band {band} mean {mean}");
        assert!((std - 1.0).abs() < 1e-4, "band {band} std {std}");
    }
}

#[test]
fn views_have_the_right_shape_and_range_and_differ() {
    let ds = synth(12, 3);
    let cfg = AugConfig { noise_std: 0.0, ..AugConfig::default() };
    let aug = Augmenter::new(&cfg, 64, 11, ds.stats()).unwrap();
    let idx: Vec<u32> = vec![3, 0, 11, 7];
    let b = TwoViewBatch::build(&pool(2), &ds, &aug, 4, &idx).unwrap();
    assert_eq!((b.n, b.size, b.channels), (4, 64, 3));
    assert_eq!(b.x1.len(), 4 * 64 * 64 * 3);
    assert_eq!(b.indices, idx);
    let s = ds.stats();
    for x in [&b.x1, &b.x2] {
        for (k, v) in x.iter().enumerate() {
            let band = k % 3;
            let raw = v * s.std[band] + s.mean[band];
            assert!((-1e-4..=1.0 + 1e-4).contains(&raw), "value {raw} outside 0..1 before normalisation");
        }
    }
    assert_ne!(b.x1, b.x2);
    // Noise moves values off the 0..1 range's normalised image but keeps them finite.
    let noisy = Augmenter::new(&AugConfig { noise_std: 0.5, ..cfg }, 64, 11, ds.stats()).unwrap();
    let bn = TwoViewBatch::build(&pool(2), &ds, &noisy, 4, &idx).unwrap();
    let diff: Vec<f64> = bn.x1.iter().zip(&b.x1).map(|(a, c)| (a - c) as f64).collect();
    let var = diff.iter().map(|d| d * d).sum::<f64>() / diff.len() as f64;
    assert!((var.sqrt() - 0.5).abs() < 0.01, "noise std {}", var.sqrt());
}

#[test]
fn batches_are_reproducible_for_any_thread_count_and_depend_on_seed_and_epoch() {
    let ds = synth(12, 4);
    let aug = Augmenter::new(&AugConfig::default(), 32, 5, ds.stats()).unwrap();
    let idx: Vec<u32> = vec![9, 2, 5, 0, 11, 4];
    let one = TwoViewBatch::build(&pool(1), &ds, &aug, 3, &idx).unwrap();
    let three = TwoViewBatch::build(&pool(3), &ds, &aug, 3, &idx).unwrap();
    assert_eq!(one, three);
    // A sample's views do not depend on its batch neighbours or position in the batch.
    let alone = TwoViewBatch::build(&pool(1), &ds, &aug, 3, &[5]).unwrap();
    let per = one.image_len();
    assert_eq!(alone.x1[..], one.x1[2 * per..3 * per]);
    assert_eq!(alone.x2[..], one.x2[2 * per..3 * per]);
    let other_epoch = TwoViewBatch::build(&pool(2), &ds, &aug, 4, &idx).unwrap();
    let other_seed = Augmenter::new(&AugConfig::default(), 32, 6, ds.stats()).unwrap();
    let other_seed = TwoViewBatch::build(&pool(2), &ds, &other_seed, 3, &idx).unwrap();
    for other in [&other_epoch, &other_seed] {
        for i in 0..idx.len() {
            assert_ne!(other.x1[i * per..(i + 1) * per], one.x1[i * per..(i + 1) * per]);
        }
    }
    // Refilling a batch in place gives the same result as building it.
    let mut reused = TwoViewBatch::build(&pool(1), &ds, &aug, 0, &[1, 2]).unwrap();
    reused.fill(&pool(2), &ds, &aug, 3, &idx).unwrap();
    assert_eq!(reused, one);
}

#[test]
fn per_view_probabilities_follow_the_recipe() {
    let ds = synth(6, 0);
    let aug = Augmenter::new(&AugConfig::default(), 64, 0, ds.stats()).unwrap();
    let n = 4000;
    let mut count = [[0usize; 5]; 2];
    let mut rot = [0usize; 4];
    for i in 0..n {
        for (view, c) in count.iter_mut().enumerate() {
            let mut rng = aug.view_rng(0, i, view);
            let p = aug.draw(&mut rng, 96, 96, view);
            c[0] += p.blur_sigma.is_some() as usize;
            c[1] += p.solarize as usize;
            c[2] += p.jitter.is_some() as usize;
            c[3] += p.grayscale as usize;
            c[4] += p.dihedral.hflip as usize;
            rot[p.dihedral.rot90 as usize] += 1;
            if let Some(s) = p.blur_sigma {
                // sigma ~ U(0.1, 2.0) in 224-px units, scaled to 64 px.
                assert!((0.1 * 64.0 / 224.0..=2.0 * 64.0 / 224.0).contains(&s), "sigma {s}");
            }
        }
    }
    let frac = |k: usize| k as f64 / n as f64;
    // Binomial standard error at n = 4000 is at most 0.008; 0.035 is over 4 of them.
    let expect = [[1.0, 0.0, 0.8, 0.2, 0.5], [0.1, 0.2, 0.8, 0.2, 0.5]];
    for view in 0..2 {
        for k in 0..5 {
            let got = frac(count[view][k]);
            assert!(
                (got - expect[view][k]).abs() < 0.035,
                "view {view} op {k}: {got} vs {}",
                expect[view][k]
            );
        }
    }
    for r in rot {
        assert!((r as f64 / (2 * n) as f64 - 0.25).abs() < 0.02, "rot90 counts {rot:?}");
    }
}

/// u16 tiles with five bands (e.g. RGB + NIR + SWIR) of different sizes go through the
/// pipeline; colour ops touch only the first three bands.
#[test]
fn u16_multiband_tiles_follow_the_band_rule() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let tiles: Vec<Tile<'static>> = [(40, 52), (64, 64), (33, 47)]
        .iter()
        .map(|&(h, w)| {
            let px: Vec<u16> = (0..h * w * 5).map(|_| rng.gen_range(1000..60000)).collect();
            Tile::new(h, w, 5, moco_worker::data::Pixels::U16(px.into())).unwrap()
        })
        .collect();
    let ds = MemoryDataset::new(tiles, None).unwrap();
    assert_eq!(ds.bands(), 5);
    let idx = [0u32, 1, 2];
    let no_noise = AugConfig { noise_std: 0.0, ..AugConfig::default() };
    let aug = Augmenter::new(&no_noise, 32, 1, ds.stats()).unwrap();
    let b = TwoViewBatch::build(&pool(2), &ds, &aug, 0, &idx).unwrap();
    assert_eq!((b.channels, b.x1.len()), (5, 3 * 32 * 32 * 5));
    assert!(b.x1.iter().chain(&b.x2).all(|v| v.is_finite()));
    // Grayscale on: bands 0..3 become equal (before normalisation), bands 3 and 4 are
    // exactly what they are with grayscale off (all draws happen either way).
    let gray =
        Augmenter::new(&AugConfig { grayscale_p: 1.0, ..no_noise.clone() }, 32, 1, ds.stats()).unwrap();
    let off = Augmenter::new(&AugConfig { grayscale_p: 0.0, ..no_noise }, 32, 1, ds.stats()).unwrap();
    let g = TwoViewBatch::build(&pool(2), &ds, &gray, 0, &idx).unwrap();
    let o = TwoViewBatch::build(&pool(2), &ds, &off, 0, &idx).unwrap();
    let s = ds.stats();
    for (pg, po) in g.x1.chunks_exact(5).zip(o.x1.chunks_exact(5)) {
        let raw: Vec<f32> = (0..3).map(|k| pg[k] * s.std[k] + s.mean[k]).collect();
        assert!((raw[0] - raw[1]).abs() < 1e-4 && (raw[1] - raw[2]).abs() < 1e-4, "{raw:?}");
        assert_eq!(pg[3..], po[3..]);
    }
}

#[test]
fn sampler_shards_are_disjoint_cover_the_permutation_and_match_one_big_rank() {
    let (len, batch, world) = (103, 4, 3);
    let ranks: Vec<Sampler> = (0..world).map(|r| Sampler::new(len, batch, r, world, 42).unwrap()).collect();
    assert_eq!(ranks[0].batches_per_epoch(), 8);
    assert_eq!(ranks[0].dropped_per_epoch(), 103 - 96);
    let single = Sampler::new(len, batch * world, 0, 1, 42).unwrap();
    for epoch in 0..3 {
        let perm = ranks[0].permutation(epoch);
        let mut sorted = perm.clone();
        sorted.sort();
        assert_eq!(sorted, (0..len as u32).collect::<Vec<_>>(), "not a permutation");
        let mut seen = HashSet::new();
        let epochs: Vec<_> = ranks.iter().map(|s| s.epoch(epoch)).collect();
        let big = single.epoch(epoch);
        for b in 0..8 {
            let mut concat = Vec::new();
            for e in &epochs {
                let part = e.batch(b).unwrap();
                assert_eq!(part.len(), batch);
                for &i in part {
                    assert!(seen.insert(i), "index {i} in two shards");
                }
                concat.extend_from_slice(part);
            }
            assert_eq!(concat, big.batch(b).unwrap(), "world 3 x 4 differs from world 1 x 12");
        }
        // Covered: the permutation minus its dropped tail.
        let expect: HashSet<u32> = perm[..96].iter().copied().collect();
        assert_eq!(seen, expect);
        assert!(epochs[0].batch(8).is_none());
    }
    // Same epoch, same order; another epoch or seed, another order.
    assert_eq!(ranks[1].permutation(5), Sampler::new(len, batch, 1, world, 42).unwrap().permutation(5));
    assert_ne!(ranks[1].permutation(5), ranks[1].permutation(6));
    assert_ne!(ranks[1].permutation(5), Sampler::new(len, batch, 1, world, 43).unwrap().permutation(5));
}

#[test]
fn sampler_resumes_exactly_where_it_stopped() {
    let s = Sampler::new(50, 8, 1, 2, 3).unwrap();
    assert_eq!(s.batches_per_epoch(), 3);
    let run: Vec<_> = s.iter_from(SamplerPos::default()).unwrap().take(10).collect();
    assert_eq!(run[0].0, SamplerPos { epoch: 0, batch: 0 });
    assert_eq!(run[3].0, SamplerPos { epoch: 1, batch: 0 });
    assert_eq!(run[9].0, SamplerPos { epoch: 3, batch: 0 });
    assert_eq!(run[4].1, s.epoch(1).batch(1).unwrap());
    for k in 0..10 {
        // A checkpoint taken after batch k stores next_pos; resuming replays the rest.
        let resume = s.next_pos(run[k].0);
        let rest: Vec<_> = s.iter_from(resume).unwrap().take(9 - k).collect();
        assert_eq!(rest[..], run[k + 1..], "resume after {:?}", run[k].0);
    }
    // End-of-epoch positions roll over; positions past the end are an error.
    let at_end = s.iter_from(SamplerPos { epoch: 2, batch: 3 }).unwrap().next().unwrap();
    assert_eq!(at_end.0, SamplerPos { epoch: 3, batch: 0 });
    assert!(s.iter_from(SamplerPos { epoch: 2, batch: 4 }).is_err());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let err = Sampler::new(100, 64, 0, 2, 0).unwrap_err().to_string();
    assert!(err.contains("100 tiles") && err.contains("128"), "{err}");
    assert!(Sampler::new(100, 8, 2, 2, 0).is_err());
    assert!(Sampler::new(100, 0, 0, 1, 0).is_err());
    let ds = synth(6, 0);
    for cfg in [
        AugConfig { crop_min: 0.0, ..AugConfig::default() },
        AugConfig { jitter_p: 1.5, ..AugConfig::default() },
        AugConfig { blur_sigma: [2.0, 0.1], ..AugConfig::default() },
        AugConfig { noise_std: -1.0, ..AugConfig::default() },
        AugConfig { jitter: [0.4, 0.4, 0.2, 0.7], ..AugConfig::default() },
    ] {
        assert!(Augmenter::new(&cfg, 32, 0, ds.stats()).is_err(), "{cfg:?} accepted");
    }
    let four_band = BandStats::new(vec![0.5; 4], vec![0.2; 4]).unwrap();
    let aug = Augmenter::new(&AugConfig::default(), 32, 0, &four_band).unwrap();
    assert!(TwoViewBatch::build(&pool(1), &ds, &aug, 0, &[0]).is_err(), "band mismatch accepted");
    let aug = Augmenter::new(&AugConfig::default(), 32, 0, ds.stats()).unwrap();
    assert!(TwoViewBatch::build(&pool(1), &ds, &aug, 0, &[6]).is_err(), "out-of-range index accepted");
    assert!(MemoryDataset::new(Vec::new(), None).is_err());
}

#[test]
fn preview_png_has_one_row_per_triplet_row_and_no_leftover_temp_file() {
    let ds = synth(6, 0);
    let aug = Augmenter::new(&AugConfig::default(), 40, 0, ds.stats()).unwrap();
    let dir = std::env::temp_dir().join(format!("moco-preview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.png");
    moco_worker::data::preview::write_preview(&path, &ds, &aug, 0, &[0, 1, 2, 3, 4], 2).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    // 3 rows of 40 px with 2-px gaps; 2 triplets of (3 x 40 + 2 x 2) px with a 10-px gap.
    assert_eq!((img.width(), img.height()), (2 * 124 + 10, 3 * 40 + 2 * 2));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("p.png")]);
    std::fs::remove_dir_all(&dir).unwrap();
}
