//! Rules a config must satisfy before a run starts, and what to tell the user when it does not.
//!
//! Every broken rule becomes a `Problem` whose message names the flag, why the rule exists and
//! the values that would work (nearest valid queue sizes, batch sizes, GPU counts). All problems
//! are collected, not just the first, so one run of `launcher plan` shows everything to fix.
//! Things that are legal but probably unwanted (a queue bigger than the dataset) are warnings.

use crate::config::{AugConfig, BnMode, TrainConfig};
use std::fmt;

/// Two augmented views per image: each enqueues one key (MOCO.md, "Loss").
pub const VIEWS: usize = 2;
/// ResNet-50 halves the resolution five times (stem conv, max pool, stages 2-4).
pub const SIZE_MULTIPLE: usize = 32;
/// Largest per-rank batch the helpers below consider (suggestions, plan search).
pub const MAX_BATCH: usize = 4096;
/// Largest world size suggested when a global batch must divide evenly (8 nodes x 8 GPUs).
pub const MAX_SUGGESTED_WORLD: usize = 64;

/// One broken rule, with the numbers needed to say what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    ZeroWorld,
    ZeroAccumulation,
    /// Neither a per-rank batch nor a global batch was given.
    ZeroBatch,
    /// Both `batch` and `global_batch` are set and disagree.
    BatchConflict {
        batch: usize,
        global_batch: usize,
        derived: Option<usize>,
    },
    /// global_batch / (world * accumulation) is not a whole number.
    GlobalBatchIndivisible {
        global_batch: usize,
        world: usize,
        accumulation: usize,
        valid_worlds: Vec<usize>,
    },
    /// queue % (2 * batch * world * micro) != 0 (micro: micro-batches per enqueue).
    QueueIndivisible {
        queue: usize,
        batch: usize,
        world: usize,
        /// Micro-batches whose keys one enqueue writes: `accumulation` with
        /// `effective_negatives`, else 1.
        micro: usize,
        keys_per_step: usize,
        below: Option<usize>,
        above: usize,
        batches: Vec<usize>,
    },
    ImageSize {
        size: usize,
        below: Option<usize>,
        above: usize,
    },
    /// The key-side shuffle BN cannot split the batch into groups of >= 2 images.
    ShuffleGroups {
        batch: usize,
        groups: usize,
        valid: Vec<usize>,
    },
    /// A BN statistics group would hold fewer than 2 images (the heads' BN1d needs >= 2).
    BnTooFewImages {
        mode: BnMode,
        images: usize,
    },
    EmptyDataset,
    /// The per-rank batch exceeds what a rank's shard of the dataset holds.
    BatchLargerThanShard {
        batch: usize,
        world: usize,
        dataset: usize,
    },
    /// An epoch has fewer micro-batches than one optimiser step needs.
    TooFewMicroBatches {
        dataset: usize,
        batch: usize,
        world: usize,
        micro: usize,
        accumulation: usize,
    },
    /// A scalar outside its legal range: `need` says what is legal and usual.
    OutOfRange {
        flag: &'static str,
        value: String,
        need: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ZeroWorld => write!(
                f,
                "the world size is 0: at least one rank (GPU or CPU worker) is needed.\n\
                 fix: --gpus 1 (or --workers 1 on the CPU)."
            ),
            Problem::ZeroAccumulation => write!(
                f,
                "--accumulation 0: an optimiser step needs at least one micro-batch.\n\
                 fix: --accumulation 1 (no accumulation) or more."
            ),
            Problem::ZeroBatch => write!(
                f,
                "--batch 0 and --global-batch 0: no batch size is set.\n\
                 fix: --batch N (images per GPU) or --global-batch N (images per optimiser step)."
            ),
            Problem::BatchConflict { batch, global_batch, derived } => {
                write!(f, "--batch {batch} and --global-batch {global_batch} are both set")?;
                if let Some(d) = derived {
                    write!(f, " and disagree (the global batch gives {d} per GPU)")?;
                }
                write!(f, ".\nfix: keep one of them; --global-batch 0 makes --batch the per-GPU size.")
            }
            Problem::GlobalBatchIndivisible { global_batch, world, accumulation, valid_worlds } => {
                let per = *global_batch as f64 / (world * accumulation) as f64;
                write!(
                    f,
                    "--global-batch {global_batch} does not split evenly over {world} rank(s) x \
                     {accumulation} accumulation step(s): {per:.2} images per GPU."
                )?;
                if valid_worlds.is_empty() {
                    write!(f, "\nfix: change --accumulation, or set the per-GPU size with --batch.")
                } else {
                    write!(
                        f,
                        "\nfix: --gpus (or --workers) one of {}, change --accumulation, or set the per-GPU size \
                         with --batch.",
                        list(valid_worlds)
                    )
                }
            }
            Problem::QueueIndivisible {
                queue,
                batch,
                world,
                micro,
                keys_per_step,
                below,
                above,
                batches,
            } => {
                if *micro > 1 {
                    write!(
                        f,
                        "--queue-size {queue} is not a multiple of the keys enqueued per optimiser step: \
                         {VIEWS} views x {batch} per GPU x {world} rank(s) x {micro} accumulation = \
                         {keys_per_step}. With effective-batch negatives (the default with accumulation) \
                         each rank writes the {} keys of its whole step into its queue shard at once, \
                         without wrapping, so the queue must hold a whole number of steps of keys.\n\
                         fix: --no-effective-negatives (micro-batch negatives, enqueue per micro-batch), \
                         or --queue-size ",
                        VIEWS * batch * micro
                    )?;
                } else {
                    write!(
                        f,
                        "--queue-size {queue} is not a multiple of the keys enqueued per step: {VIEWS} views x \
                         {batch} per GPU x {world} rank(s) = {keys_per_step}. Each rank owns an equal shard of \
                         the queue and writes its {} keys per micro-batch into it without wrapping, so the queue \
                         must hold a whole number of steps of keys.\nfix: --queue-size ",
                        VIEWS * batch
                    )?;
                }
                match below {
                    Some(b) => write!(f, "{b} or {above}")?,
                    None => write!(f, "{above}")?,
                }
                write!(f, " (nearest valid sizes)")?;
                if batches.is_empty() {
                    write!(f, "; no per-GPU batch works with {queue} on {world} rank(s).")?;
                } else {
                    write!(f, ", or a per-GPU batch that works with {queue}: --batch {}.", list(batches))?;
                }
                write!(
                    f,
                    "\nnote: the seeds' rule `queue_size % batch_size == 0` ({queue} % {batch} = {}) is weaker \
                     than what the fused enqueue needs.",
                    queue % batch.max(&1)
                )
            }
            Problem::ImageSize { size, below, above } => {
                write!(
                    f,
                    "--image-size {size} is not a multiple of {SIZE_MULTIPLE} of at least {SIZE_MULTIPLE}: \
                     ResNet-50 halves the resolution five times.\nfix: --image-size "
                )?;
                match below {
                    Some(b) => write!(f, "{b} or {above}."),
                    None => write!(f, "{above}."),
                }
            }
            Problem::ShuffleGroups { batch, groups, valid } => {
                write!(
                    f,
                    "--shuffle-groups {groups} does not split the per-GPU batch of {batch} into equal \
                     groups of at least 2 images (the key-side shuffle BN takes statistics per group).\nfix: "
                )?;
                if valid.is_empty() {
                    write!(f, "--bn-mode local, or a per-GPU batch of at least 4.")
                } else {
                    write!(f, "--shuffle-groups one of {}, or --bn-mode local.", list(valid))
                }
            }
            Problem::BnTooFewImages { mode, images } => write!(
                f,
                "--bn-mode {} takes batch statistics over {images} image(s): the heads' BatchNorm1d over \
                 a single image has zero variance.\nfix: a per-GPU batch of at least 2{}.",
                bn_name(*mode),
                if *mode == BnMode::Shuffle { " per shuffle group (or fewer --shuffle-groups)" } else { "" }
            ),
            Problem::EmptyDataset => write!(
                f,
                "the dataset has no images.\nfix: point --data at a folder of tiles, or use --data synthetic."
            ),
            Problem::BatchLargerThanShard { batch, world, dataset } => {
                let shard = dataset / world.max(&1);
                write!(
                    f,
                    "the per-GPU batch of {batch} is larger than a rank's share of the dataset: {dataset} \
                     images / {world} rank(s) = {shard} each, so no full batch can be drawn (incomplete \
                     batches are dropped).\nfix: "
                )?;
                if shard > 0 {
                    write!(f, "--batch {shard} or smaller, fewer ranks, or more images.")
                } else {
                    write!(f, "fewer ranks (at most {dataset}), or more images.")
                }
            }
            Problem::TooFewMicroBatches { dataset, batch, world, micro, accumulation } => {
                write!(
                    f,
                    "{dataset} images make {micro} micro-batch(es) per epoch ({dataset} / ({batch} per GPU x \
                     {world} rank(s))), fewer than --accumulation {accumulation}: no optimiser step would \
                     complete in an epoch.\nfix: --accumulation {} or lower, or a smaller --batch.",
                    (*micro).max(1)
                )
            }
            Problem::OutOfRange { flag, value, need } => write!(f, "--{flag} {value}: {need}"),
        }
    }
}

