//! `TrainConfig`: every knob of a training run, in one typed struct.
//!
//! A config is a preset (see `presets.rs`) with optional overrides from a TOML file and from
//! long command-line flags. Unknown keys are errors (`deny_unknown_fields`), so a typo never
//! silently falls back to a default. Derived values (effective batch, scaled lr, keys per step)
//! live in `ResolvedConfig` (`resolved.rs`), never here, so they cannot disagree with their inputs.

use serde::{Deserialize, Serialize};

/// Which optimiser updates the fp32 master weights (MOCO.md, "Optimisation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// MoCo v3's ResNet optimiser: SGD momentum 0.9 with layer-wise trust ratio on weights.
    Lars,
    /// MoCo v2's optimiser: SGD with momentum 0.9.
    Sgd,
    /// MoCo v3's ViT optimiser (betas 0.9/0.999, decoupled weight decay).
    Adamw,
}

/// How batch-norm statistics are computed during training (MOCO.md, "Batch-norm statistics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnMode {
    /// Statistics all-reduced over every rank (MoCo v3). Both encoders.
    Sync,
    /// Statistics over the rank's own batch only.
    Local,
    /// Query encoder as `local`; the momentum encoder computes statistics on `shuffle_groups`
    /// sub-batches drawn by a permutation, so key-side statistics do not line up with the
    /// query's (MoCo v2's shuffle-BN, as the official SplitBatchNorm demo does on one rank).
    Shuffle,
}

/// Where the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// CUDA if a driver is found, otherwise the CPU (with a message saying so).
    Auto,
    Cpu,
    Cuda,
}

/// Storage precision of the negative queue's keys (the shard on the device and in memory plans).
/// fp16 halves the shard (K x dim x 2 B instead of 4 B per rank's share); keys are rounded to
/// fp16 (nearest even) when enqueued, on every backend, and the logits read the rounded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePrecision {
    #[default]
    Fp32,
    Fp16,
}

impl QueuePrecision {
    /// Bytes per stored key value.
    pub fn bytes(self) -> u64 {
        match self {
            QueuePrecision::Fp32 => 4,
            QueuePrecision::Fp16 => 2,
        }
    }

    /// The name configs and flags use (`fp32`, `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            QueuePrecision::Fp32 => "fp32",
            QueuePrecision::Fp16 => "fp16",
        }
    }
}

/// The two-view augmentation pipeline (MOCO.md, "Augmentations"). Probabilities are per view
/// where the two views differ (`[view1, view2]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugConfig {
    /// Lower bound of the random-resized-crop area fraction (0.08 code default, 0.2 recipes).
    pub crop_min: f32,
    /// Colour jitter strengths: brightness, contrast, saturation, hue.
    pub jitter: [f32; 4],
    /// Probability of applying colour jitter.
    pub jitter_p: f32,
    /// Probability of converting to grayscale.
    pub grayscale_p: f32,
    /// Gaussian blur probability per view (BYOL: 1.0 and 0.1).
    pub blur_p: [f32; 2],
    /// Blur sigma range, in pixels of a 224-px image, scaled with the image size.
    pub blur_sigma: [f32; 2],
    /// Solarize probability per view (BYOL: 0.0 and 0.2).
    pub solarize_p: [f32; 2],
    /// Horizontal flip probability.
    pub hflip_p: f32,
    /// Vertical flip probability (overhead imagery has no canonical "up").
    pub vflip_p: f32,
    /// Random rotation by a multiple of 90 degrees (overhead imagery).
    pub rot90: bool,
    /// Standard deviation of additive Gaussian noise after normalisation (0 = off).
    pub noise_std: f32,
}

impl Default for AugConfig {
    fn default() -> Self {
        Self {
            crop_min: 0.2,
            jitter: [0.4, 0.4, 0.2, 0.1],
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: [1.0, 0.1],
            blur_sigma: [0.1, 2.0],
            solarize_p: [0.0, 0.2],
            hflip_p: 0.5,
            vflip_p: 0.5,
            rot90: true,
            noise_std: 0.02,
        }
    }
}

