//! The values a run derives from its config, world size and dataset, computed in one place
//! and logged at start, so the trainer, the planner and the user all see the same numbers.
//!
//! - `Batching`: what follows from the config and the world size alone (per-rank batch,
//!   effective batch, scaled lr, keys per step, queue shard). `launcher presets` needs only this.
//! - `ResolvedConfig`: adds the dataset (steps per epoch, total and warmup steps) and the
//!   warnings. Building either validates the config and reports every problem at once.

use crate::config::TrainConfig;
use crate::error::ProtoError;
use crate::validate::{self, Problem};

/// Values derived from the config and the world size.
#[derive(Debug, Clone, PartialEq)]
pub struct Batching {
    /// Ranks (one per GPU, or CPU worker).
    pub world: usize,
    /// Images per rank per micro-batch (derived from `global_batch` when that is set).
    pub batch: usize,
    pub accumulation: usize,
    /// Images per optimiser step over all ranks: batch x world x accumulation.
    pub effective_batch: usize,
    /// Peak learning rate: base_lr x effective_batch / 256 (MOCO.md, "LR scaling").
    pub scaled_lr: f64,
    /// Keys one enqueue writes for the whole group: 2 views x batch x world, x accumulation
    /// with effective-batch negatives (the step's keys enter the queue together).
    pub keys_per_step: usize,
    /// Micro-batches whose keys one enqueue writes (`validate::micro_per_enqueue`).
    pub enqueue_micro: usize,
    /// Keys each query is contrasted with besides the queue: 2 views' worth of the micro-batch
    /// (batch x world), or of the whole optimiser step with effective-batch negatives.
    pub batch_keys: usize,
    /// Queue rows each rank owns: K / world (0 without a queue).
    pub queue_shard_rows: usize,
    /// Micro-batches of keys the queue holds: K / keys_per_step (how stale its oldest key is).
    pub queue_steps: usize,
}

impl Batching {
    /// Validate the dataset-independent rules and derive the batch values.
    pub fn new(cfg: &TrainConfig, world: usize) -> Result<Batching, ProtoError> {
        let (batch, problems) = validate::config_problems(cfg, world);
        match batch {
            Some(batch) if problems.is_empty() => Ok(Self::derive(cfg, batch, world)),
            _ => Err(ProtoError::Invalid(problems)),
        }
    }

    fn derive(cfg: &TrainConfig, batch: usize, world: usize) -> Batching {
        let effective_batch = batch * world * cfg.accumulation;
        let enqueue_micro = validate::micro_per_enqueue(cfg);
        let keys_per_step = validate::keys_per_step(batch * enqueue_micro, world);
        Batching {
            world,
            batch,
            accumulation: cfg.accumulation,
            effective_batch,
            scaled_lr: cfg.base_lr as f64 * effective_batch as f64 / 256.0,
            keys_per_step,
            enqueue_micro,
            batch_keys: batch * world * enqueue_micro,
            queue_shard_rows: cfg.queue_size / world,
            queue_steps: cfg.queue_size / keys_per_step,
        }
    }
}

/// A validated config with everything derived from it. `cfg.batch` holds the per-rank batch
/// (also when it came from `global_batch`), so consumers never re-derive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    pub cfg: TrainConfig,
    pub batching: Batching,
    /// Images in the dataset (before sharding over ranks).
    pub dataset_len: usize,
    /// Full micro-batches per epoch per rank: dataset / (batch x world), the rest dropped.
    pub micro_batches_per_epoch: usize,
    /// Optimiser steps per epoch: micro-batches per epoch / accumulation, floored.
    pub steps_per_epoch: usize,
    /// Optimiser steps of the whole run: steps_per_epoch x epochs.
    pub total_steps: usize,
    /// Optimiser steps of linear warmup: warmup_epochs x steps_per_epoch, rounded.
    pub warmup_steps: usize,
    /// Legal but questionable settings, each with a suggestion; logged at start.
    pub warnings: Vec<String>,
}

