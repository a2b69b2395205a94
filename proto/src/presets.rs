//! Named presets. Every value carries its reason; where the seeds (shared/seeds/) or the
//! MoCo papers fix a value, the reason says which; where they leave it open, it says why this
//! value was chosen.
//!
//! The four GPU presets for the user's 2 x 8 GB machine (`low-vram`, `optimized`,
//! `conservative`, `aggressive`) are the seeds' configurations; they share `seeds_hybrid()` and
//! differ only in batch, queue and epochs. `paper` is MoCo v3's ResNet-50 recipe. `tiny` is the
//! same ResNet-50 topology at 1/8 width for the CPU, CI and demos.

use crate::config::{AugConfig, BnMode, Optimizer, QueuePrecision, TrainConfig};
use crate::error::ProtoError;

/// A preset: its name, a one-line description, the GPU count it was written for, its config.
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    /// World size the preset was designed for (the default of `launcher plan` and `presets`).
    pub gpus: usize,
    build: fn() -> TrainConfig,
}

impl Preset {
    pub fn config(&self) -> TrainConfig {
        (self.build)()
    }
}

/// Used when no `--preset` is given: the zero-setup default of the README (DESIGN.md).
pub const DEFAULT_PRESET: &str = "tiny";

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "low-vram",
        about: "seeds' config_low_vram: 64/GPU, queue 65536, accumulation 4, 300 epochs, AMP + recompute",
        gpus: 2,
        build: low_vram,
    },
    Preset {
        name: "optimized",
        about: "seeds' config_optimized_16gb: 96/GPU, queue 76800, accumulation 4, 600 epochs",
        gpus: 2,
        build: optimized,
    },
    Preset {
        name: "conservative",
        about: "seeds' 'manual batch=80' option: 80/GPU, queue 64000",
        gpus: 2,
        build: conservative,
    },
    Preset {
        name: "aggressive",
        about: "seeds' 'aggressive' option: 128/GPU, queue 65536 (the seeds guessed 9.2 GB; see `plan`)",
        gpus: 2,
        build: aggressive,
    },
    Preset {
        name: "paper",
        about: "MoCo v3 ResNet-50, 100 epochs: global batch 4096, LARS 0.6, wd 1e-6, T 1.0, no queue",
        gpus: 16,
        build: paper,
    },
    Preset {
        name: "tiny",
        about: "ResNet-50 at 1/8 width, 64 px, queue 1024: CPU, CI and demos",
        gpus: 1,
        build: tiny,
    },
];

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The config of preset `name`, or an error listing the presets.
pub fn get(name: &str) -> Result<TrainConfig, ProtoError> {
    find(name)
        .map(Preset::config)
        .ok_or_else(|| ProtoError::UnknownPreset { name: name.to_string(), known: names() })
}

/// What the four seed configurations share (the seeds' `config_low_vram.py`), with MOCO.md's
/// "?" cells filled in.
fn seeds_hybrid() -> TrainConfig {
    TrainConfig {
        // torchvision ResNet-50: the weights must load into the user's segmentation model.
        width: 1.0,
        // torchvision's training crop; the seeds' VRAM figures assume it.
        image_size: 224,
        // MoCo v3 projector 2048-4096-256 and predictor 256-4096-256 (MOCO.md, "Networks").
        proj_hidden: 4096,
        dim: 256,
        pred_hidden: 4096,
        // Seeds: 64 images per GPU.
        batch: 64,
        // The seeds think in per-GPU batches; no global batch to split.
        global_batch: 0,
        // Seeds: 4 micro-batches per step, effective 64 x 2 x 4 = 512.
        accumulation: 4,
        // Each micro-batch's queries meet all 2 x 4 x 64 x W keys of the step, not only their own
        // micro-batch's: the negatives the seeds believed accumulation gave them
        // (results/2026-12-05-accumulation-negatives.md).
        effective_negatives: true,
        // Seeds: 65536 negatives compensate for the small batch (hybrid MoCo).
        queue_size: 65536,
        // MoCo v2's T for a 65k queue; v3's 1.0 was tuned for 4096 in-batch negatives and no queue.
        temperature: 0.2,
        // MoCo v3's m0 with the cosine rise: ~3 optimiser steps per epoch on 2,000 tiles make
        // v2's 0.999 (a ~1000-step time constant) lag for most of the run.
        momentum: 0.99,
        momentum_cosine: true,
        // 2,000 tiles and a 65k queue: each tile's older keys sit in the queue ~33 times.
        mask_own: true,
        // Queue presets use shuffle BN so batch statistics do not leak the positive (moco#46).
        bn_mode: BnMode::Shuffle,
        // Smallest split that decorrelates key and query statistics; keeps >= 32 images per group.
        shuffle_groups: 2,
        // Seeds: lr 1.5e-4 per 256 is MoCo v3's AdamW scale.
        optimizer: Optimizer::Adamw,
        base_lr: 1.5e-4,
        // MoCo v3's AdamW weight decay, the recipe the seeds' lr comes from.
        weight_decay: 0.1,
        // MoCo v3's AdamW recipe warms up 40 epochs; AdamW's early moment estimates need it.
        warmup_epochs: 40.0,
        // Seeds: 300 epochs.
        epochs: 300,
        // Seeds: AMP "REQUIRED" to fit 8 GB.
        amp: true,
        // Seeds: gradient checkpointing "REQUIRED"; `launcher plan` shows what it saves.
        recompute: true,
        queue_precision: QueuePrecision::Fp32,
        // BYOL's two-view recipe plus the seeds' satellite rotations, vertical flips and noise.
        aug: AugConfig::default(),
        // Fixed so two runs of a preset are comparable.
        seed: 0,
    }
}

