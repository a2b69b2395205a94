//! `launcher bench`: the MoCo step's speed and memory, in this process, on one rank.
//!
//! ```text
//! launcher bench --preset tiny --device cpu --steps 20
//! launcher bench --preset optimized --device cuda --batch 64 --accumulation 1 --feed pool
//! ```
//!
//! Builds the preset's model on the chosen backend (world 1, the local collective), feeds it
//! batches of the chosen data through the real loader, runs `--warmup` untimed and `--steps`
//! timed optimiser steps (each ended by a device synchronize), and prints the median step time,
//! images/s, peak memory (GPU: the arena's peak of live buffers; CPU: the process's peak RSS),
//! the share of the step per phase (exclusive span times from `moco_worker::trace`), and the
//! loader's own rate next to what the step consumes. The last line on stdout is one JSON object
//! with the keys of scripts/pytorch_reference.py's line (scripts/compare.sh joins them).
//! `--trace FILE` writes the steps' Chrome trace; `--results FILE` appends a markdown section.

mod emulated;
mod report;
pub mod steps;

use crate::cli::Device;
use crate::error::{LauncherError, Result};
use clap::{Args, ValueEnum};
use moco_kernels::cpu::Cpu;
use moco_kernels::cuda::{CudaBackend, CudaOptions};
use moco_kernels::{Backend, KernelError};
use moco_proto::resolved::{optimizer_name, ResolvedConfig};
use moco_worker::collective::{AsComm, LocalCollective};
use moco_worker::config_args::ConfigArgs;
use moco_worker::data::folder::DataArgs;
use moco_worker::data::Dataset;
use moco_worker::moco::Moco;
use moco_worker::plan::{MemoryPlan, Source};
use moco_worker::train::metrics::peak_rss_bytes;
use moco_worker::train::Schedule;
use moco_worker::{trace, WorkerError};
use report::{human, Figures};
use serde_json::{json, Map, Value};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use steps::Feed;