fn list(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

pub fn bn_name(m: BnMode) -> &'static str {
    match m {
        BnMode::Sync => "sync",
        BnMode::Local => "local",
        BnMode::Shuffle => "shuffle",
    }
}

/// Micro-batches whose keys one enqueue writes: the whole optimiser step's with effective-batch
/// negatives and accumulation (the step's keys are negatives of all its micro-batches, so they
/// enter the queue together at its end), else one.
pub fn micro_per_enqueue(cfg: &TrainConfig) -> usize {
    if cfg.effective_negatives && cfg.accumulation > 1 {
        cfg.accumulation
    } else {
        1
    }
}

/// Keys the whole group enqueues per micro-batch: 2 views x per-rank batch x world.
pub fn keys_per_step(batch: usize, world: usize) -> usize {
    VIEWS * batch * world
}

/// Does a queue of `queue` keys (0 = none) take whole steps of keys?
pub fn queue_fits(queue: usize, batch: usize, world: usize) -> bool {
    let k = keys_per_step(batch, world);
    queue == 0 || (k > 0 && queue.is_multiple_of(k))
}

/// The valid queue sizes nearest to `queue`: the multiple of `keys_per_step` at or below it
/// (None if that is 0) and the one above it.
pub fn nearest_queues(queue: usize, keys_per_step: usize) -> (Option<usize>, usize) {
    let k = keys_per_step.max(1);
    let below = queue / k * k;
    let above = if below == queue { queue + k } else { below + k };
    ((below > 0).then_some(below), above)
}

