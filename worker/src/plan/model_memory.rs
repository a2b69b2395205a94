//! Memory that scales with the parameter count, not the batch: weights, their fp16 copies,
//! gradients, optimiser state, the momentum encoder, BN running statistics. Counted from the
//! same `Topology` the model lays its flat buffers out from, in the precision `moco/state.rs`
//! allocates them (fp32 masters via `zeros_master`/`from_host`, compute copies via `zeros`,
//! which is fp16 under AMP).

use super::Component;
use crate::model::topology::{Part, Topology};
use moco_proto::config::{Optimizer, TrainConfig};

/// Parameter counts of the query and momentum encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub backbone: u64,
    pub projector: u64,
    pub predictor: u64,
    /// Trainable parameters: backbone + projector + predictor (the query encoder).
    pub query: u64,
    /// The momentum encoder's copy: backbone + projector.
    pub key: u64,
    /// BN running mean + variance entries of one encoder's buffer.
    pub bn_stats: u64,
}

impl ParamCounts {
    pub fn new(t: &Topology) -> ParamCounts {
        ParamCounts {
            backbone: t.part_len(Part::Backbone) as u64,
            projector: t.part_len(Part::Projector) as u64,
            predictor: t.part_len(Part::Predictor) as u64,
            query: t.param_len() as u64,
            key: t.key_len() as u64,
            bn_stats: t.stats_len as u64,
        }
    }
}

fn millions(x: u64) -> String {
    format!("{:.1} M", x as f64 / 1e6)
}

/// Optimiser moment buffers per parameter: SGD/LARS one momentum, AdamW two moments.
pub fn optimizer_buffers(o: Optimizer) -> u64 {
    match o {
        Optimizer::Sgd | Optimizer::Lars => 1,
        Optimizer::Adamw => 2,
    }
}

pub fn components(p: &ParamCounts, cfg: &TrainConfig) -> Vec<Component> {
    let q = p.query;
    let k = p.key;
    let mut v = vec![Component::shapes(
        "query encoder weights, fp32 master",
        4 * q,
        format!("{} params x 4 B (backbone + projector + predictor)", millions(q)),
    )];
    if cfg.amp {
        v.push(Component::shapes(
            "query encoder weights, fp16 copy",
            2 * q,
            "AMP compute copy, x 2 B".into(),
        ));
    }
    v.push(Component::shapes(
        "gradients, fp32 accumulation",
        4 * q,
        "parameter gradients accumulate in place (backend.rs)".into(),
    ));
    let nb = optimizer_buffers(cfg.optimizer);
    let opt = moco_proto::resolved::optimizer_name(cfg);
    let what = if nb == 1 { "1 fp32 momentum buffer" } else { "2 fp32 moment buffers" };
    v.push(Component::shapes(format!("optimiser state ({opt})"), 4 * nb * q, what.into()));
    v.push(Component::shapes(
        "momentum encoder, fp32 master (EMA)",
        4 * k,
        format!("{} params: backbone + projector", millions(k)),
    ));
    if cfg.amp {
        v.push(Component::shapes("momentum encoder, fp16 copy", 2 * k, "AMP compute copy, x 2 B".into()));
    }
    v.push(Component::shapes(
        "BN running statistics",
        2 * 4 * p.bn_stats,
        "query + momentum encoder, fp32 mean and variance".into(),
    ));
    v
}
