//! Loading every kernel family for one device (compiled, not yet run on a GPU).
//!
//! At start-up each `.cu` source is compiled with NVRTC for the device's own architecture to
//! a CUBIN (see `nvrtc.rs` for why not PTX), loaded as a module, and every kernel of the family
//! looked up once into a typed field. Call sites then use typed methods such as
//! `kernels.bn.apply(..)`; no kernel is found by a name string after this point.

use crate::cuda::launch::{Grid, KernelDef};
use crate::cuda::sources::KernelSource;
use crate::cuda::{batchnorm, cast, elementwise, l2norm, nvrtc, optim, pool, queue, softmax};
use crate::error::{KernelError, Result};
use cudarc::driver::{sys::CUdevice_attribute, CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// One `.cu` file and the kernels the Rust side expects in it.
#[derive(Debug)]
pub struct Family {
    pub source: KernelSource,
    pub defs: &'static [&'static KernelDef],
}

/// Every kernel family. The CI compile test walks this list (and checks that it names every
/// `.cu` file in kernels/cu), so a new family is compiled and signature-checked once it is
/// listed here.
pub const FAMILIES: [Family; 8] = [
    Family { source: batchnorm::SOURCE, defs: batchnorm::DEFS },
    Family { source: elementwise::SOURCE, defs: elementwise::DEFS },
    Family { source: pool::SOURCE, defs: pool::DEFS },
    Family { source: l2norm::SOURCE, defs: l2norm::DEFS },
    Family { source: softmax::SOURCE, defs: softmax::DEFS },
    Family { source: optim::SOURCE, defs: optim::DEFS },
    Family { source: cast::SOURCE, defs: cast::DEFS },
    Family { source: queue::SOURCE, defs: queue::DEFS },
];

/// All hand-written kernels, loaded for one device.
#[derive(Debug)]
pub struct Kernels {
    /// The architecture the kernels were compiled for, e.g. "sm_86".
    pub arch: String,
    pub bn: batchnorm::BatchNorm,
    pub elementwise: elementwise::Elementwise,
    pub pool: pool::Pool,
    pub l2norm: l2norm::L2Norm,
    pub softmax: softmax::Softmax,
    pub optim: optim::Optim,
    pub cast: cast::Cast,
    pub queue: queue::Queue,
}

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda { op, detail: format!("{e:?}") }
}

/// How a module got onto the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedAs {
    /// Machine code for the device's own architecture (no JIT).
    Cubin,
    /// The CUBIN was refused (the reason); the driver JIT-compiled the PTX instead.
    Ptx { cubin_refused: String },
}

/// Loads a compilation's CUBIN, and when the driver refuses it, its PTX. When both are refused
/// the error names both reasons and, where NVRTC is newer than the driver, the fix.
pub fn load_compiled(
    ctx: &Arc<CudaContext>,
    compiled: nvrtc::Compiled,
) -> Result<(Arc<CudaModule>, LoadedAs)> {
    let cubin_err = match ctx.load_module(Ptx::from_binary(compiled.cubin)) {
        Ok(m) => return Ok((m, LoadedAs::Cubin)),
        Err(e) => format!("{e:?}"),
    };
    tracing::warn!(reason = %cubin_err, "the driver refused the CUBIN; trying the PTX");
    match ctx.load_module(Ptx::from_src(compiled.ptx)) {
        Ok(m) => Ok((m, LoadedAs::Ptx { cubin_refused: cubin_err })),
        Err(e) => {
            let mut detail = format!("the driver refused the CUBIN ({cubin_err}) and the PTX ({e:?})");
            let mut drv = 0;
            // SAFETY: a context exists, so libcuda is loaded; `drv` is a valid out-pointer.
            let ok = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut drv) }
                == cudarc::driver::sys::CUresult::CUDA_SUCCESS;
            if let (true, Ok((major, minor))) = (ok, nvrtc::version()) {
                if (major, minor) > (drv / 1000, drv % 1000 / 10) {
                    detail.push_str(&format!(
                        ": NVRTC {major}.{minor} is newer than the driver's CUDA {}.{}; install the NVRTC \
                         of the driver's CUDA major with {} (it picks the wheels matching the driver), \
                         or update the NVIDIA driver",
                        drv / 1000,
                        drv % 1000 / 10,
                        crate::cuda::libs::SETUP_COMMAND
                    ));
                }
            }
            Err(KernelError::Cuda { op: "load_module", detail })
        }
    }
}

/// Compiles one family for `arch` and loads it into `ctx`.
fn load_family(
    ctx: &Arc<CudaContext>,
    source: &KernelSource,
    arch: &str,
    include_dirs: &[String],
) -> Result<Arc<CudaModule>> {
    let compiled = nvrtc::compile(source, arch, include_dirs)?;
    if !compiled.log.trim().is_empty() {
        tracing::debug!(file = source.file, arch, log = %compiled.log, "NVRTC messages");
    }
    load_compiled(ctx, compiled).map(|(m, _)| m)
}

impl Kernels {
    /// Compiles and loads every family for the device of `ctx`. `include_dirs` must let NVRTC
    /// find `cuda_fp16.h` (see [`nvrtc::default_include_dirs`]). The caller has already
    /// created `ctx`, so the driver is known to be present (see `probe::probe_driver`).
    pub fn load(ctx: &Arc<CudaContext>, include_dirs: &[String]) -> Result<Self> {
        let (major, minor) = ctx.compute_capability().map_err(driver("compute_capability"))?;
        let arch = nvrtc::arch_for(major, minor);
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("attribute"))?;
        let grid = Grid::for_sm_count(sms.max(1) as u32);
        let load = |f: &Family| load_family(ctx, &f.source, &arch, include_dirs);
        let [bn, ew, pl, l2, sm, op, ca, qu] = &FAMILIES;
        Ok(Kernels {
            bn: batchnorm::BatchNorm::load(&load(bn)?, grid)?,
            elementwise: elementwise::Elementwise::load(&load(ew)?, grid)?,
            pool: pool::Pool::load(&load(pl)?, grid)?,
            l2norm: l2norm::L2Norm::load(&load(l2)?, grid)?,
            softmax: softmax::Softmax::load(&load(sm)?, grid)?,
            optim: optim::Optim::load(&load(op)?, grid)?,
            cast: cast::Cast::load(&load(ca)?, grid)?,
            queue: queue::Queue::load(&load(qu)?)?,
            arch,
        })
    }
}
