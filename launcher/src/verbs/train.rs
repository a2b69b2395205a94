//! Training, the default verb: validate everything first, then run the worker group (one
//! process per GPU, or `--workers` CPU processes) under supervision, with restarts.

use crate::cli::{Device, TrainArgs};
use crate::dataset::dataset_len;
use crate::error::{LauncherError, Result};
use crate::group::progress::Progress;
use crate::group::spawn::{worker_exe, WorkerSpec};
use crate::group::{run_once, Outcome, Watch};
use moco_proto::resolved::ResolvedConfig;
use moco_worker::checkpoint::ResumeTarget;
use moco_worker::session::run_data;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a training run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Reached its last step.
    Finished,
    /// Stopped on a signal after saving: resume it with the same command.
    Stopped,
    /// Stopped at once on a second signal (not saved): resume from the newest checkpoint.
    Killed,
}

pub fn run(a: &TrainArgs) -> Result<Ended> {
    // `--resume RUN_DIR` (or one of its step folders) alone continues with the run's own
    // resolved config, in its own run folder.
    let target = a.run.resume.as_deref().map(ResumeTarget::parse);
    let mut config = a.config.clone();
    if let Some(t) = &target {
        let saved = t.run_dir.join("config.toml");
        if config.preset.is_none() && config.config.is_none() && saved.is_file() {
            eprintln!("--resume: using the run's config {}", saved.display());
            if let Some(policy) = config.aug.take() {
                // The saved file holds every [aug] key, and it comes after the policy.
                eprintln!(
                    "note: --aug {policy} is ignored on a resume: the run's config keeps its [aug] keys \
                     (single [aug] flags still apply)"
                );
            }
            config.config = Some(saved);
        }
    }
    let cfg = config.build()?;
    let world = a.world();
    let run_id = format!(
        "run-{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        std::process::id()
    );
    let out = a
        .out
        .clone()
        .or_else(|| target.as_ref().map(|t| t.run_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("runs").join(&run_id));
    // Fails here, before anything is written (the folder is only read), when nothing intact is
    // left to resume.
    let picked = moco_worker::checkpoint::pick(
        &out,
        target.as_ref().and_then(|t| t.step_dir.as_deref()),
        target.as_ref().map(|t| t.run_dir.as_path()),
    )?;
    for w in &picked.warnings {
        eprintln!("warning: {w}");
    }
    // A resumed run trains on its own data unless --data says otherwise.
    let record_dir = [Some(&out), target.as_ref().map(|t| &t.run_dir)]
        .into_iter()
        .flatten()
        .find(|d| d.join(run_data::RUN_DATA).is_file())
        .unwrap_or(&out);
    let mut data_flags = a.data_flags.clone();
    let (data, notes) = run_data::resolve(record_dir, a.data.as_deref(), &mut data_flags)?;
    for n in notes {
        eprintln!("{n}");
    }
    // A folder is cached here, once, before the workers start (they map the same cache), so the
    // report prints once and validation sees the usable tile count after skips.
    let (dataset, data_from) = match moco_worker::data::DataSpec::parse(&data)? {
        moco_worker::data::DataSpec::Path(_) => {
            let ds = moco_worker::session::data::open_data(
                &data,
                &data_flags,
                &cfg,
                Some(&out.join("cache")),
                true,
            )?;
            (ds.len(), format!("usable images in {data}"))
        }
        moco_worker::data::DataSpec::Synthetic(_) => dataset_len(Some(&data), None)?,
    };
    // Every problem is reported before any process starts.
    let r = ResolvedConfig::new(&cfg, world, dataset)?;
    let check_plan =
        || moco_worker::session::device::check_vram_limit(&r, config.preset_name(), a.vram_limit);
    if a.device == Device::Cuda {
        // The plan needs no GPU: a config that cannot fit is refused before the driver is probed.
        check_plan()?;
    }
    let device = match a.device {
        Device::Cpu => "cpu",
        Device::Cuda => {
            moco_kernels::cuda::probe_driver().map_err(|e| {
                LauncherError::Spawn(format!(
                    "--device cuda: {e} (CPU ranks: --device cpu --workers N)\n{}",
                    super::doctor::quick(Some(world), a.vram_limit, None, false).advice()
                ))
            })?;
            "cuda"
        }
        // `--workers N` alone asks for CPU ranks; otherwise the GPUs when a driver loads.
        Device::Auto if a.workers.is_some() && a.gpus.is_none() => "cpu",
        Device::Auto => match moco_kernels::cuda::probe_driver() {
            Ok(()) => "cuda",
            // `--gpus N` asks for GPUs: training N CPU ranks of a GPU preset instead would take
            // hours per step without saying so (ResNet-50 at 224 px: minutes per step).
            Err(_) if a.gpus.is_some() => {
                return Err(LauncherError::Spawn(format!(
                    "--gpus {world}: no NVIDIA driver could be loaded, so there is no GPU to train on. \
                     What `launcher doctor` found:\n{}\nTo train on the CPU instead, say so: \
                     --device cpu --workers N (a small preset such as tiny suits a CPU)",
                    super::doctor::quick(Some(world), a.vram_limit, None, false).advice()
                )));
            }
            Err(_) => "cpu",
        },
    };
    if device == "cuda" {
        // The doctor's quick part (libraries, driver, GPUs, versions, memory plan), so a missing
        // library stops the run here with its fix instead of as a worker's panic.
        let rep = super::doctor::quick(Some(world), a.vram_limit, Some((&r, config.preset_name())), false);
        if !rep.problems.is_empty() {
            return Err(LauncherError::Spawn(format!(
                "the GPU is not ready for training (`launcher doctor` shows the full report):\n{}",
                rep.advice()
            )));
        }
    }
    let cpu_estimate = (device == "cpu" && (r.cfg.image_size >= 160 || r.cfg.width >= 1.0))
        .then_some(r.batching.effective_batch as f64);
    if cpu_estimate.is_some() {
        eprintln!(
            "note: preset {} is full-size (ResNet-50 at width {}, {} px) and runs on the CPU: the time of the \
             first step and the expected time of the run follow it",
            config.preset_name(),
            r.cfg.width,
            r.cfg.image_size
        );
    }
    if device == "cpu" && a.vram_limit.is_some() {
        eprintln!("note: --vram-limit limits GPU memory; the CPU workers ignore it");
    }
    if device == "cuda" && a.device == Device::Auto {
        // The same check every worker makes, here before any process starts.
        check_plan()?;
    }
    eprintln!(
        "{}",
        super::plan::describe(config.preset_name(), world, "--gpus / --workers", dataset, &data_from)
    );
    eprint!("{}", r.summary());
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    // The run folder is ours before the run writes anything into it (released when we exit);
    // taken after the checks, so a refused run leaves no folder behind. (Caching a read-only
    // data folder may already have used RUN/cache: the cache has its own lock.)
    let lock = moco_worker::session::lock::RunLock::acquire(&out)?;
    if let Some(p) = &lock.previous {
        eprintln!("note: the run folder's last owner ended without releasing it (killed or crashed?): {p}");
    }
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| LauncherError::Spawn(format!("cannot create the run folder {}: {e}", logs.display())))?;
    let config_path = out.join("config.toml");
    write_atomic(
        &config_path,
        &toml::to_string(&r.cfg).map_err(|e| LauncherError::Spawn(format!("config to TOML: {e}")))?,
    )?;
    run_data::RunData::new(&data, &data_flags).save(&out)?;
    let config_json = moco_proto::wire::Setup::encode_config(&r.cfg)?;

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = a.threads.unwrap_or((cores / world).max(1));
    let mut args: Vec<String> = vec![
        "--config".into(),
        config_path.display().to_string(),
        "--data".into(),
        data.clone(),
        "--out".into(),
        out.display().to_string(),
        "--device".into(),
        device.into(),
        "--threads".into(),
        threads.to_string(),
        "--log-every".into(),
        "0".into(),
    ];
    let total = r.total_steps as u64;
    let end = a.steps.map(|s| s.min(total)).unwrap_or(total);
    if let Some(s) = a.steps.filter(|&s| s > total) {
        eprintln!("{}", moco_worker::session::steps_past_schedule(s, total, r.cfg.epochs));
    }
    if let Some(s) = a.steps {
        args.extend(["--steps".into(), s.to_string()]);
    }
    args.extend(["--nccl".into(), a.nccl.clone()]);
    // The NCCL watchdog stops a rank whose peer hangs within the time the launcher gives a
    // silent worker, so both sides agree on when a rank counts as lost.
    args.extend(["--nccl-timeout".into(), a.heartbeat_timeout.max(5).to_string()]);
    args.extend(["--grad-bucket".into(), a.grad_bucket.to_string()]);
    if let Some(v) = a.vram_limit {
        args.extend(["--vram-limit".into(), format!("{v}B")]);
    }
    args.extend(data_flags.to_args());
    args.extend(a.run.to_args());
    let mut spec = WorkerSpec {
        exe: worker_exe()?,
        args,
        world,
        master: String::new(),
        run_id: run_id.clone(),
        restart_count: 0,
        log_dir: logs.clone(),
        nsys: a.nsys,
    };
    let watch = Watch {
        heartbeat_timeout: Duration::from_secs(a.heartbeat_timeout.max(5)),
        join_timeout: Duration::from_secs(120),
        grace: Duration::from_secs(30),
    };
    eprintln!("run {run_id}: {world} worker(s) on the {device}, run folder {}", out.display());
    // The workers resume by themselves (the run folder's newest checkpoint, else --resume);
    // say so here, where the user looks.
    if let Some(ck) = &picked.checkpoint {
        eprintln!("resuming from {} (step {}, epoch {:.2})", ck.dir.display(), ck.step(), ck.meta.epoch);
    } else if let Some(init) = &a.run.init_from {
        // Fails here, before any worker starts, when the checkpoint is unusable.
        let ck = moco_worker::checkpoint::Checkpoint::resolve(init)?;
        eprintln!("starting a new run from the weights of {} (step {})", ck.dir.display(), ck.step());
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LauncherError::Spawn(format!("cannot start the async runtime: {e}")))?;
    let bind = format!("{}:{}", a.master_addr, a.master_port);
    loop {
        let mut progress = Progress::new(end);
        progress.estimate_from_first = cpu_estimate;
        let outcome = rt.block_on(run_once(&spec, &bind, &config_json, &watch, &mut progress))?;
        progress.finish();
        match outcome {
            Outcome::Finished => {
                if let (Some(f), Some(l)) = (&progress.first, &progress.last) {
                    eprintln!(
                        "done: {} steps, loss {:.4} -> {:.4}, {:.1} img/s; metrics in {}",
                        l.step,
                        f.loss,
                        l.loss,
                        l.images_per_sec,
                        out.join("metrics.jsonl").display()
                    );
                }
                report_paths(&out);
                return Ok(Ended::Finished);
            }
            Outcome::Interrupted => {
                eprintln!("stopped on request after step {}", progress.last.map(|m| m.step).unwrap_or(0));
                report_paths(&out);
                return Ok(Ended::Stopped);
            }
            Outcome::Killed => {
                let step = progress.last.map(|m| m.step).unwrap_or(0);
                eprintln!(
                    "stopped at once on a second interrupt at step {step}: the workers were killed \
                     without saving; the newest checkpoint on disk is whole (checkpoints are written \
                     atomically); run the same command to resume from it"
                );
                report_paths(&out);
                return Ok(Ended::Killed);
            }
            Outcome::Failed(f) => {
                if f.restartable && spec.restart_count < a.max_restarts {
                    spec.restart_count += 1;
                    eprintln!("{f}\nrestarting the group ({}/{})", spec.restart_count, a.max_restarts);
                    match moco_worker::checkpoint::newest_intact(&out).map(|p| p.checkpoint) {
                        Ok(Some(ck)) => eprintln!("resuming from {} (step {})", ck.dir.display(), ck.step()),
                        _ => eprintln!("no checkpoint yet: the group starts again from step 0"),
                    }
                    continue;
                }
                return Err(LauncherError::Group(format!(
                    "{f}\nall workers were stopped; full logs in {}",
                    logs.display()
                )));
            }
        }
    }
}

/// Where the newest checkpoint and the report are (the workers wrote them).
fn report_paths(out: &Path) {
    if let Ok(Some(ck)) = moco_worker::checkpoint::find_latest(out) {
        eprintln!(
            "checkpoint: {} (step {}); continue with --resume {}",
            ck.dir.display(),
            ck.step(),
            out.display()
        );
    }
    let summary = out.join("summary.md");
    if summary.is_file() {
        eprintln!("report: {} (plots in {})", summary.display(), out.join("plots").display());
    }
}

/// Write a file atomically: temporary file in the same folder, fsync, rename.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| LauncherError::Spawn(format!("writing {}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
