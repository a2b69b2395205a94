//! The memory plan: what one rank holds on the GPU during a training step, computed from the
//! real ResNet-50 + heads shapes (`model::topology`) and the precisions the model code
//! allocates, not from constants (DESIGN.md contract 7).
//!
//! - `model_memory`: parameter-sized buffers (weights, fp16 copies, gradients, optimiser
//!   state, momentum encoder, BN statistics).
//! - `activations`: saved activations and the transient peak, phase by phase.
//! - `allowances`: what only a GPU can measure (CUDA context, cuDNN workspace, NCCL), labelled.
//! - `verdict`: fits or not, the largest batch that fits, the queue sizes that suit it.
//! - `seeds`: the seeds' hand-guessed figures, compared plainly with the plan.
//! - `budget`: parsing `--vram 8GiB` and printing sizes.
//! - `report`: the text `launcher plan` prints.

pub mod activations;
pub mod allowances;
pub mod budget;
pub mod model_memory;
pub mod report;
pub mod seeds;
pub mod verdict;

pub use activations::Activations;
pub use budget::parse_vram;
pub use model_memory::ParamCounts;
pub use report::render;
pub use verdict::Verdict;

use crate::model::{ModelDims, Topology};
use activations::ActInput;
use moco_proto::config::{QueuePrecision, TrainConfig};
use moco_proto::resolved::ResolvedConfig;

/// Input channels the plan assumes: RGB tiles. Extra bands change only the input images and
/// the stem conv's weights.
pub const IN_CHANNELS: usize = 3;

/// Whether a component is counted from shapes or is an allowance a GPU must calibrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Shapes,
    Allowance,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub bytes: u64,
    /// How the figure was obtained, in a few words.
    pub how: String,
    pub source: Source,
}

impl Component {
    pub fn shapes(name: impl Into<String>, bytes: u64, how: String) -> Component {
        Component { name: name.into(), bytes, how, source: Source::Shapes }
    }
    fn allowance(name: &str, bytes: u64) -> Component {
        Component { name: name.into(), bytes, how: allowances::LABEL.into(), source: Source::Allowance }
    }
}

/// Memory of one rank for one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Per-rank micro-batch planned for.
    pub batch: usize,
    pub world: usize,
    pub params: ParamCounts,
    pub activations: Activations,
    pub components: Vec<Component>,
    /// Sum of the components: the predicted peak of one rank.
    pub total: u64,
}

impl MemoryPlan {
    /// The plan of a validated config: its per-rank batch on its world size.
    pub fn compute(r: &ResolvedConfig) -> MemoryPlan {
        Self::for_batch(&r.cfg, r.batching.batch, r.batching.world)
    }