impl ResolvedConfig {
    /// Validate `cfg` for `world` ranks and a dataset of `dataset_len` images, and derive
    /// everything. All problems are returned together in `ProtoError::Invalid`.
    pub fn new(cfg: &TrainConfig, world: usize, dataset_len: usize) -> Result<ResolvedConfig, ProtoError> {
        let (batch, mut problems) = validate::config_problems(cfg, world);
        if let Some(b) = batch {
            problems.extend(validate::dataset_problems(cfg, b, world, dataset_len));
        }
        // Suggest only per-GPU batches this dataset can feed: at most a rank's share, and one
        // optimiser step's micro-batches per epoch.
        for p in &mut problems {
            if let Problem::QueueIndivisible { batches, .. } = p {
                batches.retain(|&n| n * world.max(1) * cfg.accumulation.max(1) <= dataset_len);
            }
        }
        if batch.is_none() && dataset_len == 0 {
            problems.push(Problem::EmptyDataset);
        }
        let batch = match batch {
            Some(b) if problems.is_empty() => b,
            _ => return Err(ProtoError::Invalid(problems)),
        };
        let batching = Batching::derive(cfg, batch, world);
        let micro = dataset_len / (batch * world);
        let steps_per_epoch = micro / cfg.accumulation;
        let mut cfg = cfg.clone();
        cfg.batch = batch;
        Ok(ResolvedConfig {
            warnings: validate::warnings(&cfg, batch, world, dataset_len),
            micro_batches_per_epoch: micro,
            steps_per_epoch,
            total_steps: steps_per_epoch * cfg.epochs,
            warmup_steps: (cfg.warmup_epochs as f64 * steps_per_epoch as f64).round() as usize,
            dataset_len,
            batching,
            cfg,
        })
    }

    /// Images seen per epoch (the rest are dropped: only whole optimiser steps run).
    pub fn images_per_epoch(&self) -> usize {
        self.steps_per_epoch * self.batching.effective_batch
    }

    /// A multi-line, human-readable account of the derived values (logged at start, printed
    /// by `launcher plan`).
    pub fn summary(&self) -> String {
        let c = &self.cfg;
        let b = &self.batching;
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<18} {v}\n"));
        line("per-GPU batch", format!("{} images (x2 views)", b.batch));
        line(
            "effective batch",
            format!(
                "{} = {} per GPU x {} rank(s) x {} accumulation",
                b.effective_batch, b.batch, b.world, b.accumulation
            ),
        );
        line(
            "learning rate",
            format!(
                "{} = base {} x {}/256 ({}, wd {})",
                fmt_num(b.scaled_lr),
                fmt_num(c.base_lr as f64),
                b.effective_batch,
                optimizer_name(c),
                fmt_num(c.weight_decay as f64)
            ),
        );
        if c.queue_size > 0 {
            line(
                "queue",
                format!(
                    "{} keys = {} steps of {} keys (2 views x {} x {}{}); {} rows per rank",
                    c.queue_size,
                    b.queue_steps,
                    b.keys_per_step,
                    b.batch,
                    b.world,
                    if b.enqueue_micro > 1 { format!(" x {}", b.enqueue_micro) } else { String::new() },
                    b.queue_shard_rows
                ),
            );
        } else {
            line("queue", format!("none (MoCo v3: {} in-batch keys per step)", b.keys_per_step));
        }
        // What each query is contrasted with besides the queue (per term: the other view's keys).
        let whose = match (b.accumulation > 1, b.enqueue_micro > 1) {
            (false, _) => "the step's",
            (true, true) => "the whole effective batch's (effective-batch negatives on)",
            (true, false) => "its own micro-batch's only (effective-batch negatives off)",
        };
        line("batch negatives", format!("{} keys per query term: {whose}", b.batch_keys));
        line(
            "dataset",
            format!(
                "{} images, {} used per epoch ({} micro-batches, drop last)",
                self.dataset_len,
                self.images_per_epoch(),
                self.micro_batches_per_epoch
            ),
        );
        line("steps per epoch", format!("{} optimiser steps", self.steps_per_epoch));
        line("total steps", format!("{} ({} epochs)", self.total_steps, c.epochs));
        line("warmup steps", format!("{} ({} epochs)", self.warmup_steps, c.warmup_epochs));
        line(
            "model",
            format!(
                "ResNet-50 width {} at {}px, projector {}-{}, predictor {}-{}",
                c.width, c.image_size, c.proj_hidden, c.dim, c.pred_hidden, c.dim
            ),
        );
        line(
            "moco",
            format!(
                "T {}, m0 {}{}, BN {}{}, own-image mask {}",
                c.temperature,
                c.momentum,
                if c.momentum_cosine { " (cosine to 1)" } else { "" },
                validate::bn_name(c.bn_mode),
                if c.bn_mode == crate::config::BnMode::Shuffle {
                    format!(" ({} groups)", c.shuffle_groups)
                } else {
                    String::new()
                },
                on_off(c.mask_own)
            ),
        );
        line(
            "memory",
            format!(
                "AMP {}, recompute {}, queue keys {}",
                on_off(c.amp),
                on_off(c.recompute),
                c.queue_precision.name()
            ),
        );
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        s
    }
}

