//! Training, the default verb. Until the training driver is wired in, it validates the
//! config, prints the resolved config and the memory plan, and says that training is not
//! implemented yet (the lead engineer replaces this part).

use crate::cli::TrainArgs;
use crate::dataset::dataset_len;
use crate::error::Result;
use moco_proto::resolved::ResolvedConfig;
use moco_worker::plan::budget::GIB;
use moco_worker::plan::{render, MemoryPlan, Verdict};

pub fn run(a: &TrainArgs) -> Result<()> {
    let cfg = a.config.build()?;
    let preset = a.config.preset_name();
    let world = a.world();
    let (dataset, data_from) = dataset_len(a.data.as_deref(), None)?;
    let r = ResolvedConfig::new(&cfg, world, dataset)?;
    println!("{}", super::plan::describe(preset, world, "--gpus / --workers", dataset, &data_from));
    print!("{}", r.summary());
    println!();
    let plan = MemoryPlan::compute(&r);
    let verdict = Verdict::new(&r.cfg, &plan, 8 * GIB);
    print!("{}", render(&r, preset, &plan, &verdict));
    println!(
        "\ntraining is not implemented in the launcher yet: the config above is valid; nothing was run."
    );
    Ok(())
}