    /// The plan of `cfg` with a per-rank batch of `batch` on `world` ranks (the largest-batch
    /// search varies `batch` without re-validating the rest).
    pub fn for_batch(cfg: &TrainConfig, batch: usize, world: usize) -> MemoryPlan {
        let topo = Topology::new(ModelDims::from_config(cfg, IN_CHANNELS));
        let params = ParamCounts::new(&topo);
        let world = world.max(1);
        let queue_rows = cfg.queue_size / world;
        let act_bytes = if cfg.amp { 2 } else { 4 };
        let acts = activations::activations(
            &topo,
            &ActInput {
                n: batch,
                image_size: cfg.image_size,
                world,
                queue_rows,
                act_bytes,
                recompute: cfg.recompute,
                step_micro: moco_proto::validate::micro_per_enqueue(cfg),
            },
        );
        let mut components = model_memory::components(&params, cfg);
        if queue_rows > 0 {
            // moco/queue.rs: keys, the image index of each row and the write pointer, all on
            // the device, the keys in the config's queue precision.
            let prec = cfg.queue_precision;
            let row = crate::moco::queue::bytes_per_row(cfg.dim, prec);
            components.push(Component::shapes(
                "queue shard",
                queue_rows as u64 * row,
                format!("{queue_rows} rows x ({} {} keys + fp32 image index)", cfg.dim, prec.name()),
            ));
            if prec == QueuePrecision::Fp16 && !cfg.amp {
                // Without AMP the queries are fp32, so the GEMMs against the queue (logits,
                // dq) stage an fp32 copy of the fp16 shard (cuda/backend/gemm_ops.rs); under
                // AMP they read the fp16 shard directly.
                components.push(Component::shapes(
                    "queue fp32 staging",
                    queue_rows as u64 * cfg.dim as u64 * 4,
                    format!(
                        "{queue_rows} x {} fp32 keys: the fp16 queue converted for each GEMM (no AMP)",
                        cfg.dim
                    ),
                ));
            }
            // moco/guard.rs: the rows the step's enqueues overwrite (2 x batch x accumulation),
            // saved by the enqueue kernel for a skipped step, the scratch a rollback uses (one
            // enqueue's rows) and the device pointers (the shard's, one saved per enqueue).
            let micro = moco_proto::validate::micro_per_enqueue(cfg) as u64;
            let step_rows = 2 * batch as u64 * cfg.accumulation.max(1) as u64;
            let enqueues = step_rows / (2 * batch.max(1) as u64 * micro).max(1);
            let saved = (step_rows + 2 * batch as u64 * micro) * row + 4 * (enqueues + 2);
            components.push(Component::shapes(
                "queue rollback rows",
                saved,
                format!(
                    "{step_rows} + {} overwritten rows kept for a skipped step",
                    2 * batch as u64 * micro
                ),
            ));
        }
        let step_micro = moco_proto::validate::micro_per_enqueue(cfg);
        if step_micro > 1 {
            // moco/step_keys.rs: the step's keys are computed first and kept; its augmented
            // inputs wait in host memory (re-sent to the GPU for the query forwards), not here.
            let host = 2
                * step_micro as u64
                * batch as u64
                * (cfg.image_size * cfg.image_size * IN_CHANNELS) as u64
                * 4;
            components.push(Component::shapes(
                "step keys (effective-batch negatives)",
                acts.held,
                format!(
                    "2 views x {step_micro} micro-batches x {batch} keys, own + gathered from {world} rank(s); \
                     the step's inputs wait in host RAM ({} MiB)",
                    host.div_ceil(1 << 20)
                ),
            ));
        }
        let saved = 2 * acts.saved_per_view;
        let precision = if cfg.amp { "fp16" } else { "fp32" };
        let kept = if cfg.recompute {
            "recompute: stem, block boundaries, heads"
        } else {
            "every layer the backward reads"
        };
        components.push(Component::shapes(
            "saved activations, 2 query views",
            saved,
            format!("{kept}; {precision}, batch {batch}"),
        ));
        components.push(Component::shapes(
            "transient peak above them",
            acts.peak.saturating_sub(saved + acts.held),
            format!("at the {}", acts.peak_phase),
        ));
        components.push(Component::allowance("cuDNN workspace", allowances::CUDNN_WORKSPACE));
        components.push(Component::allowance("CUDA context + cuBLAS/cuDNN", allowances::CUDA_CONTEXT));
        if world > 1 {
            components.push(Component::allowance("NCCL buffers", allowances::NCCL_BUFFERS));
        }
        let total = components.iter().map(|c| c.bytes).sum();
        MemoryPlan { batch, world, params, activations: acts, components, total }
    }

