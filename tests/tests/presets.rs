//! `launcher presets`: every preset, with the values that follow from it.

use moco_proto::presets::PRESETS;
use moco_tests::{assert_contains, run_launcher};

#[test]
fn lists_every_preset_with_effective_batch_and_keys_per_step() {
    let out = run_launcher(&["presets"]).expect_ok();
    for p in PRESETS {
        let cfg = p.config();
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(p.name))
            .unwrap_or_else(|| panic!("no row for {}", p.name));
        // Per-GPU batch: the preset's own, or the paper's global batch split over its GPUs.
        let batch =
            if cfg.global_batch > 0 { cfg.global_batch / (p.gpus * cfg.accumulation) } else { cfg.batch };
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], p.gpus.to_string(), "{row}");
        assert_eq!(cols[2], batch.to_string(), "{row}");
        assert_eq!(cols[4], (batch * p.gpus * cfg.accumulation).to_string(), "{row}");
        // Keys per queue write: the whole optimiser step's with effective-batch negatives.
        let micro = moco_proto::validate::micro_per_enqueue(&cfg);
        assert_eq!(cols[9], (2 * batch * p.gpus * micro).to_string(), "keys per step: {row}");
        assert!(out.stdout.contains(p.about), "description of {}", p.name);
    }
    // The scaled lr of `optimized`: 1.5e-4 x 768 / 256.
    let row = out.stdout.lines().find(|l| l.starts_with("optimized")).unwrap();
    assert_eq!(row.split_whitespace().nth(7), Some("4.5e-4"), "{row}");
}

#[test]
fn a_gpu_count_that_breaks_a_preset_is_explained() {
    let out = run_launcher(&["presets", "--gpus", "3"]).expect_ok();
    // 76800 is not a multiple of 2 x 96 x 3 x 4 = 2304 (the step's keys, written at once with
    // effective-batch negatives): say so, with the nearest valid sizes.
    let below = 76800 / 2304 * 2304;
    assert_contains(&out.stdout, &["optimized on 3 GPU(s)", &below.to_string(), &(below + 2304).to_string()]);
    // 4096 does not split over 3 GPUs: name the GPU counts that work.
    assert_contains(&out.stdout, &["--global-batch 4096", "1, 2, 4, 8, 16, 32, 64"]);
}
