//! [`CudaBackend`]: the `Backend` op set on one NVIDIA GPU.
//!
//! STATUS: compiles and its device-free parts are tested, but it HAS NOT RUN ON A GPU yet.
//! Every op is compared with the CPU reference by `selftest::selftest_cuda` (`worker selftest
//! --device cuda`); until that has passed on a GPU, treat every op here as unverified.
//!
//! - Buffers ([`CudaBuf`]) carry their element type: activations (`zeros`, `act_from_host`)
//!   are fp16 under AMP and fp32 otherwise; master state (`zeros_master`, `from_host`) is
//!   always fp32. Ops accept any mix (see `stage.rs`) and run the kernel instantiation of the
//!   activation type.
//! - Convolutions go through cuDNN (`conv_ops.rs`: NHWC, fp16 with tensor ops or fp32 with FMA,
//!   one plan per shape with the algorithm chosen within a workspace limit), linear layers and
//!   logits through cuBLAS (`gemm_ops.rs`), everything else through the hand-written kernels.
//! - One stream per backend (one backend per worker process); all work, allocations and frees
//!   are ordered on it, so cudarc's per-buffer event tracking is switched off.
//! - All device memory comes from the arena (`memory.rs`): `--vram-limit` is enforced there,
//!   and [`CudaBackend::memory`] / `Backend::peak_bytes` report what was used.
//! - Ops that return `()` cannot return errors: a failure is recorded and returned by the
//!   next fallible call (`errors.rs`); `Backend::sync` waits for the GPU and reports it.
//!   `dispatch.rs` is the `Backend` impl: each method calls its op file and records errors.

mod conv_ops;
mod dispatch;
mod errors;
mod gemm_ops;
mod memory_ops;
mod norm_ops;
mod optim_ops;
mod pointwise_ops;
mod pool_ops;
mod softmax_ops;
mod stage;
mod staging;

use crate::cuda::arena::{human_bytes, MemoryStats};
use crate::cuda::cublas::Blas;
use crate::cuda::launch::Dtype;
use crate::cuda::memory::Pool;
use crate::cuda::{nvrtc, probe, Kernels};
use crate::error::{KernelError, Result};
use cudarc::driver::{CudaContext, CudaStream};
use errors::Deferred;
use std::sync::{Arc, Mutex};

pub use conv_ops::ConvPlanInfo;

/// Settings of a [`CudaBackend`] beyond the device and AMP.
#[derive(Debug, Clone)]
pub struct CudaOptions {
    /// Most bytes the arena may hold (`--vram-limit`): allocations beyond it fail with
    /// `KernelError::OutOfMemory`. `None`: only the device's own memory limits it.
    pub vram_limit: Option<u64>,
    /// Most workspace bytes one cuDNN convolution may use; algorithms needing more are passed
    /// over for slower ones that fit (see `cudnn_conv.rs`).
    pub conv_workspace_limit: usize,
    /// Never choose backward convolution algorithms that use atomics (bitwise repeatable
    /// gradients, somewhat slower).
    pub deterministic: bool,
    /// Folders holding `cuda_fp16.h` for NVRTC; `None`: `nvrtc::default_include_dirs()`.
    pub include_dirs: Option<Vec<String>>,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            vram_limit: None,
            conv_workspace_limit: 256 << 20,
            deterministic: false,
            include_dirs: None,
        }
    }
}

/// The CUDA backend of one worker: one device, one stream, one arena.
pub struct CudaBackend {
    amp: bool,
    ordinal: usize,
    device_name: String,
    options: CudaOptions,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    pool: Arc<Pool>,
    blas: Mutex<Blas>,
    dnn: Mutex<conv_ops::Dnn>,
    /// Pinned host buffers for uploading input batches (`staging.rs`).
    staging: staging::Staging,
    /// The LARS tensor layout on the device (`optim_ops.rs`), built by the first LARS step.
    lars_layout: Mutex<Option<optim_ops::LarsLayout>>,
    errors: Deferred,
}

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda { op, detail: format!("{e:?}") }
}

