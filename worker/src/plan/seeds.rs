//! The seeds' hand-guessed VRAM figures (shared/seeds/), set beside the plan so a user who
//! read them sees plainly where they were wrong. Sizes are in GB as the seeds write them.

use super::budget::{gb, GIB};
use super::MemoryPlan;
use moco_proto::config::TrainConfig;
use moco_proto::presets;

/// A seeds figure for a whole preset.
struct TotalClaim {
    preset: &'static str,
    gb: f64,
    said: &'static str,
}

const TOTALS: &[TotalClaim] = &[
    TotalClaim {
        preset: "low-vram",
        gb: 8.0,
        said: "print_vram_estimate: ~8.0 GB; the user then measured ~4.6 GB",
    },
    TotalClaim {
        preset: "optimized",
        gb: 6.9,
        said: "vram-optimization-guide: ~6.9 GB, '1.1 GB safety margin'",
    },
    TotalClaim { preset: "conservative", gb: 5.75, said: "vram-optimization-guide: ~5.75 GB" },
    TotalClaim { preset: "aggressive", gb: 9.2, said: "vram-optimization-guide: ~9.2 GB, 'won't fit' 8 GB" },
];

/// How a planned figure compares with a guessed one, in words.
fn judge(planned: f64, claimed: f64) -> String {
    let r = planned / claimed;
    if r < 0.8 {
        format!("the seeds' figure is {:.1}x too high", 1.0 / r)
    } else if r > 1.25 {
        format!("the seeds' figure is {r:.1}x too low")
    } else {
        "close".to_string()
    }
}

fn line(what: &str, claimed: f64, planned: u64, note: &str) -> String {
    format!(
        "  {what}: seeds ~{claimed} GB; planned {} ({note}): {}",
        gb(planned),
        judge(planned as f64 / 1e9, claimed)
    )
}

/// Does `cfg` still have the memory-relevant settings of preset `name`?
fn is_preset(cfg: &TrainConfig, name: &str) -> bool {
    presets::get(name).is_ok_and(|p| {
        (p.batch, p.amp, p.recompute, p.image_size, p.queue_size, p.optimizer)
            == (cfg.batch, cfg.amp, cfg.recompute, cfg.image_size, cfg.queue_size, cfg.optimizer)
            && p.width == cfg.width
    })
}

/// Comparison lines for the report (empty when the seeds said nothing about this config).
pub fn compare(cfg: &TrainConfig, preset: &str, plan: &MemoryPlan) -> Vec<String> {
    let mut out = Vec::new();
    let full_size = cfg.width == 1.0 && cfg.proj_hidden == 4096 && cfg.pred_hidden == 4096 && cfg.dim == 256;
    if full_size {
        let model = plan.bytes_of("query encoder weights") + plan.bytes_of("momentum encoder");
        out.push(line(
            "model (ResNet-50 query + momentum)",
            2.5,
            model,
            "fp32 masters and fp16 copies of both encoders",
        ));
        let grads_opt = plan.bytes_of("gradients") + plan.bytes_of("optimiser");
        out.push(line("gradients + optimizer states", 1.5, grads_opt, "fp32 gradients and moments"));
        if cfg.batch == 64 && cfg.amp && cfg.recompute && cfg.image_size == 224 {
            let acts = plan.activations.peak;
            out.push(line("batch (64 images)", 3.0, acts, "activations at their peak"));
        }
        let overhead: u64 = plan
            .components
            .iter()
            .filter(|c| {
                c.source == super::Source::Allowance
                    || c.name.starts_with("queue")
                    || c.name.starts_with("BN")
            })
            .map(|c| c.bytes)
            .sum();
        out.push(line("buffer + overhead", 1.0, overhead, "allowances, queue shard, BN statistics"));
    }
    if let Some(t) = TOTALS.iter().find(|t| t.preset == preset) {
        if is_preset(cfg, preset) && plan.world == 2 {
            let mut s = line(&format!("total, {} preset", t.preset), t.gb, plan.total, t.said);
            if t.preset == "aggressive" {
                let card = 8 * GIB;
                if plan.total <= card {
                    s.push_str(&format!(
                        "; and it is wrong that it won't fit: planned {} fits an 8 GiB card",
                        super::budget::gib(plan.total)
                    ));
                } else {
                    s.push_str("; the plan agrees that it does not fit an 8 GiB card");
                }
            }
            out.push(s);
        }
    }
    out
}
