//! `launcher doctor`: can training start on this machine's GPUs? The driver and its CUDA
//! version, each GPU, each library (where it was found and its version, or the command that
//! installs it), a kernel compiled by NVRTC and loaded by the driver, one cuDNN convolution of
//! the model's shapes in each direction, a cuBLAS GemmEx in fp16, an NCCL all-reduce between
//! the local GPUs, and whether the preset's memory plan fits each GPU. Exit 0 only when all
//! of it passed.
//!
//! [`quick`] (libraries, driver, GPUs, versions, memory plan; no kernels) runs before the
//! launcher spawns CUDA workers, so a missing library stops the run with this advice instead
//! of a worker's panic. Ran on the emulated CUDA device only (tests/tests/doctor.rs).

use crate::error::Result;
use clap::Args;
use moco_kernels::cuda::doctor::{self as checks, version_text, DriverInfo};
use moco_kernels::cuda::libs::{discover, loadable, search::cudarc_names, Discovery, Lib, Roots};
use moco_kernels::cuda::module::LoadedAs;
use moco_kernels::shapes::ConvShape;
use moco_proto::resolved::ResolvedConfig;
use moco_worker::config_args::ConfigArgs;
use moco_worker::plan::{MemoryPlan, Verdict};

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// GPUs the run would use [default: every visible GPU].
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Most GPU memory each worker may hold (as for training), e.g. 8GiB.
    #[arg(long, value_parser = moco_worker::plan::parse_vram)]
    pub vram_limit: Option<u64>,
    /// Only the checks the launcher makes before starting workers (no kernels, no collectives).
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The doctor's findings: lines to print, and the problems (each with its fix).
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
    pub driver: Option<DriverInfo>,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        self.lines.push(format!("  ok    {what}: {}", detail.as_ref()));
    }

    fn bad(&mut self, what: &str, detail: impl AsRef<str>, fix: impl AsRef<str>) {
        self.lines.push(format!("  FAIL  {what}: {}", detail.as_ref()));
        self.lines.push(format!("        fix: {}", fix.as_ref()));
        self.problems.push(format!("{what}: {} -> {}", detail.as_ref(), fix.as_ref()));
    }

    fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The problems as one paragraph of advice (for the launcher's refusal).
    pub fn advice(&self) -> String {
        self.problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    }
}

/// The setup command as the user should type it: the checkout's script when the binary runs
/// from one, else its name.
fn setup_command(cuda_major: Option<i32>) -> String {
    let script = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.join(moco_kernels::cuda::libs::SETUP_COMMAND)))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| moco_kernels::cuda::libs::SETUP_COMMAND.to_string());
    match cuda_major {
        Some(m) => format!("{script} --cuda {m}"),
        None => script,
    }
}

/// The pip package that provides `lib` for CUDA `major` (what setup_gpu.sh installs).
pub fn wheel_for(lib: Lib, major: i32) -> &'static str {
    match (lib, major >= 13) {
        (Lib::Nvrtc, false) => "nvidia-cuda-nvrtc-cu12",
        (Lib::Nvrtc, true) => "nvidia-cuda-nvrtc",
        (Lib::Cublas, false) => "nvidia-cublas-cu12",
        (Lib::Cublas, true) => "nvidia-cublas",
        (Lib::Cudnn, false) => "nvidia-cudnn-cu12",
        (Lib::Cudnn, true) => "nvidia-cudnn-cu13",
        (Lib::Nccl, false) => "nvidia-nccl-cu12",
        (Lib::Nccl, true) => "nvidia-nccl-cu13",
        (Lib::Driver, _) => "(the NVIDIA driver is not a pip package)",
    }
}

const DRIVER_FIX: &str = "install the NVIDIA driver (CUDA 12 needs driver >= 525, CUDA 13 needs >= 580; \
     e.g. `sudo ubuntu-drivers install` or your distribution's nvidia-driver package), reboot, and check \
     with `nvidia-smi`; without a GPU train with --device cpu";