/// Up to `count` per-rank batches that a queue of `queue` keys accepts on `world` ranks: the
/// nearest to `near` by ratio (64 and 128 are equally near 96 in the sense that matters for
/// memory and lr), returned ascending.
pub fn batches_for_queue(queue: usize, world: usize, near: usize, count: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut ok: Vec<usize> = (1..=MAX_BATCH.min(queue / (VIEWS * world)))
        .filter(|&n| queue.is_multiple_of(VIEWS * n * world))
        .collect();
    let dist = |n: usize| (n as f64 / near.max(1) as f64).ln().abs();
    ok.sort_by(|&a, &b| dist(a).total_cmp(&dist(b)).then(a.cmp(&b)));
    ok.truncate(count);
    ok.sort_unstable();
    ok
}

/// World sizes up to `MAX_SUGGESTED_WORLD` over which `global` splits evenly with `accumulation`.
pub fn worlds_for_global(global: usize, accumulation: usize) -> Vec<usize> {
    (1..=MAX_SUGGESTED_WORLD).filter(|&w| global.is_multiple_of(w * accumulation.max(1))).collect()
}

/// The per-rank micro-batch: `batch`, or `global_batch / (world * accumulation)` when a global
/// batch is set. Needs world > 0 and accumulation > 0 (checked separately).
pub fn derive_batch(cfg: &TrainConfig, world: usize) -> Result<usize, Problem> {
    let acc = cfg.accumulation;
    if cfg.global_batch == 0 {
        return if cfg.batch == 0 { Err(Problem::ZeroBatch) } else { Ok(cfg.batch) };
    }
    let split = world * acc;
    let derived = cfg.global_batch.is_multiple_of(split).then(|| cfg.global_batch / split).filter(|&b| b > 0);
    if cfg.batch != 0 && Some(cfg.batch) != derived {
        return Err(Problem::BatchConflict { batch: cfg.batch, global_batch: cfg.global_batch, derived });
    }
    derived.ok_or(Problem::GlobalBatchIndivisible {
        global_batch: cfg.global_batch,
        world,
        accumulation: acc,
        valid_worlds: worlds_for_global(cfg.global_batch, acc),
    })
}

