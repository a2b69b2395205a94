//! The config flags shared by `launcher` and `worker`: `--preset`, `--config` and one long flag
//! per `TrainConfig` field. Both binaries flatten `ConfigArgs` into their CLIs, so a knob has
//! the same name everywhere, and the name is the config-file key with `-` for `_`.
//!
//! The final config is built in three layers: preset -> TOML file -> flags. A flag left out
//! keeps the value below it, which is why every field here is an `Option`. Booleans come in
//! pairs (`--amp` / `--no-amp`) so a flag can turn a preset's setting either way; the last one
//! given wins. Unknown flags (clap) and unknown file keys (serde) are errors.

use crate::error::{Result, WorkerError};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use moco_proto::config::{BnMode, Optimizer, QueuePrecision, TrainConfig};
use moco_proto::{aug_policies, presets, ProtoError};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Config (preset -> --config file -> these flags)")]
pub struct ConfigArgs {
    /// Named preset to start from (`launcher presets` lists them) [default: tiny].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// TOML file whose keys override the preset (same names as the flags, with `_`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    // ---- model ----
    /// ResNet-50 channel width multiplier (1.0 = torchvision).
    #[arg(long)]
    pub width: Option<f32>,
    /// Training crop size in pixels (a multiple of 32).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Projector hidden width.
    #[arg(long)]
    pub proj_hidden: Option<usize>,
    /// Embedding dimension of projector and predictor.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Predictor hidden width.
    #[arg(long)]
    pub pred_hidden: Option<usize>,

    // ---- batch ----
    /// Images per GPU per micro-batch (clears the preset's --global-batch unless that is given too).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Images per optimiser step over all GPUs; the per-GPU batch is derived (0 = use --batch).
    #[arg(long)]
    pub global_batch: Option<usize>,
    /// Micro-batches per optimiser step (gradient accumulation).
    #[arg(long)]
    pub accumulation: Option<usize>,

    // ---- MoCo ----
    /// Negative queue size K (0 = no queue); a multiple of 2 x batch x GPUs.
    #[arg(long)]
    pub queue_size: Option<usize>,
    /// Softmax temperature T.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Base momentum m0 of the momentum encoder.
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Raise the momentum to 1 with a half-cosine (MoCo v3).
    #[arg(long, overrides_with = "no_momentum_cosine")]
    pub momentum_cosine: bool,
    /// Keep the momentum at m0.
    #[arg(long, overrides_with = "momentum_cosine")]
    pub no_momentum_cosine: bool,
    /// With --accumulation > 1: contrast every micro-batch's queries with the keys of the whole
    /// optimiser step (the effective batch's negatives), as one large batch would.
    #[arg(long, overrides_with = "no_effective_negatives")]
    pub effective_negatives: bool,
    /// With --accumulation > 1: contrast each micro-batch's queries with its own keys only.
    #[arg(long, overrides_with = "effective_negatives")]
    pub no_effective_negatives: bool,
    /// Mask a query's own image out of its queue negatives.
    #[arg(long, overrides_with = "no_mask_own")]
    pub mask_own: bool,
    /// Count a query's own image's older keys as negatives.
    #[arg(long, overrides_with = "mask_own")]
    pub no_mask_own: bool,
    /// Batch-norm statistics: sync (all ranks), local (per rank), shuffle (key-side groups).
    #[arg(long, value_parser = enum_parser::<BnMode>(&["sync", "local", "shuffle"]))]
    pub bn_mode: Option<BnMode>,
    /// Groups of the key-side shuffle BN.
    #[arg(long)]
    pub shuffle_groups: Option<usize>,

    // ---- optimisation ----
    /// Optimiser of the fp32 master weights.
    #[arg(long, value_parser = enum_parser::<Optimizer>(&["lars", "sgd", "adamw"]))]
    pub optimizer: Option<Optimizer>,
    /// Learning rate per 256 images of effective batch.
    #[arg(long)]
    pub base_lr: Option<f32>,
    /// Weight decay (LARS/SGD: L2 added to the gradient; AdamW: decoupled).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Linear warmup in epochs (fractional allowed).
    #[arg(long)]
    pub warmup_epochs: Option<f32>,
    /// Length of the lr and momentum schedules, in epochs.
    #[arg(long)]
    pub epochs: Option<usize>,

