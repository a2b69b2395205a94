//! The text of `launcher plan`: the per-component table, the verdict, the largest batch, the
//! recompute alternative and the seeds comparison.

use super::budget::{gib, mib};
use super::{seeds, MemoryPlan, Source, Verdict};
use moco_proto::resolved::ResolvedConfig;
use moco_proto::validate;
use std::fmt::Write;

/// Render the plan of `r` (a config from preset `preset`) against the verdict's budget.
pub fn render(r: &ResolvedConfig, preset: &str, plan: &MemoryPlan, v: &Verdict) -> String {
    let c = &r.cfg;
    let mut s = String::new();
    let on = |b: bool| if b { "on" } else { "off" };
    let _ = writeln!(
        s,
        "memory plan per GPU: preset {preset}, {} rank(s), batch {} per GPU, {} px, AMP {}, recompute {}",
        plan.world,
        plan.batch,
        c.image_size,
        on(c.amp),
        on(c.recompute)
    );
    let p = &plan.params;
    let _ = writeln!(
        s,
        "model: backbone {} params (torchvision ResNet-50 without fc at width 1 has 23508032), projector {}, \
         predictor {}; momentum encoder {}",
        p.backbone, p.projector, p.predictor, p.key
    );
    let _ = writeln!(s, "\n  {:<38} {:>10}  how", "component", "MiB");
    for comp in &plan.components {
        let _ = writeln!(s, "  {:<38} {:>10}  {}", comp.name, mib(comp.bytes), comp.how);
    }
    let _ = writeln!(s, "  {}", "-".repeat(60));
    let _ = writeln!(s, "  {:<38} {:>10}  {}", "total", mib(plan.total), gib(plan.total));
    let _ = writeln!(s, "  {:<38} {:>10}  {}", "budget (--vram)", mib(v.budget), gib(v.budget));
    let allowance: u64 =
        plan.components.iter().filter(|c| c.source == Source::Allowance).map(|c| c.bytes).sum();
    let _ = writeln!(
        s,
        "  ({} MiB of the total are allowances a GPU run has yet to measure; the rest is counted from shapes)",
        mib(allowance)
    );
    let margin = v.margin().unsigned_abs();
    if v.fits {
        let _ = writeln!(s, "\nverdict: FITS, {} MiB to spare", mib(margin));
    } else {
        let _ = writeln!(s, "\nverdict: DOES NOT FIT, over the budget by {} MiB", mib(margin));
    }
    largest(&mut s, r, plan, v);
    other_recompute(&mut s, r, plan, v);
    let lines = seeds::compare(c, preset, plan);
    if !lines.is_empty() {
        let _ = writeln!(s, "\nthe seeds' guesses against this plan (1 GB = 10^9 bytes):");
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
    }
    s
}

fn largest(s: &mut String, r: &ResolvedConfig, plan: &MemoryPlan, v: &Verdict) {
    let c = &r.cfg;
    let w = plan.world;
    let Some(n) = v.largest_batch else {
        let _ = writeln!(
            s,
            "not even a batch of 1 per GPU fits: lower --image-size or --width, turn on --amp / --recompute, \
             or use a bigger card."
        );
        return;
    };
    let _ = writeln!(s, "largest per-GPU batch that fits: {n} (effective batch {})", n * w * c.accumulation);
    if let Some(valid) = v.largest_valid_batch {
        if valid != n {
            let _ = writeln!(
                s,
                "largest that also suits this config (queue {}, shuffle groups {}): --batch {valid}",
                c.queue_size, c.shuffle_groups
            );
        }
    }
    if let Some((below, above)) = v.queues_for_largest {
        // With effective-batch negatives one write holds the whole step's keys.
        let micro = validate::micro_per_enqueue(c);
        let kps = validate::keys_per_step(n * micro, w);
        let acc = if micro > 1 { format!(" x {micro}") } else { String::new() };
        let sizes = match below {
            Some(b) if b == c.queue_size => format!("{b} (the current one) or {above}"),
            Some(b) => format!("{b} or {above}"),
            None => format!("{above}"),
        };
        let _ = writeln!(
            s,
            "queue sizes for --batch {n} on {w} rank(s) (multiples of 2 x {n} x {w}{acc} = {kps}) nearest {}: {sizes}",
            c.queue_size
        );
    }
}

fn other_recompute(s: &mut String, r: &ResolvedConfig, plan: &MemoryPlan, v: &Verdict) {
    let mut other = r.cfg.clone();
    other.recompute = !other.recompute;
    let alt = MemoryPlan::for_batch(&other, plan.batch, plan.world);
    let a = &plan.activations;
    let verdict = if alt.total <= v.budget { "fits" } else { "does not fit" };
    let _ = writeln!(
        s,
        "saved activations, 2 views: {} MiB with recompute, {} MiB without; with recompute {}: total {} MiB, {verdict}",
        mib(2 * a.saved_per_view_recompute),
        mib(2 * a.saved_per_view_all),
        if other.recompute { "on" } else { "off" },
        mib(alt.total)
    );
}