/// A number as a person writes it: `0.6`, `9.6`, `0.0075`, `1.5e-4`, `1e-6` (4 significant
/// digits at most).
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".to_string()
    } else if (1e-3..1e4).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{x:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{x:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        format!("{m}e{e}")
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub fn optimizer_name(c: &TrainConfig) -> &'static str {
    match c.optimizer {
        crate::config::Optimizer::Lars => "lars",
        crate::config::Optimizer::Sgd => "sgd",
        crate::config::Optimizer::Adamw => "adamw",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn the_queue_error_suggests_only_batches_the_data_can_feed() {
        // 65536 keys on 2 ranks of 96: suggestions were 32, 64, 128, 256...; 300 images on 2
        // ranks with accumulation 4 feed at most 37 per GPU.
        let mut cfg = presets::get("optimized").unwrap();
        cfg.queue_size = 65536;
        let batches = |dataset| match ResolvedConfig::new(&cfg, 2, dataset) {
            Err(ProtoError::Invalid(p)) => p
                .iter()
                .find_map(|p| match p {
                    Problem::QueueIndivisible { batches, .. } => Some(batches.clone()),
                    _ => None,
                })
                .expect("the queue problem"),
            other => panic!("expected the queue problem, got {:?}", other.map(|_| ())),
        };
        assert!(batches(1_000_000).contains(&128));
        let small = batches(300);
        assert!(!small.is_empty() && small.iter().all(|&n| n * 2 * 4 <= 300), "{small:?}");
        assert!(batches(4).is_empty());
    }

    #[test]
    fn optimized_on_two_gpus_and_the_users_tiles() {
        let cfg = presets::get("optimized").unwrap();
        let r = ResolvedConfig::new(&cfg, 2, 2000).unwrap();
        assert_eq!(r.batching.effective_batch, 96 * 2 * 4);
        assert_eq!(r.batching.scaled_lr, f64::from(cfg.base_lr) * 768.0 / 256.0);
        // Effective-batch negatives: one write of the step's 2 x 96 x 2 x 4 keys; each query
        // term sees the 768 keys of the effective batch.
        assert_eq!(r.batching.keys_per_step, 1536);
        assert_eq!(r.batching.batch_keys, 768);
        assert_eq!(r.batching.queue_shard_rows, 38400);
        assert_eq!(r.micro_batches_per_epoch, 2000 / 192);
        assert_eq!(r.steps_per_epoch, (2000 / 192) / 4);
        assert_eq!(r.total_steps, r.steps_per_epoch * 600);
        // K = 76,800 > 2,000 images: warned, with a suggested size that is itself valid.
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("larger than the dataset") && w.contains("--queue-size 1536")));
    }

    #[test]
    fn global_batch_derives_the_per_rank_batch() {
        let cfg = presets::get("paper").unwrap();
        let r = ResolvedConfig::new(&cfg, 16, 1_281_167).unwrap();
        assert_eq!(r.cfg.batch, 256);
        assert_eq!(r.batching.effective_batch, 4096);
        assert_eq!(r.batching.scaled_lr, f64::from(cfg.base_lr) * 16.0);
        let e = ResolvedConfig::new(&cfg, 3, 1_281_167).unwrap_err();
        assert!(matches!(e.problems(), [Problem::GlobalBatchIndivisible { .. }]), "{e}");
    }

    #[test]
    fn numbers_read_as_written() {
        let cases = [(0.6, "0.6"), (9.6, "9.6"), (0.0075, "0.0075"), (1.5e-4, "1.5e-4"), (4.5e-4, "4.5e-4")];
        for (x, s) in cases.into_iter().chain([(1e-6, "1e-6"), (0.0, "0"), (1024.0, "1024"), (0.1, "0.1")]) {
            assert_eq!(fmt_num(x), s);
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut cfg = presets::get("optimized").unwrap();
        cfg.queue_size = 65536;
        cfg.image_size = 200;
        cfg.temperature = 0.0;
        let e = ResolvedConfig::new(&cfg, 2, 2000).unwrap_err();
        assert_eq!(e.problems().len(), 3, "{e}");
    }
}