fn libraries(rep: &mut Report, d: &Discovery, cuda_major: Option<i32>, nccl_required: bool) {
    rep.note("libraries:");
    let searched = if d.searched.is_empty() {
        "nowhere: no folder to search".to_string()
    } else {
        d.searched.join(", ")
    };
    for lib in Lib::ALL {
        let fix = if lib == Lib::Driver {
            DRIVER_FIX.to_string()
        } else {
            let m = cuda_major.unwrap_or(13);
            format!("{}   (or: pip install {})", setup_command(cuda_major), wheel_for(lib, m))
        };
        if lib == Lib::Nccl && !nccl_required && !(d.get(lib).is_some() && loadable(lib)) {
            rep.note(format!(
                "  warn  {}: not usable; the workers use the TCP ring instead (install: {fix})",
                lib.label()
            ));
            continue;
        }
        match d.get(lib) {
            // The driver section above has already said it is missing, and how to fix it.
            None if lib == Lib::Driver => {
                rep.note(format!("  --    {}: not found (looked in: {searched})", lib.label()))
            }
            None => rep.bad(lib.label(), format!("not found (looked in: {searched})"), fix),
            Some(f) => {
                let version = f.version.clone().map(|v| format!(" (version {v})")).unwrap_or_default();
                let what = format!("{}{version}, from {}", f.path.display(), f.source);
                if !loadable(lib) {
                    rep.bad(
                        lib.label(),
                        format!("{what}, but it cannot be loaded under the names cudarc tries ({})", cudarc_names(lib.stem()).join(", ")),
                        format!("run the launcher or worker directly (they put it on LD_LIBRARY_PATH themselves); \
                                 MOCO_CUDA_DISCOVERY=off disables that; or reinstall with {fix}"),
                    );
                } else if !f.missing_companions.is_empty() {
                    rep.bad(
                        lib.label(),
                        format!("{what}, but {} missing from its folder", f.missing_companions.join(", ")),
                        fix,
                    );
                } else {
                    rep.ok(lib.label(), what);
                }
            }
        }
    }
    match &d.include_dir {
        Some(dir) => rep.ok("cuda_fp16.h (for NVRTC)", dir.display().to_string()),
        None if !moco_kernels::cuda::nvrtc::default_include_dirs().is_empty() => {
            rep.ok("cuda_fp16.h (for NVRTC)", moco_kernels::cuda::nvrtc::default_include_dirs()[0].clone())
        }
        None => rep.bad(
            "cuda_fp16.h (for NVRTC)",
            "not found",
            format!(
                "{}   (or: pip install {}; or set MOCO_CUDA_INCLUDE to a folder holding it)",
                setup_command(cuda_major),
                if cuda_major.unwrap_or(13) >= 13 {
                    "nvidia-cuda-runtime"
                } else {
                    "nvidia-cuda-runtime-cu12"
                }
            ),
        ),
    }
}

/// Libraries, driver, GPUs, the NVRTC/driver versions and the memory plan: no kernels.
/// `want_gpus`: GPUs the run needs (None: any). `r`: the run's config, for the fit.
/// `nccl_required`: false for training, whose workers fall back to the TCP ring without NCCL.
pub fn quick(
    want_gpus: Option<usize>,
    vram_limit: Option<u64>,
    r: Option<(&ResolvedConfig, &str)>,
    nccl_required: bool,
) -> Report {
    let mut rep = Report::default();
    let d = discover(&Roots::from_env());
    let driver = if loadable(Lib::Driver) {
        checks::driver_info()
    } else {
        Err(moco_kernels::KernelError::NoCuda(String::new()))
    };
    let cuda_major = driver.as_ref().ok().map(|i| i.cuda_version / 1000);
    rep.note("driver:");
    match &driver {
        Ok(info) => {
            rep.ok("NVIDIA driver", format!("supports CUDA {}", version_text(info.cuda_version)));
            if info.gpus.is_empty() {
                rep.bad("GPUs", "the driver reports none", "check `nvidia-smi` and CUDA_VISIBLE_DEVICES");
            }
            for g in &info.gpus {
                rep.ok(
                    &format!("GPU {}", g.ordinal),
                    format!(
                        "{}, {:.1} GiB, compute capability {}.{}",
                        g.name,
                        g.total_mem as f64 / (1u64 << 30) as f64,
                        g.cc.0,
                        g.cc.1
                    ),
                );
            }
            if let Some(n) = want_gpus.filter(|&n| n > info.gpus.len()) {
                rep.bad(
                    "GPUs",
                    format!(
                        "{n} asked for, {} visible (CUDA_VISIBLE_DEVICES={})",
                        info.gpus.len(),
                        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
                    ),
                    format!("use --gpus {}", info.gpus.len()),
                );
            }
        }
        Err(e) => {
            let why = match e {
                moco_kernels::KernelError::NoCuda(s) if s.is_empty() => {
                    "libcuda could not be loaded: no NVIDIA driver".to_string()
                }
                other => other.to_string(),
            };
            rep.bad("NVIDIA driver", why, DRIVER_FIX);
        }
    }
    libraries(&mut rep, &d, cuda_major, nccl_required);
    // A newer NVRTC than the driver makes code the driver refuses (cudarc#598).
    if let (Ok(info), Ok((nmaj, nmin))) = (&driver, moco_kernels::cuda::nvrtc::version()) {
        let dmaj = info.cuda_version / 1000;
        if nmaj > dmaj {
            rep.bad(
                "NVRTC and driver",
                format!("NVRTC {nmaj}.{nmin} is newer than the driver's CUDA {}: the driver cannot load what it compiles", version_text(info.cuda_version)),
                format!("{} (installs NVRTC {dmaj}), or update the NVIDIA driver", setup_command(Some(dmaj))),
            );
        } else {
            rep.ok(
                "NVRTC and driver",
                format!("NVRTC {nmaj}.{nmin}, driver CUDA {}", version_text(info.cuda_version)),
            );
        }
    }
    if let (Ok(info), Some((r, preset))) = (&driver, r) {
        rep.note(format!("memory plan of preset {preset}:"));
        let plan = MemoryPlan::compute(r);
        for g in &info.gpus {
            let budget = vram_limit.map_or(g.total_mem, |v| v.min(g.total_mem));
            let verdict = Verdict::new(&r.cfg, &plan, budget);
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let what = format!("GPU {}", g.ordinal);
            let detail = format!(
                "the plan needs {:.2} GiB of {:.2} GiB{}",
                gib(plan.total),
                gib(budget),
                if vram_limit.is_some() { " (--vram-limit)" } else { "" }
            );
            if verdict.fits {
                rep.ok(&what, detail);
            } else {
                let fix = match verdict.largest_valid_batch.or(verdict.largest_batch) {
                    Some(b) => {
                        format!("use --batch {b} or smaller, --recompute or --amp (see `launcher plan`)")
                    }
                    None => "not even a batch of 1 fits: a smaller preset or a bigger GPU".to_string(),
                };
                rep.bad(&what, detail, fix);
            }
        }
    }
    rep.driver = driver.ok();
    rep
}