/// Exit status when the run does not fit the GPU memory (or `--vram-limit`): the JSON line says
/// `"fits": false`, so a script searching for the largest batch can tell it from a failure.
pub const EXIT_DOES_NOT_FIT: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedKind {
    /// The real loader augments while the step runs (as in training).
    Loader,
    /// A few loader batches made before timing, reused: the step alone (as the PyTorch reference).
    Pool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Where the step runs (`auto`: CUDA when a driver is found).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Timed optimiser steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Untimed optimiser steps first (allocations, cuDNN plans, caches).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Compute threads on the CPU [default: every core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tiles: `synthetic[:N[:SIZE]]` or a folder.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Where the timed steps' batches come from.
    #[arg(long, value_enum, default_value = "loader")]
    pub feed: FeedKind,
    /// Augmentation threads of the loader.
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    /// Batches timed for the loader's own rate (measured alone, before the steps; 0 skips it).
    #[arg(long, default_value_t = 8)]
    pub loader_batches: usize,
    /// GPU number.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Most device memory the run may hold (e.g. 8GiB emulates an 8 GB card on a bigger one).
    #[arg(long, value_parser = moco_worker::plan::parse_vram)]
    pub vram_limit: Option<u64>,
    /// Write a Chrome-trace JSON of every step's phases here (chrome://tracing, Perfetto).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Append the figures as a markdown section to this file (e.g. results/DATE-bench.md).
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Which backend the bench runs on; `auto` is CUDA when libcuda loads.
fn pick_device(d: Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda => "cuda",
        Device::Auto => {
            if moco_kernels::cuda::probe_driver().is_ok() {
                "cuda"
            } else {
                "cpu"
            }
        }
    }
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let device = pick_device(a.device);
    if device == "cuda" {
        // Fail before rendering data and measuring the loader when there is no driver at all.
        moco_kernels::cuda::probe_driver().map_err(no_cuda)?;
    }
    if a.steps == 0 {
        return Err(LauncherError::Spawn("--steps must be at least 1".into()));
    }
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .map_err(|e| LauncherError::Spawn(format!("--threads {t}: {e}")))?;
    }
    let guard = trace::init(a.trace.as_deref(), 0)?;
    let cfg = a.config.build()?;
    let ds = moco_worker::session::data::open_data(&a.data, &DataArgs::default(), &cfg, None, false)?;
    // What the process holds before the model (the tiles included): the step's own host memory
    // is the peak minus this.
    let rss_baseline = current_rss_bytes();
    let r = ResolvedConfig::new(&cfg, 1, ds.len())?;
    let cfg = r.cfg.clone();
    eprintln!("{}", r.summary());

    let loader_rate = if a.loader_batches == 0 {
        None
    } else {
        eprintln!(
            "measuring the loader alone ({} batches, {} thread(s))...",
            a.loader_batches, a.loader_threads
        );
        Some(steps::loader_pairs_per_s(ds.clone(), &cfg, a.loader_threads, a.loader_batches)?)
    };

    let mut fields = Map::new();
    let set = |m: &mut Map<String, Value>, k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    set(&mut fields, "bench", json!("moco_rs"));
    set(&mut fields, "device", json!(device));
    set(&mut fields, "preset", json!(a.config.preset_name()));
    set(&mut fields, "batch", json!(cfg.batch));
    set(&mut fields, "accumulation", json!(cfg.accumulation));
    set(&mut fields, "image_size", json!(cfg.image_size));
    set(&mut fields, "width", json!(cfg.width));
    set(&mut fields, "queue", json!(cfg.queue_size));
    set(&mut fields, "proj_hidden", json!(cfg.proj_hidden));
    set(&mut fields, "dim", json!(cfg.dim));
    set(&mut fields, "pred_hidden", json!(cfg.pred_hidden));
    set(&mut fields, "optimizer", json!(optimizer_name(&cfg)));
    set(&mut fields, "bn_mode", serde_json::to_value(cfg.bn_mode).unwrap_or(Value::Null));
    set(&mut fields, "shuffle_groups", json!(cfg.shuffle_groups));
    set(&mut fields, "temperature", json!(round6(f64::from(cfg.temperature))));
    set(&mut fields, "amp", json!(cfg.amp));
    // The model computes in NHWC on both backends.
    set(&mut fields, "channels_last", json!(true));
    set(&mut fields, "recompute", json!(cfg.recompute));
    set(&mut fields, "steps", json!(a.steps));
    set(&mut fields, "warmup", json!(a.warmup));
    set(
        &mut fields,
        "feed",
        json!(match a.feed {
            FeedKind::Loader => "loader",
            FeedKind::Pool => "pool",
        }),
    );
    set(&mut fields, "loader_threads", json!(a.loader_threads));
    set(&mut fields, "dataset", json!(a.data));
    set(&mut fields, "dataset_size", json!(ds.len()));
    set(&mut fields, "load_average", json!(report::load_average()));
    set(&mut fields, "baseline_rss_bytes", json!(rss_baseline));

    let a_steps = a.steps;
    let ctx = Ctx { a, cfg: &cfg, r: &r, ds, guard: &guard, loader_rate };
    let result = match device {
        "cpu" => {
            set(&mut fields, "device_name", json!(report::cpu_model()));
            set(&mut fields, "threads", json!(rayon::current_num_threads()));
            ctx.measure(Cpu { amp: cfg.amp }, fields.clone(), &mut |_| {}, &|_| {
                (peak_rss_bytes(), "process_peak_rss", None)
            })
        }
        _ => {
            let options = CudaOptions { vram_limit: a.vram_limit, ..CudaOptions::default() };
            let be = CudaBackend::new(a.gpu, cfg.amp, options).map_err(no_cuda)?;
            set(&mut fields, "device_name", json!(be.device_name()));
            set(&mut fields, "arch", json!(be.arch()));
            set(&mut fields, "threads", json!(rayon::current_num_threads()));
            set(&mut fields, "vram_limit_bytes", json!(a.vram_limit));
            // The memory plan's prediction for this config, to calibrate it against the measured
            // peak: the part counted from shapes is what the arena holds; the rest (cuDNN
            // workspace, context) are allowances the arena does not see.
            let plan = MemoryPlan::compute(&r);
            let shapes: u64 =
                plan.components.iter().filter(|c| c.source == Source::Shapes).map(|c| c.bytes).sum();
            set(&mut fields, "planned_peak_bytes", json!(plan.total));
            set(&mut fields, "planned_shapes_bytes", json!(shapes));
            let emulated = moco_kernels::cuda::emulator::is_emulated();
            set(&mut fields, "emulated", json!(emulated));
            if emulated {
                // Event timing would add host waits of its own to the counters, and the
                // emulator's times say nothing about a GPU's anyway.
                eprintln!("note: the CUDA libraries are the emulated device (kernels/emu): the times below are the CPU's, the counters are the step's structure");
            } else {
                match moco_worker::trace::cuda_clock::CudaClock::new(be.stream().clone(), guard.host_now_us())
                {
                    Ok(clock) => guard.set_device_clock(Box::new(clock)),
                    Err(e) => eprintln!("warning: phases timed on the host, not with CUDA events: {e}"),
                }
            }
            let mut counters_before = None;
            let measured = ctx.measure(
                be,
                fields.clone(),
                &mut |m: &Moco<CudaBackend>| {
                    m.be.reset_peak();
                    counters_before = moco_kernels::cuda::emulator::counters_json();
                },
                &|be: &CudaBackend| {
                    let mem = be.memory();
                    (mem.peak_live, "arena_peak_live", Some(mem.peak_reserved))
                },
            );
            measured.map(|mut figures| {
                let after = moco_kernels::cuda::emulator::counters_json();
                if let (Some(b), Some(a)) = (counters_before, after) {
                    if let Some(v) = emulated::per_step(&b, &a, a_steps) {
                        eprint!("{}", emulated::table(&v));
                        figures.fields.insert("emulator_per_step".into(), v);
                    }
                }
                figures
            })
        }
    };
    let figures = match result {
        Ok(f) => f,
        Err(e) if is_out_of_memory(&e) => {
            fields.insert("fits".into(), json!(false));
            fields.insert("error".into(), json!(e.to_string()));
            say!("{}", Value::Object(fields));
            eprintln!("error: {e}");
            eprintln!(
                "the run does not fit{}",
                a.vram_limit.map(|l| format!(" in --vram-limit {}", human(l))).unwrap_or_default()
            );
            drop(guard);
            std::process::exit(i32::from(EXIT_DOES_NOT_FIT));
        }
        Err(e) => return Err(e),
    };
    if guard.lost() > 0 {
        eprintln!(
            "warning: {} span interval(s) could not be timed and are missing from the phases",
            guard.lost()
        );
    }
    say_part!("{}", figures.table());
    let line = figures.json();
    say!("{line}");
    if let Some(path) = &a.results {
        let command: Vec<String> = std::env::args().collect();
        append(path, &figures.markdown(&command.join(" "), &report::machine_line()))?;
        eprintln!("appended to {}", path.display());
    }
    if let Some(t) = &a.trace {
        guard.finish()?;
        eprintln!("trace written to {}", t.display());
    }
    Ok(())
}

