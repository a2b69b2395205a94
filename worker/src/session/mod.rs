//! One worker from start to finish: config, group, data, model, training, summary.
//!
//! - `args`: the worker's command line (the launcher passes the same flags).
//! - `group`: ranks, rendezvous, ring, control line.
//! - `data`: the dataset named by `--data` and the loader over it.
//! - `device`: which backend trains (`--device`), which GPU, the `--vram-limit` check.
//! - `checkpoints`: where the run starts (fresh, resumed, `--init-from`) and when it saves.
//! - `monitor`: the collapse monitor and kNN with `--eval-data` at epoch ends.
//! - `lock`: one owner per run folder.
//! - `run_data`: the data a run trains on, recorded so a resume continues on it.

pub mod args;
pub mod checkpoints;
pub mod data;
pub mod device;
pub mod group;
pub mod lock;
pub mod monitor;
pub mod run_data;

use crate::checkpoint::{CheckpointPolicy, ResumeTarget};
use crate::collective::nccl::Joined;
use crate::collective::AsComm;
use crate::error::{Result, WorkerError};
use crate::eval::EvalTransform;
use crate::moco::device_comm::DeviceComm;
use crate::moco::Moco;
use crate::report::{write_report, EvalLog, ReportInput};
use crate::train::{train, MetricsLog, MicroBatches, Schedule, StepMetrics, Summary};
use args::TrainArgs;
use moco_kernels::cpu::Cpu;
use moco_kernels::Backend;
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

pub use device::{choose_device, Device};

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

/// Train as one worker of a (possibly single-worker) run. `stop` is set by signal handlers;
/// `trace` learns the rank once the group is joined (its file name and pid depend on it).
pub fn run(args: &TrainArgs, stop: Arc<AtomicBool>, trace: &mut crate::trace::Guard) -> Result<Outcome> {
    let device = choose_device(&args.device)?;
    if let Some(t) = args.threads {
        // Several workers on one machine must not each use every core.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global();
    }
    let cfg = args.config.build()?;
    // A run continuing in a known folder trains on its recorded data unless --data is given.
    let known_folder =
        args.out.clone().or_else(|| args.run.resume.as_deref().map(|r| ResumeTarget::parse(r).run_dir));
    let mut data_flags = args.data_flags.clone();
    let data_spec = match &known_folder {
        Some(dir) => {
            let (spec, notes) = run_data::resolve(dir, args.data.as_deref(), &mut data_flags)?;
            if data::claimed_rank(args).is_none_or(|r| r == 0) {
                notes.iter().for_each(|n| eprintln!("{n}"));
            }
            spec
        }
        None => args.data.clone().unwrap_or_else(|| "synthetic".into()),
    };
    let dataset = data::open(args, &data_spec, &data_flags, &cfg)?;
    let cfg_json = moco_proto::wire::Setup::encode_config(&cfg)?;
    let group = group::join_group(&args.group, &cfg_json, device.name(), stop.clone())?;
    trace.set_rank(group.rank, group.world);
    // A launcher owns its run folder for its workers; started by hand or by srun, rank 0 does,
    // before anything of the run is written there (the data cache has a lock of its own).
    let supervised = std::env::var(group::SUPERVISED_ENV).is_ok_and(|v| v == "1");
    let _lock = if group.rank == 0 && !supervised {
        let dir = run_folder(args, &group.run_id);
        let l = lock::RunLock::acquire(&dir)?;
        if let Some(p) = &l.previous {
            eprintln!(
                "note: the run folder's last owner ended without releasing it (killed or crashed?): {p}"
            );
        }
        run_data::RunData::new(&data_spec, &data_flags).save(&dir)?;
        Some(l)
    } else {
        None
    };
    let result = (|| {
        let resolved = ResolvedConfig::new(&cfg, group.world, dataset.len())?;
        let mut cuda = None;
        if device == Device::Cuda {
            device::check_vram_limit(&resolved, args.config.preset_name(), args.vram_limit)?;
            let gpu = device::gpu_ordinal(args.gpu, group.local_rank);
            match device::open_cuda(gpu, resolved.cfg.amp, args.vram_limit) {
                Ok(be) => {
                    if group.rank == 0 {
                        eprintln!(
                            "device: CUDA, rank 0 on GPU {gpu} ({}); every rank takes the GPU of its local \
                             rank. This path has not been verified on a GPU yet: `worker selftest --device \
                             cuda` checks every op against the CPU",
                            be.device_name()
                        );
                    }
                    cuda = Some(be);
                }
                // `auto` falls back to the CPU when the driver loads but the backend cannot start
                // (no NVRTC headers, no usable GPU); `--device cuda` asked for it and fails.
                Err(e) if args.device == "auto" => {
                    eprintln!(
                        "note: rank {}: --device auto: the CUDA backend cannot start ({e}); training on the CPU",
                        group.rank
                    );
                }
                Err(e) => return Err(e),
            }
        }
        device::agree_on_device(group.collective.as_ref(), cuda.is_some())?;
        if let Some(be) = cuda {
            let dev_comm: Option<Box<dyn DeviceComm<_>>> = match crate::collective::nccl::join(
                &be,
                group.collective.as_ref(),
                args.nccl != "off",
                std::time::Duration::from_secs(args.nccl_timeout),
                args.grad_bucket > 0,
            )? {
                Joined::Nccl(n) => {
                    if group.rank == 0 {
                        eprintln!("collectives: NCCL for gradients and keys between the GPUs");
                    }
                    Some(Box::new(n))
                }
                Joined::Ring(why) => {
                    if group.rank == 0 && group.world > 1 {
                        eprintln!("collectives: the TCP ring through host memory ({why})");
                    }
                    None
                }
            };
            return run_in_group(args, be, dev_comm, &resolved, dataset.clone(), &group, stop.clone());
        }
        run_in_group(
            args,
            Cpu { amp: resolved.cfg.amp },
            None,
            &resolved,
            dataset.clone(),
            &group,
            stop.clone(),
        )
    })();
    // A lost or hung peer is named by rank; say which node that rank is on.
    let result = result.map_err(|e| match e {
        WorkerError::Collective(m) => WorkerError::Collective(format!("{m}\n{}", group.where_ranks())),
        e => e,
    });
    if let (Err(e), Some(c)) = (&result, &group.control) {
        c.error(failure_kind(e), &e.to_string());
    }
    result
}

