//! `launcher eval`: weighted kNN (cosine, k = 20, T = 0.07) and a linear probe on frozen
//! backbone features of labelled tiles, each next to the same numbers for a randomly
//! initialised network of the same architecture. With a run folder, summary.md gets the table.

use super::evaluation::{load, Progress};
use crate::error::Result;
use clap::Args;
use moco_kernels::cpu::Cpu;
use moco_worker::data::folder::DataArgs;
use moco_worker::eval::{evaluate, EvalOptions};
use moco_worker::report::{write_report, ReportInput};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A run folder (its newest checkpoint), RUN/last, or a step folder.
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Labelled tiles: DIR/<class>/<image>, or `synthetic[:N[:SIZE]]` (classes of generated scenes).
    #[arg(long, value_name = "DIR|synthetic")]
    pub data: String,
    /// Neighbours of the weighted kNN.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Temperature of the kNN weights.
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f32,
    /// Every n-th image of each class is a test image, the rest train the kNN bank and the probe.
    #[arg(long, default_value_t = 5)]
    pub test_every: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Seed of the randomly initialised baseline.
    #[arg(long, default_value_t = 0)]
    pub random_seed: u64,
    #[command(flatten)]
    pub data_flags: DataArgs,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if a.k == 0 || a.test_every < 2 || a.batch == 0 {
        return Err(moco_worker::WorkerError::Data(
            "--k and --batch must be at least 1 and --test-every at least 2".into(),
        )
        .into());
    }
    let l = load(&a.checkpoint, &a.data, &a.data_flags, None)?;
    let opts = EvalOptions {
        k: a.k,
        temperature: a.temperature,
        test_every: a.test_every,
        batch: a.batch,
        random_seed: a.random_seed,
        ..EvalOptions::default()
    };
    let be = Cpu { amp: false };
    let mut p = Progress::default();
    let report = evaluate(&be, &l.weights, &*l.ds, &l.tf, &opts, &mut |name, done, total| {
        p.show(&format!("features ({name})"), done, total)
    })?;
    say!("{} (step {}) on {}", l.ck.dir.display(), l.ck.step(), a.data);
    say_part!("{}", report.table());
    // The checkpoint's run folder (RUN/checkpoints/step-N): add the table to its summary.md.
    if let Some(run_dir) =
        l.ck.dir.parent().and_then(|c| c.parent()).filter(|r| r.join("metrics.jsonl").is_file())
    {
        let files = write_report(
            run_dir,
            &ReportInput {
                run_id: &l.ck.meta.run_id,
                config: Some(&l.ck.meta.config),
                world: l.ck.meta.world,
                eval: Some(&report),
                checkpoint: Some(l.ck.dir.clone()),
                ..Default::default()
            },
        )?;
        say!("added to {}", files.summary.display());
    }
    Ok(())
}