/// Peak memory, what kind of figure it is, and (GPU) the peak the allocator reserved.
type Memory = (u64, &'static str, Option<u64>);

struct Ctx<'a> {
    a: &'a BenchArgs,
    cfg: &'a moco_proto::TrainConfig,
    r: &'a ResolvedConfig,
    ds: Arc<dyn Dataset>,
    guard: &'a trace::Guard,
    loader_rate: Option<f64>,
}

impl Ctx<'_> {
    /// Build the model on `be`, run the steps, gather the figures.
    fn measure<B: Backend>(
        &self,
        be: B,
        fields: Map<String, Value>,
        after_warmup: &mut dyn FnMut(&Moco<B>),
        memory: &dyn Fn(&B) -> Memory,
    ) -> Result<Figures> {
        let (a, cfg) = (self.a, self.cfg);
        let mut moco = Moco::new(be, cfg, self.ds.bands(), 0, 1)?;
        let loader = moco_worker::session::data::loader(
            self.ds.clone(),
            cfg,
            0,
            1,
            a.loader_threads,
            Default::default(),
        )?;
        let mut feed = match a.feed {
            FeedKind::Loader => Feed::Loader { loader, current: None },
            FeedKind::Pool => Feed::pool(loader, 4)?,
        };
        let sched = Schedule {
            peak_lr: self.r.batching.scaled_lr,
            warmup_epochs: cfg.warmup_epochs as f64,
            epochs: cfg.epochs as f64,
            steps_per_epoch: self.r.steps_per_epoch as u64,
            accumulation: cfg.accumulation,
            m0: cfg.momentum as f64,
            m_cosine: cfg.momentum_cosine,
            images_per_step: self.r.batching.effective_batch as u64,
        };
        let local = LocalCollective;
        let comm = AsComm(&local);
        eprintln!("running {} warm-up and {} timed steps...", a.warmup, a.steps);
        let times = steps::timed_steps(
            &mut moco,
            &comm,
            &mut feed,
            &sched,
            a.warmup,
            a.steps,
            self.guard,
            after_warmup,
        )?;
        let (peak, kind, reserved) = memory(&moco.be);
        let mut fields = fields;
        if let Some(r) = reserved {
            fields.insert("peak_reserved_bytes".into(), json!(r));
        }
        fields.insert("last_loss".into(), json!(round6(f64::from(times.last_loss))));
        fields.insert("skipped_steps".into(), json!(times.skipped));
        Ok(Figures {
            fields,
            median_step_s: steps::median(&times.step_s),
            step_s: times.step_s,
            phase_s: self.guard.phase_seconds(),
            images_per_step: cfg.batch * cfg.accumulation,
            loader_pairs_per_s: self.loader_rate,
            peak_memory_bytes: peak,
            peak_memory_kind: kind,
        })
    }
}

/// `--device cuda` without a usable CUDA backend: say so, measure nothing.
fn no_cuda(e: KernelError) -> LauncherError {
    match e {
        KernelError::NoCuda(why) | KernelError::NoNvrtc(why) => LauncherError::Spawn(format!(
            "--device cuda: the CUDA backend cannot start: {why}. Nothing was measured; run \
             `launcher bench --device cpu` for the CPU figures"
        )),
        other => LauncherError::Worker(WorkerError::Kernel(other)),
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn is_out_of_memory(e: &LauncherError) -> bool {
    matches!(e, LauncherError::Worker(WorkerError::Kernel(KernelError::OutOfMemory(_))))
}

/// Resident set size now (VmRSS), to subtract what the process held before the model.
fn current_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn append(path: &std::path::Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| {
        LauncherError::Worker(WorkerError::io(format!("appending to {}", path.display()), e))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}