/// Every rule that does not depend on the dataset. Returns the per-rank batch when it could be
/// derived, and the problems found.
pub fn config_problems(cfg: &TrainConfig, world: usize) -> (Option<usize>, Vec<Problem>) {
    let mut p = Vec::new();
    if world == 0 {
        p.push(Problem::ZeroWorld);
    }
    if cfg.accumulation == 0 {
        p.push(Problem::ZeroAccumulation);
    }
    let batch = if world > 0 && cfg.accumulation > 0 {
        derive_batch(cfg, world).map_err(|e| p.push(e)).ok()
    } else {
        None
    };
    if let Some(n) = batch {
        // One enqueue writes `micro` micro-batches of keys: the rule holds for that many rows.
        let micro = micro_per_enqueue(cfg);
        if !queue_fits(cfg.queue_size, n * micro, world) {
            let kps = keys_per_step(n * micro, world);
            let (below, above) = nearest_queues(cfg.queue_size, kps);
            p.push(Problem::QueueIndivisible {
                queue: cfg.queue_size,
                batch: n,
                world,
                micro,
                keys_per_step: kps,
                below,
                above,
                batches: batches_for_queue(cfg.queue_size, world * micro, n, 6),
            });
        }
        bn_problems(cfg, n, world, &mut p);
    }
    if cfg.image_size < SIZE_MULTIPLE || !cfg.image_size.is_multiple_of(SIZE_MULTIPLE) {
        let below = cfg.image_size / SIZE_MULTIPLE * SIZE_MULTIPLE;
        p.push(Problem::ImageSize {
            size: cfg.image_size,
            below: (below > 0).then_some(below),
            above: (below + SIZE_MULTIPLE).max(SIZE_MULTIPLE),
        });
    }
    scalar_problems(cfg, &mut p);
    aug_problems(&cfg.aug, &mut p);
    (batch, p)
}

fn bn_problems(cfg: &TrainConfig, n: usize, world: usize, p: &mut Vec<Problem>) {
    match cfg.bn_mode {
        BnMode::Sync if n * world < 2 => {
            p.push(Problem::BnTooFewImages { mode: BnMode::Sync, images: n * world })
        }
        BnMode::Local if n < 2 => p.push(Problem::BnTooFewImages { mode: BnMode::Local, images: n }),
        BnMode::Shuffle => {
            let g = cfg.shuffle_groups;
            if n < 2 {
                p.push(Problem::BnTooFewImages { mode: BnMode::Shuffle, images: n });
            } else if g == 0 || !n.is_multiple_of(g) || n / g < 2 {
                let valid = (1..=n / 2).filter(|&g| n.is_multiple_of(g)).collect();
                p.push(Problem::ShuffleGroups { batch: n, groups: g, valid });
            }
        }
        _ => {}
    }
}

fn range(p: &mut Vec<Problem>, flag: &'static str, value: impl fmt::Display, ok: bool, need: &str) {
    if !ok {
        p.push(Problem::OutOfRange { flag, value: value.to_string(), need: need.to_string() });
    }
}