/// The kernel, cuDNN, cuBLAS and NCCL checks (after [`quick`] passed).
fn full(rep: &mut Report, info: &DriverInfo, gpus: usize, cfg: &moco_proto::config::TrainConfig) {
    rep.note("GPU work:");
    let include = moco_kernels::cuda::nvrtc::default_include_dirs();
    match checks::kernel_check(0, &include) {
        Ok(k) => match k.loaded {
            LoadedAs::Cubin => rep.ok("NVRTC kernel", format!("cast.cu compiled by NVRTC {}.{} for {}, loaded as CUBIN, ran correctly", k.nvrtc.0, k.nvrtc.1, k.arch)),
            LoadedAs::Ptx { cubin_refused } => rep.ok(
                "NVRTC kernel",
                format!("cast.cu compiled for {}, the driver refused the CUBIN ({cubin_refused}); loaded as PTX, ran correctly", k.arch),
            ),
        },
        Err(e) => rep.bad("NVRTC kernel", e.to_string(), setup_command(Some(info.cuda_version / 1000))),
    }
    // ResNet-50's first bottleneck 3x3 convolution at the preset's width and crop, one image.
    let c = ((64.0 * cfg.width).round() as usize).max(1);
    let side = (cfg.image_size / 4).max(4);
    let shape = ConvShape { n: 1, h: side, w: side, c_in: c, c_out: c, k: 3, stride: 1, pad: 1 };
    let label = format!("cuDNN conv 3x3 {c}->{c} at {side}x{side}, fp16");
    for (dir, r) in checks::conv_check(0, &shape, 256 << 20) {
        match r {
            Ok(()) => rep.ok(&format!("{label}, {dir}"), "ran, result checked"),
            Err(e) => rep.bad(
                &format!("{label}, {dir}"),
                e.to_string(),
                setup_command(Some(info.cuda_version / 1000)),
            ),
        }
    }
    match checks::gemm_check(0) {
        Ok(()) => rep.ok("cuBLAS GemmEx fp16 -> fp32", "ran, result checked"),
        Err(e) => rep.bad(
            "cuBLAS GemmEx fp16 -> fp32",
            e.to_string(),
            setup_command(Some(info.cuda_version / 1000)),
        ),
    }
    match checks::nccl_check(gpus) {
        Ok(()) => rep.ok(&format!("NCCL all-reduce between {gpus} GPU(s)"), "ran, sums checked"),
        Err(e) => rep.bad(
            &format!("NCCL all-reduce between {gpus} GPU(s)"),
            e.to_string(),
            format!("{}; or train without NCCL: --nccl off", setup_command(Some(info.cuda_version / 1000))),
        ),
    }
}

/// `launcher doctor`: prints the report; exit code 1 when training cannot start.
pub fn run(a: &DoctorArgs) -> Result<Option<u8>> {
    let cfg = a.config.build()?;
    let preset = a.config.preset_name().to_string();
    // The fit depends on the per-GPU batch, not on the dataset: any size that resolves.
    let world = a.gpus.unwrap_or(1).max(1);
    let resolved = ResolvedConfig::new(&cfg, world, 1 << 20);
    let r = resolved.as_ref().ok();
    let mut rep = quick(a.gpus, a.vram_limit, r.map(|r| (r, preset.as_str())), true);
    if let Err(e) = &resolved {
        rep.bad(&format!("config of preset {preset}"), e.to_string(), "see `launcher plan` for what works");
    }
    if !a.quick && rep.problems.is_empty() {
        if let Some(info) = rep.driver.clone() {
            let gpus = a.gpus.unwrap_or(info.gpus.len()).clamp(1, info.gpus.len().max(1));
            full(&mut rep, &info, gpus, &cfg);
        }
    }
    say!("{}", rep.text());
    if rep.problems.is_empty() {
        say!("doctor: training can start on the GPU{}", if a.quick { " (quick checks only)" } else { "" });
        Ok(None)
    } else {
        say!(
            "doctor: {} problem(s); training on the GPU cannot start:\n{}",
            rep.problems.len(),
            rep.advice()
        );
        Ok(Some(1))
    }
}