fn low_vram() -> TrainConfig {
    // The seeds' config_low_vram.py as is.
    seeds_hybrid()
}

fn optimized() -> TrainConfig {
    TrainConfig {
        // Seeds' config_optimized_16gb: 96 per GPU (effective 768).
        batch: 96,
        // Seeds: 76800 = 200 steps of 2 x 96 x 2 keys.
        queue_size: 76800,
        // Seeds: 600 epochs for a 2,000-image dataset.
        epochs: 600,
        ..seeds_hybrid()
    }
}

fn conservative() -> TrainConfig {
    TrainConfig {
        // Seeds' "manual batch=80" option (effective 640).
        batch: 80,
        // Seeds: 64000 = 200 steps of 2 x 80 x 2 keys.
        queue_size: 64000,
        ..seeds_hybrid()
    }
}

fn aggressive() -> TrainConfig {
    TrainConfig {
        // Seeds' "aggressive" option (effective 1024).
        batch: 128,
        // Seeds: keeps 65536 = 256 steps of 2 x 128 x 2 keys.
        queue_size: 65536,
        ..seeds_hybrid()
    }
}

fn paper() -> TrainConfig {
    TrainConfig {
        // MoCo v3 trains torchvision's ResNet-50 at 224 px with its own heads.
        width: 1.0,
        image_size: 224,
        proj_hidden: 4096,
        dim: 256,
        pred_hidden: 4096,
        // Derived from global_batch: 4096 / (GPUs x accumulation).
        batch: 0,
        // MoCo v3: global batch 4096.
        global_batch: 4096,
        // MoCo v3 fits 4096 in memory across its GPUs: no accumulation.
        accumulation: 1,
        // No effect at accumulation 1; on as soon as --accumulation raises it (see seeds_hybrid).
        effective_negatives: true,
        // MoCo v3 proper: no queue; the 4095 in-batch keys are the negatives.
        queue_size: 0,
        // MoCo v3 ResNet-50: T 1.0.
        temperature: 1.0,
        // MoCo v3: m0 0.99 with --moco-m-cos.
        momentum: 0.99,
        momentum_cosine: true,
        // No queue, nothing to mask; kept on so adding a queue stays safe.
        mask_own: true,
        // MoCo v3: SyncBN in both encoders.
        bn_mode: BnMode::Sync,
        // Unused under sync BN.
        shuffle_groups: 1,
        // MoCo v3 ResNet-50: LARS, lr 0.6 per 256, wd 1e-6 (100-epoch recipe).
        optimizer: Optimizer::Lars,
        base_lr: 0.6,
        weight_decay: 1e-6,
        // MoCo v3: 10 warmup epochs.
        warmup_epochs: 10.0,
        // MoCo v3: the 100-epoch recipe (68.9% linear probe).
        epochs: 100,
        // MoCo v3 trains with AMP.
        amp: true,
        // The paper's 32 GB V100s did not need it.
        recompute: false,
        queue_precision: QueuePrecision::Fp32,
        // BYOL's recipe as MoCo v3 uses it, without the seeds' satellite additions.
        aug: crate::aug_policies::POLICY_MOCO_V3.config(),
        seed: 0,
    }
}

