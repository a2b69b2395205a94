//! `launcher plan`: the resolved config and the per-GPU memory plan with its verdict. Any
//! config flag can be overridden here exactly as for training.

use crate::cli::PlanArgs;
use crate::dataset::dataset_len;
use crate::error::Result;
use moco_proto::presets;
use moco_proto::resolved::ResolvedConfig;
use moco_worker::plan::{render, MemoryPlan, Verdict};

pub fn run(a: &PlanArgs) -> Result<()> {
    let cfg = a.config.build()?;
    let preset = a.config.preset_name();
    let (world, world_from) = match a.gpus {
        Some(g) => (g, "--gpus"),
        None => (presets::find(preset).map_or(1, |p| p.gpus), "the preset's own count; set --gpus"),
    };
    let (dataset, data_from) = dataset_len(a.data.as_deref(), a.dataset_size)?;
    let r = ResolvedConfig::new(&cfg, world, dataset).inspect_err(|_| {
        if a.dataset_size.is_none() && a.data.is_none() {
            eprintln!("note: the dataset size {dataset} was assumed; set the real one with --dataset-size N or --data");
        }
        if a.gpus.is_none() {
            eprintln!("note: planning for {world} rank(s), the preset's own count; set --gpus N");
        }
    })?;
    say!("{}", describe(preset, world, world_from, dataset, &data_from));
    say_part!("{}", r.summary());
    say!();
    let plan = MemoryPlan::compute(&r);
    let verdict = Verdict::new(&r.cfg, &plan, a.vram);
    say_part!("{}", render(&r, preset, &plan, &verdict));
    Ok(())
}

/// The header line of the resolved config: where world size and dataset size came from.
pub fn describe(preset: &str, world: usize, world_from: &str, dataset: usize, data_from: &str) -> String {
    format!(
        "resolved config: preset {preset}, {world} rank(s) ({world_from}), {dataset} images ({data_from})"
    )
}