fn scalar_problems(c: &TrainConfig, p: &mut Vec<Problem>) {
    let w = c.width;
    range(
        p,
        "width",
        w,
        w.is_finite() && w > 0.0 && w <= 4.0,
        "must be in (0, 4]: 1.0 is torchvision's ResNet-50, 0.125 the tiny preset.",
    );
    range(p, "proj-hidden", c.proj_hidden, c.proj_hidden > 0, "must be at least 1 (MoCo v3: 4096).");
    range(p, "dim", c.dim, c.dim > 0, "must be at least 1 (MoCo v3: 256).");
    range(p, "pred-hidden", c.pred_hidden, c.pred_hidden > 0, "must be at least 1 (MoCo v3: 4096).");
    let t = c.temperature;
    range(
        p,
        "temperature",
        t,
        t.is_finite() && t > 0.0,
        "must be > 0 (MoCo v2 with a queue: 0.2; v3 without: 1.0).",
    );
    let m = c.momentum;
    range(
        p,
        "momentum",
        m,
        (0.0..=1.0).contains(&m),
        "the EMA coefficient m0 must be in [0, 1] (MoCo v3: 0.99, v2: 0.999).",
    );
    let lr = c.base_lr;
    range(
        p,
        "base-lr",
        lr,
        lr.is_finite() && lr > 0.0,
        "must be > 0: it is the lr per 256 images (LARS 0.6, SGD 0.03, AdamW 1.5e-4).",
    );
    let wd = c.weight_decay;
    range(p, "weight-decay", wd, wd.is_finite() && wd >= 0.0, "must be >= 0.");
    range(p, "epochs", c.epochs, c.epochs > 0, "must be at least 1.");
    let wu = c.warmup_epochs;
    let wu_ok = wu.is_finite() && wu >= 0.0 && (c.epochs == 0 || wu <= c.epochs as f32);
    let need = format!("the warmup must be between 0 and --epochs ({}).", c.epochs);
    range(p, "warmup-epochs", wu, wu_ok, &need);
}

fn prob(p: &mut Vec<Problem>, flag: &'static str, v: f32) {
    range(p, flag, v, (0.0..=1.0).contains(&v), "a probability must be in [0, 1].");
}

fn aug_problems(a: &AugConfig, p: &mut Vec<Problem>) {
    let cm = a.crop_min;
    range(
        p,
        "crop-min",
        cm,
        cm > 0.0 && cm <= 1.0,
        "the smallest crop area fraction must be in (0, 1] (0.08 or 0.2 in the recipes).",
    );
    let j = a.jitter;
    let j_ok = j.iter().all(|v| v.is_finite() && *v >= 0.0) && j[3] <= 0.5;
    range(
        p,
        "jitter",
        format!("{j:?}"),
        j_ok,
        "brightness, contrast, saturation >= 0 and hue in [0, 0.5] (BYOL: 0.4,0.4,0.2,0.1).",
    );
    prob(p, "jitter-p", a.jitter_p);
    prob(p, "grayscale-p", a.grayscale_p);
    for v in a.blur_p {
        prob(p, "blur-p", v);
    }
    for v in a.solarize_p {
        prob(p, "solarize-p", v);
    }
    prob(p, "hflip-p", a.hflip_p);
    prob(p, "vflip-p", a.vflip_p);
    let s = a.blur_sigma;
    range(
        p,
        "blur-sigma",
        format!("{s:?}"),
        s[0] > 0.0 && s[0] <= s[1] && s[1].is_finite(),
        "needs 0 < low <= high (BYOL: 0.1,2.0).",
    );
    let ns = a.noise_std;
    range(p, "noise-std", ns, ns.is_finite() && ns >= 0.0, "must be >= 0 (0 = no noise).");
}

/// Rules that need the dataset size, for a per-rank batch `batch` already derived.
pub fn dataset_problems(cfg: &TrainConfig, batch: usize, world: usize, dataset: usize) -> Vec<Problem> {
    let mut p = Vec::new();
    if dataset == 0 {
        p.push(Problem::EmptyDataset);
        return p;
    }
    if world == 0 || batch == 0 {
        return p;
    }
    if batch > dataset / world {
        p.push(Problem::BatchLargerThanShard { batch, world, dataset });
        return p;
    }
    let micro = dataset / (batch * world);
    if cfg.accumulation > 0 && micro < cfg.accumulation {
        p.push(Problem::TooFewMicroBatches { dataset, batch, world, micro, accumulation: cfg.accumulation });
    }
    p
}