    /// Bytes of the components named `name` (tests, seeds comparison).
    pub fn bytes_of(&self, prefix: &str) -> u64 {
        self.components.iter().filter(|c| c.name.starts_with(prefix)).map(|c| c.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moco_proto::presets;

    #[test]
    fn backbone_and_heads_counts() {
        let cfg = presets::get("low-vram").unwrap();
        let p = MemoryPlan::for_batch(&cfg, 64, 2);
        // torchvision resnet50 without fc.
        assert_eq!(p.params.backbone, 23_508_032);
        // MOCO.md: projector 2048-4096-256 (last BN affine-free), predictor 256-4096-256.
        assert_eq!(p.params.projector, 2048 * 4096 + 2 * 4096 + 4096 * 256);
        assert_eq!(p.params.predictor, 256 * 4096 + 2 * 4096 + 4096 * 256);
        assert_eq!(p.params.key, p.params.backbone + p.params.projector);
    }

    #[test]
    fn parameter_buffers_follow_precision_and_optimizer() {
        let mut cfg = presets::get("low-vram").unwrap();
        let q = MemoryPlan::for_batch(&cfg, 64, 2).params.query;
        let amp_adamw = MemoryPlan::for_batch(&cfg, 64, 2);
        assert_eq!(amp_adamw.bytes_of("optimiser"), 8 * q);
        assert_eq!(amp_adamw.bytes_of("query encoder weights"), 6 * q);
        cfg.amp = false;
        cfg.optimizer = moco_proto::config::Optimizer::Lars;
        let fp32_lars = MemoryPlan::for_batch(&cfg, 64, 2);
        assert_eq!(fp32_lars.bytes_of("optimiser"), 4 * q);
        assert_eq!(fp32_lars.bytes_of("query encoder weights"), 4 * q);
    }

    #[test]
    fn effective_negatives_hold_the_steps_keys_and_count_them_once() {
        let on = presets::get("optimized").unwrap();
        let off = TrainConfig { effective_negatives: false, ..on.clone() };
        let (p_on, p_off) = (MemoryPlan::for_batch(&on, 96, 2), MemoryPlan::for_batch(&off, 96, 2));
        // fp16 keys: 2 views x 4 micro-batches x 96 x 256, this rank's and both ranks' gathered.
        let held = 2 * 4 * 96 * 256 * (1 + 2) * 2;
        assert_eq!(p_on.bytes_of("step keys"), held);
        assert_eq!(p_off.bytes_of("step keys"), 0);
        // The switch adds at most the held keys: its key forwards run before any query tape
        // exists, so the key-forward phase (the peak without it, here) is lower with it.
        assert!(p_on.total <= p_off.total + held, "{} vs {}", p_on.total, p_off.total);
        let key_phase =
            |p: &MemoryPlan| p.activations.phases.iter().find(|(n, _)| n.starts_with("key")).unwrap().1;
        assert!(key_phase(&p_on) < key_phase(&p_off));
        let c = p_on.components.iter().find(|c| c.name.starts_with("step keys")).unwrap();
        assert!(c.how.contains("host RAM (441 MiB)"), "{}", c.how);
    }

    #[test]
    fn the_queue_lines_are_the_buffers_the_shard_and_the_skip_guard_hold() {
        use crate::moco::queue::QueueShard;
        use moco_kernels::{cpu::Cpu, Backend};
        for (prec, key_bytes) in [(QueuePrecision::Fp32, 4u64), (QueuePrecision::Fp16, 2)] {
            let cfg = TrainConfig {
                accumulation: 2,
                effective_negatives: false,
                amp: true,
                queue_precision: prec,
                ..presets::get("tiny").unwrap()
            };
            let (be, batch, world) = (Cpu { amp: false }, 8, 2);
            let plan = MemoryPlan::for_batch(&cfg, batch, world);
            // The shard as the step makes it: keys in the queue's precision, indices and the
            // pointer 4 bytes each value.
            let q = QueueShard::init(&be, cfg.queue_size, cfg.dim, 0, world, 1, prec).unwrap();
            let shard = key_bytes * Cpu::buf_len(&q.keys) as u64 + 4 * Cpu::buf_len(&q.idx) as u64;
            assert_eq!(plan.bytes_of("queue shard"), shard, "{prec:?}");
            // Two enqueues of 2 x 8 rows per step journaled, plus one enqueue's scratch, plus
            // the shard's pointer and each enqueue's saved pointer.
            let rows = 2 * 2 * batch as u64 + 2 * batch as u64;
            let want = rows * (key_bytes * cfg.dim as u64 + 4) + 4 * (2 + 2);
            assert_eq!(plan.bytes_of("queue rollback"), want, "{prec:?}");
            assert_eq!(plan.bytes_of("queue fp32 staging"), 0, "AMP reads the fp16 shard directly");
        }
    }

    #[test]
    fn an_fp16_queue_halves_the_shards_keys_and_without_amp_plans_the_fp32_staging() {
        let fp32 = presets::get("optimized").unwrap();
        let fp16 = TrainConfig { queue_precision: QueuePrecision::Fp16, ..fp32.clone() };
        let (a, b) = (MemoryPlan::for_batch(&fp32, 96, 2), MemoryPlan::for_batch(&fp16, 96, 2));
        let rows = (fp32.queue_size / 2) as u64;
        assert_eq!(a.bytes_of("queue shard") - b.bytes_of("queue shard"), rows * fp32.dim as u64 * 2);
        assert!(b.total < a.total);
        let line = b.components.iter().find(|c| c.name == "queue shard").unwrap();
        assert!(line.how.contains("fp16 keys"), "{}", line.how);
        let no_amp = TrainConfig { amp: false, ..fp16 };
        let c = MemoryPlan::for_batch(&no_amp, 96, 2);
        assert_eq!(c.bytes_of("queue fp32 staging"), rows * fp32.dim as u64 * 4);
    }

    #[test]
    fn total_grows_with_batch_and_queue() {
        let cfg = presets::get("optimized").unwrap();
        let a = MemoryPlan::for_batch(&cfg, 64, 2).total;
        let b = MemoryPlan::for_batch(&cfg, 96, 2).total;
        assert!(b > a);
        let mut big_queue = cfg.clone();
        big_queue.queue_size *= 4;
        assert!(MemoryPlan::for_batch(&big_queue, 96, 2).total > b);
        // One rank alone holds the whole queue and needs no NCCL.
        let one = MemoryPlan::for_batch(&cfg, 96, 1);
        assert_eq!(
            one.bytes_of("queue shard"),
            2 * MemoryPlan::for_batch(&cfg, 96, 2).bytes_of("queue shard")
        );
        assert_eq!(one.bytes_of("NCCL"), 0);
    }
}