impl CudaBackend {
    /// The backend on GPU `device_ordinal` (the worker's local rank), with fp16 activations
    /// when `amp`. Fails with `KernelError::NoCuda` (never a panic) when there is no driver,
    /// and with a clear error when the device, NVRTC, cuBLAS or cuDNN is missing.
    pub fn new(device_ordinal: usize, amp: bool, options: CudaOptions) -> Result<Self> {
        probe::probe_driver()?;
        let count = CudaContext::device_count().map_err(driver("cuDeviceGetCount"))?;
        if count <= 0 {
            return Err(KernelError::NoCuda("the NVIDIA driver is installed but reports no GPU".into()));
        }
        if device_ordinal >= count as usize {
            return Err(KernelError::NoCuda(format!(
                "GPU {device_ordinal} was asked for but {count} GPU(s) are visible (CUDA_VISIBLE_DEVICES={})",
                std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
            )));
        }
        let ctx = CudaContext::new(device_ordinal).map_err(driver("cuCtxCreate"))?;
        // SAFETY: event tracking only orders buffers used on several streams. This backend
        // creates exactly one stream, below, and every allocation, kernel, copy, cuDNN/cuBLAS
        // call and free of its buffers is issued on it, so stream order alone is correct. It
        // must be switched off before any allocation (it applies to slices created after it),
        // and it is per `CudaContext` object, which this backend owns alone.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let device_name = ctx.name().unwrap_or_else(|_| format!("GPU {device_ordinal}"));

        let include_dirs = options.include_dirs.clone().unwrap_or_else(nvrtc::default_include_dirs);
        if include_dirs.is_empty() {
            return Err(KernelError::NoNvrtc(format!(
                "no folder with cuda_fp16.h was found for NVRTC; run scripts/setup_gpu.sh (the \
                 programs then find it), set {} to a folder holding it, or install the CUDA toolkit",
                nvrtc::INCLUDE_ENV
            )));
        }
        let kernels = Kernels::load(&ctx, &include_dirs)?;
        let blas = Blas::new(stream.clone())?;
        let dnn = conv_ops::Dnn::new(stream.clone())?;
        let pool = Pool::new(stream.clone(), options.vram_limit);
        if let (Some(limit), Ok(total)) = (options.vram_limit, ctx.total_mem()) {
            if limit > total as u64 {
                tracing::warn!(
                    limit = %human_bytes(limit),
                    device = %human_bytes(total as u64),
                    "--vram-limit is above the device's memory; the device is the real limit"
                );
            }
        }
        tracing::info!(
            device = device_ordinal,
            name = %device_name,
            arch = %kernels.arch,
            amp,
            limit = %options.vram_limit.map_or("none".into(), human_bytes),
            "CUDA backend ready"
        );
        Ok(CudaBackend {
            amp,
            ordinal: device_ordinal,
            device_name,
            options,
            ctx,
            stream,
            kernels,
            pool,
            blas: Mutex::new(blas),
            dnn: Mutex::new(dnn),
            staging: staging::Staging::default(),
            lars_layout: Mutex::new(None),
            errors: Deferred::default(),
        })
    }

    pub fn amp(&self) -> bool {
        self.amp
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The architecture the kernels were compiled for ("sm_86").
    pub fn arch(&self) -> &str {
        &self.kernels.arch
    }

    pub fn options(&self) -> &CudaOptions {
        &self.options
    }

    /// The stream every op of this backend runs on (for NCCL, which must use the same one).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The arena's counters (sizes, peaks, allocations).
    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    /// Forget the peaks, to measure from here (e.g. after start-up).
    pub fn reset_peak(&self) {
        self.pool.reset_peaks();
    }

    /// Frees the arena's cached blocks back to the driver; returns the bytes freed.
    pub fn release_cache(&self) -> u64 {
        self.pool.release_cache()
    }

    /// The element type of activation buffers.
    pub fn act_dtype(&self) -> Dtype {
        if self.amp {
            Dtype::F16
        } else {
            Dtype::F32
        }
    }

    /// Waits for every queued op and reports the first error of any op since the last check.
    pub fn synchronize(&self) -> Result<()> {
        self.errors.check()?;
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))?;
        self.ctx.check_err().map_err(driver("deferred driver error"))?;
        self.errors.check()
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))
    }
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.ordinal)
            .field("name", &self.device_name)
            .field("arch", &self.kernels.arch)
            .field("amp", &self.amp)
            .field("memory", &self.pool.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_reports_a_missing_driver_as_an_error_not_a_panic() {
        let made = std::panic::catch_unwind(|| CudaBackend::new(0, true, CudaOptions::default()).map(|_| ()));
        let made = made.expect("CudaBackend::new must return, not panic, whatever the machine has");
        // With a driver the outcome depends on the device and libraries; it returned.
        if probe::probe_driver().is_err() {
            match made {
                Err(KernelError::NoCuda(msg)) => assert!(msg.contains("libcuda"), "{msg}"),
                other => panic!("without a driver new() must give NoCuda, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_absurd_device_ordinal_is_refused_when_a_driver_exists() {
        if probe::probe_driver().is_ok() {
            let err = CudaBackend::new(1 << 20, true, CudaOptions::default()).map(|_| ()).unwrap_err();
            assert!(matches!(err, KernelError::NoCuda(ref m) if m.contains("visible")), "{err}");
        } else {
            assert!(matches!(
                CudaBackend::new(1 << 20, true, CudaOptions::default()),
                Err(KernelError::NoCuda(_))
            ));
        }
    }
}