    // ---- memory / precision ----
    /// fp16 compute with dynamic loss scaling.
    #[arg(long, overrides_with = "no_amp")]
    pub amp: bool,
    /// fp32 everywhere.
    #[arg(long, overrides_with = "amp")]
    pub no_amp: bool,
    /// Keep only bottleneck inputs and recompute blocks in the backward.
    #[arg(long, overrides_with = "no_recompute")]
    pub recompute: bool,
    /// Keep every activation the backward needs.
    #[arg(long, overrides_with = "recompute")]
    pub no_recompute: bool,
    /// Storage precision of the negative queue's keys: fp32, or fp16 (half the shard's memory;
    /// keys rounded to fp16 when enqueued).
    #[arg(long, value_parser = enum_parser::<QueuePrecision>(&["fp32", "fp16"]))]
    pub queue_precision: Option<QueuePrecision>,

    // ---- augmentation ----
    /// Named augmentation policy: replaces the preset's [aug] keys; the --config file and the
    /// flags below still change single keys (moco-v3, moco-v3-aerial, aerial, light).
    #[arg(long, value_name = "POLICY")]
    pub aug: Option<String>,
    /// Smallest random-resized-crop area fraction.
    #[arg(long)]
    pub crop_min: Option<f32>,
    /// Colour jitter strengths: brightness,contrast,saturation,hue.
    #[arg(long, value_name = "B,C,S,H", value_parser = parse_floats::<4>)]
    pub jitter: Option<[f32; 4]>,
    /// Probability of colour jitter.
    #[arg(long)]
    pub jitter_p: Option<f32>,
    /// Probability of grayscale.
    #[arg(long)]
    pub grayscale_p: Option<f32>,
    /// Gaussian blur probability of view 1,view 2.
    #[arg(long, value_name = "P1,P2", value_parser = parse_floats::<2>)]
    pub blur_p: Option<[f32; 2]>,
    /// Blur sigma range low,high (pixels of a 224-px image).
    #[arg(long, value_name = "LO,HI", value_parser = parse_floats::<2>)]
    pub blur_sigma: Option<[f32; 2]>,
    /// Solarize probability of view 1,view 2.
    #[arg(long, value_name = "P1,P2", value_parser = parse_floats::<2>)]
    pub solarize_p: Option<[f32; 2]>,
    /// Probability of a horizontal flip.
    #[arg(long)]
    pub hflip_p: Option<f32>,
    /// Probability of a vertical flip.
    #[arg(long)]
    pub vflip_p: Option<f32>,
    /// Random rotations by multiples of 90 degrees.
    #[arg(long, overrides_with = "no_rot90")]
    pub rot90: bool,
    /// No 90-degree rotations.
    #[arg(long, overrides_with = "rot90")]
    pub no_rot90: bool,
    /// Std of additive Gaussian noise after normalisation (0 = off).
    #[arg(long)]
    pub noise_std: Option<f32>,

    /// Seed of init, queue, data order and augmentations.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// A clap parser for a kebab-case serde enum of `proto`, listing the valid names on error.
fn enum_parser<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| serde_json::from_value::<T>(serde_json::Value::String(s)))
}

/// `a,b,...` with exactly `N` numbers.
fn parse_floats<const N: usize>(s: &str) -> std::result::Result<[f32; N], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != N {
        return Err(format!("expected {N} comma-separated numbers, got {}", parts.len()));
    }
    let mut out = [0.0f32; N];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p.parse().map_err(|_| format!("{p:?} is not a number"))?;
    }
    Ok(out)
}