/// Legal but probably unwanted settings, each with a suggestion.
pub fn warnings(cfg: &TrainConfig, batch: usize, world: usize, dataset: usize) -> Vec<String> {
    let mut w = Vec::new();
    let k = cfg.queue_size;
    let kps = keys_per_step(batch * micro_per_enqueue(cfg), world);
    if k > 0 && dataset > 0 && k > dataset {
        let suggest = dataset / kps.max(1) * kps;
        let mut s = format!(
            "the queue ({k} keys) is larger than the dataset ({dataset} images): it holds every image about \
             {:.0} times, so older keys of a query's own image sit among its negatives (moco#24). ",
            k as f64 / dataset as f64
        );
        if cfg.mask_own {
            s.push_str("--mask-own is on, so they are masked out; ");
        } else {
            s.push_str("--mask-own is OFF, so they count as negatives: turn it on, or ");
        }
        if suggest > 0 {
            s.push_str(&format!("a queue no larger than the dataset would be --queue-size {suggest}."));
        } else {
            s.push_str(&format!(
                "one step's keys ({kps}) already exceed the dataset; consider --queue-size 0."
            ));
        }
        w.push(s);
    }
    if k > 0 && cfg.bn_mode != BnMode::Shuffle {
        w.push(format!(
            "--bn-mode {} with a queue: the key encoder's batch statistics let the network tell this batch's \
             positive key from older queue keys (moco#46); --bn-mode shuffle avoids it.",
            bn_name(cfg.bn_mode)
        ));
    }
    if cfg.bn_mode == BnMode::Shuffle && cfg.shuffle_groups == 1 {
        w.push(
            "--shuffle-groups 1 computes the key-side statistics over the whole batch, the same as the \
                query's: the shuffle has no effect; use 2 or more."
                .to_string(),
        );
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_queue_sizes_bracket_the_request() {
        assert_eq!(nearest_queues(65536, 384), (Some(65280), 65664));
        assert_eq!(nearest_queues(76800, 384), (Some(76800), 77184));
        assert_eq!(nearest_queues(100, 384), (None, 384));
    }

    #[test]
    fn batches_for_a_power_of_two_queue_are_powers_of_two() {
        // Nearest to 96 by ratio: 128 (x1.33), 64 (x1.5), 256 (x2.67), 32 (x3).
        assert_eq!(batches_for_queue(65536, 2, 96, 4), vec![32, 64, 128, 256]);
        assert!(batches_for_queue(65537, 2, 96, 4).is_empty());
        for n in batches_for_queue(76800, 2, 96, 6) {
            assert!(queue_fits(76800, n, 2), "{n}");
        }
    }

    #[test]
    fn stricter_rule_than_the_seeds() {
        // 65536 % 96 != 0 (seeds' rule fails too); 64000 % 80 == 0 but what about 3 GPUs?
        assert!(!queue_fits(65536, 96, 2));
        assert!(64000 % 80 == 0 && !queue_fits(64000, 80, 3));
    }

    #[test]
    fn effective_negatives_need_the_whole_step_of_keys_to_divide_the_queue() {
        // Every seed preset keeps its queue valid with the step's 2 x n x W x 4 keys per write.
        for name in ["low-vram", "optimized", "conservative", "aggressive"] {
            let c = crate::presets::get(name).unwrap();
            assert!(c.effective_negatives && c.accumulation == 4, "{name}");
            assert!(config_problems(&c, 2).1.is_empty(), "{name}: {:?}", config_problems(&c, 2).1);
        }
        // 2 x 32 x 1 = 64 divides 1088, but 2 x 32 x 1 x 4 = 256 does not.
        let mut c = crate::presets::get("tiny").unwrap();
        (c.queue_size, c.accumulation) = (1088, 4);
        let problems = config_problems(&c, 1).1;
        let text = problems.iter().map(|p| p.to_string()).collect::<String>();
        assert!(
            matches!(problems.as_slice(), [Problem::QueueIndivisible { micro: 4, keys_per_step: 256, .. }]),
            "{text}"
        );
        assert!(text.contains("--no-effective-negatives") && text.contains("1024 or 1280"), "{text}");
        for n in batches_for_queue(1088, 4, 32, 6) {
            assert!(queue_fits(1088, n * 4, 1), "suggested --batch {n}");
        }
        c.effective_negatives = false;
        assert!(config_problems(&c, 1).1.is_empty(), "micro-batch enqueues of 64 keys fit 1088");
    }

    #[test]
    fn global_batch_worlds() {
        assert_eq!(worlds_for_global(4096, 1), vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(worlds_for_global(96, 4), vec![1, 2, 3, 4, 6, 8, 12, 24]);
    }
}