/// Every knob of a run. Field docs say what the knob is; the presets say why each value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    // ---- model ----
    /// Channel width multiplier of ResNet-50 (1.0 = torchvision). Stage widths are
    /// round(64*w), round(128*w), ...; the topology never changes.
    pub width: f32,
    /// Training crop size in pixels (square). A multiple of 32, at least 32.
    pub image_size: usize,
    /// Projector hidden width (4096 in MoCo v3).
    pub proj_hidden: usize,
    /// Output (embedding) dimension of projector and predictor (256 in MoCo v3).
    pub dim: usize,
    /// Predictor hidden width (4096 in MoCo v3).
    pub pred_hidden: usize,

    // ---- batch ----
    /// Images per rank per micro-batch.
    pub batch: usize,
    /// If non-zero, the global batch per optimiser step; `batch` is then derived as
    /// global_batch / (world * accumulation) and must divide exactly.
    pub global_batch: usize,
    /// Micro-batches summed before each optimiser step.
    pub accumulation: usize,
    /// With `accumulation` > 1: compute the keys of every micro-batch of the optimiser step
    /// first and contrast each micro-batch's queries with all of them (the effective batch's
    /// negatives, as one large batch would), enqueueing the step's keys once at its end. No
    /// effect with `accumulation` = 1. Absent from older configs and checkpoints: off there.
    #[serde(default)]
    pub effective_negatives: bool,

    // ---- MoCo ----
    /// Global negative queue size K (0 = no queue, MoCo v3 proper).
    pub queue_size: usize,
    /// Softmax temperature T.
    pub temperature: f32,
    /// Base momentum m0 of the momentum encoder.
    pub momentum: f32,
    /// Raise the momentum to 1 over training with a half-cosine (v3 `--moco-m-cos`).
    pub momentum_cosine: bool,
    /// Mask a query's own image out of its queue negatives (MOCO.md, "Small datasets").
    pub mask_own: bool,
    /// Batch-norm statistics mode.
    pub bn_mode: BnMode,
    /// Sub-batches of the key-side shuffle BN (used when `bn_mode = shuffle`).
    pub shuffle_groups: usize,

    // ---- optimisation ----
    pub optimizer: Optimizer,
    /// Learning rate per 256 images of effective batch.
    pub base_lr: f32,
    pub weight_decay: f32,
    /// Linear warmup length in epochs (fractional allowed).
    pub warmup_epochs: f32,
    pub epochs: usize,

    // ---- memory / precision ----
    /// fp16 compute with dynamic loss scaling (emulated by rounding on the CPU).
    pub amp: bool,
    /// Keep only bottleneck-block inputs in the forward and recompute blocks in backward.
    pub recompute: bool,
    /// Storage precision of the queue's keys (`fp32` or `fp16`). Absent from older configs and
    /// checkpoints: fp32 there.
    #[serde(default)]
    pub queue_precision: QueuePrecision,

    // ---- data ----
    pub aug: AugConfig,
    /// Seed of everything random: init, queue, data order, augmentations.
    pub seed: u64,
}

impl TrainConfig {
    /// Parse a TOML override file on top of `self`: keys present in the file replace the
    /// preset's values; unknown keys are an error naming the key.
    pub fn merge_toml(&self, text: &str) -> Result<TrainConfig, crate::ProtoError> {
        let mut base = toml::Value::try_from(self)
            .map_err(|e| crate::ProtoError::Config(format!("cannot serialise config: {e}")))?;
        let over: toml::Value = toml::from_str(text)
            .map_err(|e| crate::ProtoError::Config(format!("config file is not valid TOML: {e}")))?;
        merge_values(&mut base, over);
        base.try_into().map_err(|e: toml::de::Error| crate::ProtoError::Config(format!("config file: {e}")))
    }
}

fn merge_values(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_values(slot, v),
                    // Unknown keys are kept so that deserialisation rejects them by name.
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
