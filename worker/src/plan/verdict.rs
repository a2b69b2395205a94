//! The verdict against a budget: fits or not, by how much, the largest per-GPU batch that
//! fits, and the queue sizes that suit it.

use super::MemoryPlan;
use moco_proto::config::TrainConfig;
use moco_proto::validate::{self, MAX_BATCH};

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub budget: u64,
    pub total: u64,
    pub fits: bool,
    /// Largest per-GPU batch whose plan fits the budget (None: not even a batch of 1).
    pub largest_batch: Option<usize>,
    /// Largest batch up to `largest_batch` that the rest of the config also accepts (queue
    /// divisibility, shuffle-BN groups), so it can be used as is.
    pub largest_valid_batch: Option<usize>,
    /// Valid queue sizes nearest the configured one for `largest_batch` (below, above).
    pub queues_for_largest: Option<(Option<usize>, usize)>,
}

impl Verdict {
    pub fn new(cfg: &TrainConfig, plan: &MemoryPlan, budget: u64) -> Verdict {
        let world = plan.world;
        let fits_at = |n: usize| MemoryPlan::for_batch(cfg, n, world).total <= budget;
        let largest = largest_fitting(fits_at);
        let largest_valid = largest.and_then(|max| (1..=max).rev().find(|&n| accepts(cfg, n, world)));
        let queues = match largest {
            Some(n) if cfg.queue_size > 0 => {
                let micro = validate::micro_per_enqueue(cfg);
                Some(validate::nearest_queues(cfg.queue_size, validate::keys_per_step(n * micro, world)))
            }
            _ => None,
        };
        Verdict {
            budget,
            total: plan.total,
            fits: plan.total <= budget,
            largest_batch: largest,
            largest_valid_batch: largest_valid,
            queues_for_largest: queues,
        }
    }

    /// Bytes to spare (positive) or missing (negative).
    pub fn margin(&self) -> i64 {
        self.budget as i64 - self.total as i64
    }
}

/// Largest n in 1..=MAX_BATCH with `fits(n)`, assuming memory grows with the batch.
fn largest_fitting(fits: impl Fn(usize) -> bool) -> Option<usize> {
    if !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, MAX_BATCH + 1); // fits(lo), !fits(hi) or out of range
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// Does the config accept a per-GPU batch of `n` on `world` ranks (ignoring the dataset)?
fn accepts(cfg: &TrainConfig, n: usize, world: usize) -> bool {
    let c = TrainConfig { batch: n, global_batch: 0, ..cfg.clone() };
    validate::config_problems(&c, world).1.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::budget::GIB;
    use moco_proto::presets;

    #[test]
    fn largest_batch_is_the_boundary() {
        let cfg = presets::get("optimized").unwrap();
        let plan = MemoryPlan::for_batch(&cfg, 96, 2);
        let v = Verdict::new(&cfg, &plan, 8 * GIB);
        let n = v.largest_batch.expect("something fits 8 GiB");
        assert!(MemoryPlan::for_batch(&cfg, n, 2).total <= 8 * GIB);
        assert!(MemoryPlan::for_batch(&cfg, n + 1, 2).total > 8 * GIB);
        let valid = v.largest_valid_batch.unwrap();
        assert!(
            valid <= n
                && validate::queue_fits(cfg.queue_size, valid, 2)
                && valid.is_multiple_of(cfg.shuffle_groups)
        );
        let (below, above) = v.queues_for_largest.unwrap();
        // The preset enqueues the whole step's keys (effective-batch negatives, accumulation 4).
        let m = n * validate::micro_per_enqueue(&cfg);
        assert!(below.is_none_or(|b| validate::queue_fits(b, m, 2)) && validate::queue_fits(above, m, 2));
    }

    #[test]
    fn a_tiny_budget_fits_nothing() {
        let cfg = presets::get("low-vram").unwrap();
        let plan = MemoryPlan::for_batch(&cfg, 64, 2);
        let v = Verdict::new(&cfg, &plan, GIB / 2);
        assert!(!v.fits && v.margin() < 0);
        assert_eq!(v.largest_batch, None);
    }
}