fn tiny() -> TrainConfig {
    TrainConfig {
        // ResNet-50's full topology at 1/8 width (stem 8 channels, features 256): contract 3.
        width: 0.125,
        // Smallest size that still leaves 2x2 at the last stage; a CPU step takes well under a second.
        image_size: 64,
        // Heads scaled down with the backbone's 256 features.
        proj_hidden: 256,
        dim: 64,
        pred_hidden: 256,
        // Enough rows for meaningful BN statistics in two shuffle groups of 16.
        batch: 32,
        global_batch: 0,
        // Keep a demo step simple and fast.
        accumulation: 1,
        // No effect at accumulation 1; on as soon as --accumulation raises it (see seeds_hybrid).
        effective_negatives: true,
        // 1024 = 16, 8 or 4 steps of keys on 1, 2 or 4 workers: valid for all three.
        queue_size: 1024,
        // MoCo v2's T with a queue.
        temperature: 0.2,
        // Fast-moving key encoder for short runs, rising to 1 with the cosine.
        momentum: 0.99,
        momentum_cosine: true,
        // The default synthetic set (2,048 tiles) is twice the queue; masking is cheap.
        mask_own: true,
        // Queue presets use shuffle BN (moco#46).
        bn_mode: BnMode::Shuffle,
        // Two groups of 16.
        shuffle_groups: 2,
        // MoCo v2's SGD: robust from scratch without LARS's trust ratios; a starting point.
        optimizer: Optimizer::Sgd,
        // Measured on the README's 300-step demo (results/2026-12-04-tiny-lr.md): kNN 83.3% at
        // 1.0 against 76.5% at v2-like 0.06, and 2.0 no better (82.6%); one run each.
        base_lr: 1.0,
        // MoCo v2's weight decay.
        weight_decay: 1e-4,
        // One epoch (~64 steps on the default synthetic set) of warmup.
        warmup_epochs: 1.0,
        // ~640 steps on 2,048 synthetic tiles: a demo sees warmup and the cosine.
        epochs: 10,
        // The CPU emulates fp16 by rounding: exact fp32 is the clearer demo and reference.
        amp: false,
        // Nothing to save on a CPU at this size.
        recompute: false,
        queue_precision: QueuePrecision::Fp32,
        aug: AugConfig::default(),
        seed: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolved::ResolvedConfig;

    #[test]
    fn every_preset_is_valid_on_its_own_gpu_count() {
        for p in PRESETS {
            let cfg = p.config();
            // The paper preset needs a dataset larger than one global batch (ImageNet).
            let dataset = if p.name == "paper" { 1_281_167 } else { 2000 };
            let r = ResolvedConfig::new(&cfg, p.gpus, dataset);
            assert!(r.is_ok(), "{}: {}", p.name, r.unwrap_err());
        }
    }

    #[test]
    fn seeds_values_are_kept() {
        let c = get("low-vram").unwrap();
        assert_eq!(
            (c.batch, c.queue_size, c.accumulation, c.epochs, c.amp, c.recompute),
            (64, 65536, 4, 300, true, true)
        );
        let c = get("optimized").unwrap();
        assert_eq!((c.batch, c.queue_size, c.accumulation, c.epochs), (96, 76800, 4, 600));
        let c = get("conservative").unwrap();
        assert_eq!((c.batch, c.queue_size), (80, 64000));
        let c = get("aggressive").unwrap();
        assert_eq!((c.batch, c.queue_size), (128, 65536));
        let c = get("paper").unwrap();
        assert_eq!(
            (c.global_batch, c.optimizer, c.base_lr, c.weight_decay),
            (4096, Optimizer::Lars, 0.6, 1e-6)
        );
        assert_eq!((c.temperature, c.queue_size, c.epochs, c.bn_mode), (1.0, 0, 100, BnMode::Sync));
    }

    #[test]
    fn tiny_queue_is_valid_for_one_two_and_four_workers() {
        let c = get("tiny").unwrap();
        for w in [1, 2, 4] {
            assert!(ResolvedConfig::new(&c, w, 2048).is_ok(), "{w} workers");
        }
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let e = get("fast").unwrap_err().to_string();
        for p in PRESETS {
            assert!(e.contains(p.name), "{e}");
        }
    }
}