fn run_in_group<B: Backend>(
    args: &TrainArgs,
    be: B,
    dev_comm: Option<Box<dyn DeviceComm<B>>>,
    resolved: &ResolvedConfig,
    dataset: Arc<dyn crate::data::Dataset>,
    group: &group::Group,
    stop: Arc<AtomicBool>,
) -> Result<Outcome> {
    let (rank, world) = (group.rank, group.world);
    let cfg = &resolved.cfg;
    let mut warnings = resolved.warnings.clone();
    if rank == 0 {
        eprintln!("{}", resolved.summary());
        for w in &resolved.warnings {
            eprintln!("warning: {w}");
        }
    }
    let out = run_folder(args, &group.run_id);
    let comm = AsComm(group.collective.as_ref());
    let mut moco = Moco::new(be, cfg, dataset.bands(), rank, world)?;
    moco.dev_comm = dev_comm;
    moco.guard.limits = crate::moco::guard::Limits {
        max_skipped_steps: args.run.max_skipped_steps,
        min_loss_scale: args.run.min_loss_scale,
    };
    // Bucketed all-reduce overlapping the backward: on the device collective's second stream
    // when it has one, else on the host ring's gradient collective (unless --grad-bucket 0).
    let bucket = args.grad_bucket;
    if bucket > 0 && moco.dev_comm.as_ref().is_some_and(|d| d.overlaps_buckets()) {
        moco.dev_buckets = Some(crate::moco::device_buckets::DeviceBuckets::new(bucket));
    }
    if let Some(gc) = group.grad_collective.as_ref().filter(|_| moco.dev_comm.is_none() && bucket > 0) {
        moco.grad_sync = Some(crate::moco::grad_sync::GradSync::new(gc.clone(), bucket)?);
    }
    let control = group.control.as_ref();
    // Rank 0's lines for the user: its stderr (a log under the launcher) and, when supervised,
    // the launcher's terminal.
    let tell = |line: &str| {
        if rank == 0 {
            eprintln!("{line}");
            if let Some(c) = control {
                c.notice(line);
            }
        }
    };
    checkpoints::check_shared_run_folder(&out, &comm, run_nonce())?;
    let start = checkpoints::start(&args.run, &out, &mut moco, (rank, world), group.restart_count > 0)?;
    if let Some(q) = moco.queue.as_mut() {
        q.inject_fault_from_env(&moco.be)?;
    }
    for n in &start.notes {
        tell(n);
    }
    for w in &start.warnings {
        tell(&format!("warning: {w}"));
    }
    warnings.extend(start.warnings.iter().cloned());
    if rank == 0 {
        for f in ["metrics.jsonl", crate::report::records::EVALS_FILE] {
            crate::train::metrics::truncate_after(&out.join(f), start.step)?;
        }
        // The events files are a view for TensorBoard, not the run's record: one that cannot be
        // read must not stop a resume.
        if let Err(e) = crate::report::tensorboard::truncate_after(&out, start.step) {
            tell(&format!("warning: TensorBoard events left as they are: {e}"));
        }
    }
    let mut log = if rank == 0 { Some(MetricsLog::open(&out)?) } else { None };
    let mut tb = if rank == 0 { Some(crate::report::tensorboard::TbLog::create(&out)?) } else { None };
    let knn = match &args.run.eval_data {
        Some(spec) => {
            let ds = data::open_data(spec, &args.data_flags, cfg, Some(&out.join("cache")), rank == 0)?;
            let tf = EvalTransform::new(cfg.image_size, dataset.stats());
            Some(monitor::KnnData::new(ds, tf, args.run.eval_every)?)
        }
        None => None,
    };
    let mut monitor = monitor::Monitor {
        knn,
        collapse: Default::default(),
        log: if rank == 0 { Some(EvalLog::open(&out)?) } else { None },
        steps_per_epoch: resolved.steps_per_epoch as u64,
        warning: None,
        warnings: Vec::new(),
        last_knn: None,
        fresh: None,
    };

    let mut loader =
        data::loader(dataset.clone(), cfg, rank, world, args.loader_threads, start.data_position)?;
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
    if let Some(s) = args.steps.filter(|&s| s > total && rank == 0) {
        eprintln!("{}", steps_past_schedule(s, total, cfg.epochs));
    }
    let mut saver = checkpoints::Saver {
        policy: CheckpointPolicy { every_epochs: args.run.checkpoint_every, keep_last: args.run.keep_last },
        run_dir: &out,
        run_id: &group.run_id,
        band_stats: dataset.stats(),
        steps_per_epoch: sched.steps_per_epoch,
        end_step: end,
        last_saved: (start.step > 0).then_some(start.step),
        last_dir: None,
    };
    if rank == 0 && start.step >= end {
        eprintln!("nothing to do: the run is at step {} and ends at step {end}", start.step);
    }
    let log_every = args.log_every;
    let mut on_step = |m: &StepMetrics, moco: &Moco<B>, data: &dyn MicroBatches| -> Result<()> {
        if let Some(log) = log.as_mut() {
            log.write(m)?;
        }
        // Epoch-end measurements and checkpoints: every rank, at the same step.
        for line in monitor.after_step(moco, &comm)? {
            tell(&line);
        }
        if let Some(tb) = tb.as_mut() {
            tb.write_step(m)?;
            if let Some(r) = monitor.fresh.take() {
                tb.write_eval(&r)?;
            }
        }
        if let Some(pos) = data.position() {
            let before = saver.last_saved;
            saver.after_step(moco, &comm, pos, m.epoch)?;
            if saver.last_saved != before && m.step != end {
                if let Some(d) = &saver.last_dir {
                    tell(&format!("checkpoint saved: {}", d.display()));
                }
            }
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
                "step {:>6}/{end}  epoch {:>6.2}  loss {:.4}  lr {:.3e}  m {:.4}  scale {}  {:.1} img/s{}{}{}",
                m.step,
                m.epoch,
                m.loss,
                m.lr,
                m.momentum,
                m.loss_scale,
                m.images_per_sec,
                if m.applied { "" } else { "  (step skipped: inf/NaN gradients)" },
                monitor.last_knn.map(|a| format!("  kNN {:.1}%", 100.0 * a)).unwrap_or_default(),
                monitor.warning.as_ref().map(|_| "  [collapse warning]").unwrap_or_default(),
            );
        }
        Ok(())
    };
    let summary = train(&mut moco, &comm, &mut loader, &sched, end, &stop, &mut on_step)?;
    // The end of training, or a stop request (SIGINT/SIGTERM/SIGUSR1 ended the step): save what
    // the policy has not saved yet, so nothing done is lost.
    saver.finish(&moco, &comm, loader.position(), sched.epoch_at(moco.steps))?;
    warnings.extend(monitor.warnings.iter().cloned());
    if rank == 0 {
        if let Some(d) = &saver.last_dir {
            eprintln!("checkpoint: {}", d.display());
        }
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
        drop(log);
        drop(tb);
        drop(monitor);
        let report = write_report(
            &out,
            &ReportInput {
                run_id: &group.run_id,
                config: Some(cfg),
                world,
                summary: Some(&summary),
                eval: None,
                warnings,
                checkpoint: saver.last_dir.clone(),
            },
        );
        // The report is a convenience: a failure to draw it must not fail a finished run.
        match report {
            Ok(f) => eprintln!("report: {}", f.summary.display()),
            Err(e) => eprintln!("warning: the run report was not written: {e}"),
        }
    }
    if let Some(c) = control {
        c.done();
    }
    Ok(Outcome { rank, world, summary, out })
}

/// The note for `--steps` beyond the schedule (the lr and momentum schedules end at `total`).
pub fn steps_past_schedule(steps: u64, total: u64, epochs: usize) -> String {
    format!(
        "note: --steps {steps} is past the end of the schedule ({total} steps = {epochs} epochs): the run ends at \
         step {total}; raise --epochs to train longer"
    )
}

/// The run folder: `--out`, else the run folder of what `--resume` names, else `runs/<run id>`.
pub fn run_folder(args: &TrainArgs, run_id: &str) -> PathBuf {
    args.out
        .clone()
        .or_else(|| args.run.resume.as_deref().map(|r| crate::checkpoint::ResumeTarget::parse(r).run_dir))
        .unwrap_or_else(|| PathBuf::from("runs").join(run_id))
}

/// A value that differs between runs (only rank 0's is used): marks the run folder as this run's.
fn run_nonce() -> i64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as i64) ^ ((std::process::id() as i64) << 32) | 1
}