/// A `--flag` / `--no-flag` pair: Some(true), Some(false), or None when neither was given.
fn pair(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl ConfigArgs {
    /// The preset the config starts from (`--preset`, else the default `tiny`).
    pub fn preset_name(&self) -> &str {
        self.preset.as_deref().unwrap_or(presets::DEFAULT_PRESET)
    }

    /// preset -> `--aug` policy -> TOML file -> flags. Errors name the unknown preset or
    /// policy, the file and its bad key.
    pub fn build(&self) -> Result<TrainConfig> {
        let mut cfg = presets::get(self.preset_name())?;
        if let Some(policy) = &self.aug {
            cfg.aug = aug_policies::get(policy)?;
        }
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| WorkerError::io(format!("reading config file {}", path.display()), e))?;
            let merged = cfg
                .merge_toml(&text)
                .map_err(|e| WorkerError::Config(ProtoError::Config(format!("{}: {e}", path.display()))))?;
            // A file that sets a per-GPU batch but no global batch means the per-GPU batch.
            let global = if merged.batch != cfg.batch && merged.global_batch == cfg.global_batch {
                0
            } else {
                merged.global_batch
            };
            cfg = TrainConfig { global_batch: global, ..merged };
        }
        self.apply(&mut cfg);
        Ok(cfg)
    }

    /// Apply the flags that were given on top of `cfg`.
    pub fn apply(&self, c: &mut TrainConfig) {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        set(&mut c.width, &self.width);
        set(&mut c.image_size, &self.image_size);
        set(&mut c.proj_hidden, &self.proj_hidden);
        set(&mut c.dim, &self.dim);
        set(&mut c.pred_hidden, &self.pred_hidden);
        if self.batch.is_some() && self.global_batch.is_none() {
            // `--batch` on a preset with a global batch (paper) means "this many per GPU".
            c.global_batch = 0;
        }
        set(&mut c.batch, &self.batch);
        set(&mut c.global_batch, &self.global_batch);
        set(&mut c.accumulation, &self.accumulation);
        set(&mut c.queue_size, &self.queue_size);
        set(&mut c.temperature, &self.temperature);
        set(&mut c.momentum, &self.momentum);
        set(&mut c.momentum_cosine, &pair(self.momentum_cosine, self.no_momentum_cosine));
        set(&mut c.effective_negatives, &pair(self.effective_negatives, self.no_effective_negatives));
        set(&mut c.mask_own, &pair(self.mask_own, self.no_mask_own));
        set(&mut c.bn_mode, &self.bn_mode);
        set(&mut c.shuffle_groups, &self.shuffle_groups);
        set(&mut c.optimizer, &self.optimizer);
        set(&mut c.base_lr, &self.base_lr);
        set(&mut c.weight_decay, &self.weight_decay);
        set(&mut c.warmup_epochs, &self.warmup_epochs);
        set(&mut c.epochs, &self.epochs);
        set(&mut c.amp, &pair(self.amp, self.no_amp));
        set(&mut c.recompute, &pair(self.recompute, self.no_recompute));
        set(&mut c.queue_precision, &self.queue_precision);
        let a = &mut c.aug;
        set(&mut a.crop_min, &self.crop_min);
        set(&mut a.jitter, &self.jitter);
        set(&mut a.jitter_p, &self.jitter_p);
        set(&mut a.grayscale_p, &self.grayscale_p);
        set(&mut a.blur_p, &self.blur_p);
        set(&mut a.blur_sigma, &self.blur_sigma);
        set(&mut a.solarize_p, &self.solarize_p);
        set(&mut a.hflip_p, &self.hflip_p);
        set(&mut a.vflip_p, &self.vflip_p);
        set(&mut a.rot90, &pair(self.rot90, self.no_rot90));
        set(&mut a.noise_std, &self.noise_std);
        set(&mut c.seed, &self.seed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: ConfigArgs,
    }

    fn build(args: &[&str]) -> Result<TrainConfig> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| WorkerError::Config(ProtoError::Config(e.to_string())))?;
        cli.cfg.build()
    }

    #[test]
    fn flags_override_the_preset() {
        let c = build(&[
            "--preset",
            "optimized",
            "--batch",
            "64",
            "--queue-size",
            "65536",
            "--no-amp",
            "--bn-mode",
            "sync",
        ])
        .unwrap();
        assert_eq!((c.batch, c.queue_size, c.amp, c.bn_mode), (64, 65536, false, BnMode::Sync));
        assert_eq!(c.epochs, 600, "untouched fields keep the preset's value");
        let c = build(&["--preset", "tiny", "--amp", "--no-amp", "--amp", "--jitter", "0.1,0.2,0.3,0.05"])
            .unwrap();
        assert!(c.amp, "the last of --amp/--no-amp wins");
        assert_eq!(c.aug.jitter, [0.1, 0.2, 0.3, 0.05]);
    }

    #[test]
    fn batch_flag_clears_a_presets_global_batch() {
        let c = build(&["--preset", "paper", "--batch", "32"]).unwrap();
        assert_eq!((c.batch, c.global_batch), (32, 0));
        let c = build(&["--preset", "paper", "--batch", "32", "--global-batch", "1024"]).unwrap();
        assert_eq!((c.batch, c.global_batch), (32, 1024));
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("moco-config-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "batch = 48\nqueue_size = 1536\n[aug]\nvflip_p = 0.0\n").unwrap();
        let p = path.to_str().unwrap();
        let c = build(&["--preset", "paper", "--config", p, "--queue-size", "3072"]).unwrap();
        assert_eq!((c.batch, c.global_batch, c.queue_size, c.aug.vflip_p), (48, 0, 3072, 0.0));
        std::fs::write(&path, "batch_size = 48\n").unwrap();
        let e = build(&["--config", p]).unwrap_err().to_string();
        assert!(e.contains("batch_size") && e.contains("c.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_aug_policy_replaces_the_presets_keys_and_the_file_and_flags_still_win() {
        let c = build(&["--preset", "tiny", "--aug", "light"]).unwrap();
        assert_eq!(c.aug, aug_policies::get("light").unwrap());
        assert_eq!(c.batch, 32, "a policy touches only [aug]");
        let dir = std::env::temp_dir().join(format!("moco-config-aug-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        std::fs::write(&path, "[aug]\ngrayscale_p = 0.3\nnoise_std = 0.1\n").unwrap();
        let p = path.to_str().unwrap();
        let c = build(&["--aug", "aerial", "--config", p, "--noise-std", "0.05", "--no-rot90"]).unwrap();
        let want = moco_proto::config::AugConfig {
            grayscale_p: 0.3,
            noise_std: 0.05,
            rot90: false,
            ..aug_policies::get("aerial").unwrap()
        };
        assert_eq!(c.aug, want);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = build(&["--aug", "strong"]).unwrap_err().to_string();
        assert!(e.contains("strong") && e.contains("moco-v3-aerial"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_by_name() {
        assert!(build(&["--bn-mode", "syncbn"]).unwrap_err().to_string().contains("sync"));
        assert!(build(&["--blur-p", "0.5"]).is_err());
        assert!(build(&["--batch-size", "8"]).is_err());
        assert!(build(&["--preset", "huge"]).unwrap_err().to_string().contains("low-vram"));
    }

    #[test]
    fn queue_precision_from_the_flag_and_the_file_with_bad_values_named() {
        assert_eq!(build(&["--preset", "tiny"]).unwrap().queue_precision, QueuePrecision::Fp32, "default");
        let c = build(&["--preset", "tiny", "--queue-precision", "fp16"]).unwrap();
        assert_eq!(c.queue_precision, QueuePrecision::Fp16);
        let e = build(&["--queue-precision", "bf16"]).unwrap_err().to_string();
        assert!(e.contains("bf16") && e.contains("fp16") && e.contains("fp32"), "{e}");
        let dir = std::env::temp_dir().join(format!("moco-config-qprec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.toml");
        std::fs::write(&path, "queue_precision = \"fp16\"\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(build(&["--config", p]).unwrap().queue_precision, QueuePrecision::Fp16);
        std::fs::write(&path, "queue_precision = \"half\"\n").unwrap();
        let e = build(&["--config", p]).unwrap_err().to_string();
        assert!(e.contains("half") && e.contains("fp16"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
