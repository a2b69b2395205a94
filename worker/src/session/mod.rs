//! One worker from start to finish: config, group, data, model, training, summary.
//!
//! - `args`: the worker's command line (the launcher passes the same flags).
//! - `group`: ranks, rendezvous, ring, control line.
//! - `data`: the dataset named by `--data` and the loader over it.

pub mod args;
pub mod data;
pub mod group;

use crate::collective::AsComm;
use crate::error::{Result, WorkerError};
use crate::moco::Moco;
use crate::train::{train, MetricsLog, Schedule, StepMetrics, Summary};
use args::TrainArgs;
use moco_kernels::cpu::Cpu;
use moco_proto::resolved::ResolvedConfig;
use moco_proto::wire::{FailureKind, Metrics};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What a finished worker reports.
pub struct Outcome {
    pub rank: usize,
    pub world: usize,
    pub summary: Summary,
    pub out: PathBuf,
}

/// Which backend runs the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

/// Pick the device: `cpu`; `auto` uses the CPU until the CUDA backend is wired into training.
pub fn choose_device(flag: &str) -> Result<Device> {
    match flag {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if moco_kernels::cuda::probe_driver().is_ok() {
                eprintln!(
                    "note: a CUDA driver is present, but training on CUDA is not wired in yet; using the CPU"
                );
            }
            Ok(Device::Cpu)
        }
        "cuda" => Err(WorkerError::Config(moco_proto::ProtoError::Config(
            "--device cuda: the CUDA training path is not available in this build yet (kernels compile, the \
             backend is not wired into training); use --device cpu"
                .into(),
        ))),
        other => Err(WorkerError::Config(moco_proto::ProtoError::Config(format!(
            "--device {other:?}: expected cpu, cuda or auto"
        )))),
    }
}

/// Classify an error for the launcher (decides whether a restart can help).
pub fn failure_kind(e: &WorkerError) -> FailureKind {
    match e {
        WorkerError::Config(_) => FailureKind::Config,
        WorkerError::Data(_) => FailureKind::Data,
        WorkerError::Kernel(_) => FailureKind::Device,
        WorkerError::Collective(_) => FailureKind::Collective,
        WorkerError::Numeric(_) => FailureKind::Numeric,
        WorkerError::Io { .. } | WorkerError::BadFile { .. } => FailureKind::Io,
    }
}

/// Train as one worker of a (possibly single-worker) run. `stop` is set by signal handlers.
pub fn run(args: &TrainArgs, stop: Arc<AtomicBool>) -> Result<Outcome> {
    let device = choose_device(&args.device)?;
    if let Some(t) = args.threads {
        // Several workers on one machine must not each use every core.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global();
    }
    let cfg = args.config.build()?;
    let dataset = data::open(args, &cfg)?;
    let cfg_json = moco_proto::wire::Setup::encode_config(&cfg)?;
    let group = group::join_group(&args.group, &cfg_json, "cpu", stop.clone())?;
    let result = run_in_group(args, device, &cfg, dataset, &group, stop);
    if let (Err(e), Some(c)) = (&result, &group.control) {
        c.error(failure_kind(e), &e.to_string());
    }
    result
}

fn run_in_group(
    args: &TrainArgs,
    _device: Device,
    cfg: &moco_proto::TrainConfig,
    dataset: Arc<dyn crate::data::Dataset>,
    group: &group::Group,
    stop: Arc<AtomicBool>,
) -> Result<Outcome> {
    let (rank, world) = (group.rank, group.world);
    let resolved = ResolvedConfig::new(cfg, world, dataset.len())?;
    let cfg = &resolved.cfg;
    if rank == 0 {
        eprintln!("{}", resolved.summary());
        for w in &resolved.warnings {
            eprintln!("warning: {w}");
        }
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&group.run_id));
    let mut log = if rank == 0 { Some(MetricsLog::open(&out)?) } else { None };

    let comm = AsComm(group.collective.as_ref());
    let mut moco = Moco::new(Cpu { amp: cfg.amp }, cfg, dataset.bands(), rank, world)?;
    if let Some(gc) = &group.grad_collective {
        moco.grad_sync =
            Some(crate::moco::grad_sync::GradSync::new(gc.clone(), crate::moco::grad_sync::BUCKET_FLOATS)?);
    }
    let mut loader = data::loader(dataset.clone(), cfg, rank, world, args.loader_threads)?;
    let sched = Schedule {
        peak_lr: resolved.batching.scaled_lr,
        warmup_epochs: cfg.warmup_epochs as f64,
        epochs: cfg.epochs as f64,
        steps_per_epoch: resolved.steps_per_epoch as u64,
        accumulation: cfg.accumulation,
        m0: cfg.momentum as f64,
        m_cosine: cfg.momentum_cosine,
        images_per_step: resolved.batching.effective_batch as u64,
    };
    let total = resolved.total_steps as u64;
    let end = args.steps.map(|s| s.min(total)).unwrap_or(total);
    let log_every = args.log_every;
    let control = group.control.as_ref();
    let mut on_step = |m: &StepMetrics| -> Result<()> {
        if let Some(log) = log.as_mut() {
            log.write(m)?;
        }
        if let Some(c) = control {
            c.set_step(m.step);
            if rank == 0 {
                c.metrics(Metrics {
                    rank: rank as u32,
                    step: m.step,
                    epoch: m.epoch as u32,
                    loss: m.loss as f64,
                    lr: m.lr as f64,
                    momentum: m.momentum as f64,
                    loss_scale: m.loss_scale as f64,
                    images_per_sec: m.images_per_sec as f64,
                    memory_bytes: m.memory_bytes,
                });
            }
        }
        if rank == 0 && log_every > 0 && (m.step.is_multiple_of(log_every) || m.step == end) {
            eprintln!(
                "step {:>6}/{end}  epoch {:>6.2}  loss {:.4}  lr {:.3e}  m {:.4}  scale {}  {:.1} img/s{}",
                m.step,
                m.epoch,
                m.loss,
                m.lr,
                m.momentum,
                m.loss_scale,
                m.images_per_sec,
                if m.applied { "" } else { "  (step skipped: inf/NaN gradients)" }
            );
        }
        Ok(())
    };
    let summary = train(&mut moco, &comm, &mut loader, &sched, end, &stop, &mut on_step)?;
    if rank == 0 {
        eprintln!(
            "done: {} steps in {:.1} s, loss {:.4} -> {:.4} (last 10%: {:.4}), {:.1} img/s{}",
            summary.steps,
            summary.elapsed_s,
            summary.first_loss,
            summary.last_loss,
            summary.tail_loss,
            summary.images_per_sec,
            if summary.interrupted { " (stopped early on request)" } else { "" }
        );
    }
    if let Some(c) = control {
        c.done();
    }
    Ok(Outcome { rank, world, summary, out })
}
