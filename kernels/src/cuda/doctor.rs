//! The GPU checks of `launcher doctor`, each small and returning an error instead of panicking:
//! the driver and its GPUs, a kernel compiled by NVRTC and loaded by the driver (CUBIN, else
//! PTX), one cuDNN convolution in each direction, one cuBLAS GemmEx in fp16 and an NCCL
//! all-reduce between the local GPUs.
//!
//! Run on the emulated CUDA device only (tests/tests/doctor.rs); not yet on a real GPU.

use crate::cuda::cast::Cast;
use crate::cuda::cublas::{Blas, ColMajorGemm};
use crate::cuda::cudnn_conv::{create_handle, ConvPlan};
use crate::cuda::launch::Grid;
use crate::cuda::module::{load_compiled, LoadedAs};
use crate::cuda::{nvrtc, probe, sources};
use crate::error::{KernelError, Result};
use crate::shapes::ConvShape;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::CudaContext;
use half::f16;

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda { op, detail: format!("{e:?}") }
}

/// One GPU as the driver reports it.
#[derive(Debug, Clone)]
pub struct Gpu {
    pub ordinal: usize,
    pub name: String,
    pub total_mem: u64,
    pub cc: (i32, i32),
}

/// The driver: the CUDA version it supports (12040 = 12.4) and its GPUs.
#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub cuda_version: i32,
    pub gpus: Vec<Gpu>,
}

/// "12.4" from 12040.
pub fn version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

/// The driver's CUDA version and every visible GPU. Probes for libcuda first (cudarc panics
/// without it).
pub fn driver_info() -> Result<DriverInfo> {
    probe::probe_driver()?;
    let mut v = 0;
    // SAFETY: libcuda is loaded (probed above); `v` is a valid out-pointer. cuDriverGetVersion
    // needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(KernelError::Cuda { op: "cuDriverGetVersion", detail: format!("{r:?}") });
    }
    use cudarc::driver::result::{self as drv, device};
    drv::init().map_err(driver("cuInit"))?;
    let count = device::get_count().map_err(driver("cuDeviceGetCount"))?;
    let mut gpus = Vec::new();
    // Device queries only, no context: the launcher asks before its workers start, and a
    // context would hold GPU memory (and count against exclusive-process mode) meanwhile.
    for ordinal in 0..count.max(0) as usize {
        let dev = device::get(ordinal as i32).map_err(driver("cuDeviceGet"))?;
        let attr = |a: CUdevice_attribute| {
            // SAFETY: `dev` is a valid device handle from cuDeviceGet after cuInit.
            unsafe { device::get_attribute(dev, a) }.map_err(driver("cuDeviceGetAttribute"))
        };
        gpus.push(Gpu {
            ordinal,
            name: device::get_name(dev).map_err(driver("cuDeviceGetName"))?,
            // SAFETY: as above.
            total_mem: unsafe { device::total_mem(dev) }.map_err(driver("cuDeviceTotalMem"))? as u64,
            cc: (
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
        });
    }
    Ok(DriverInfo { cuda_version: v, gpus })
}

/// How the test kernel got onto the GPU.
#[derive(Debug, Clone)]
pub struct KernelCheck {
    pub arch: String,
    pub nvrtc: (i32, i32),
    pub loaded: LoadedAs,
}

/// Compiles the project's smallest kernel family (`cast.cu`, which includes `cuda_fp16.h`)
/// with NVRTC for GPU `ordinal`, loads it (CUBIN, else PTX) and runs one kernel, checking its
/// result.
pub fn kernel_check(ordinal: usize, include_dirs: &[String]) -> Result<KernelCheck> {
    let nv = nvrtc::version()?;
    if include_dirs.is_empty() {
        return Err(KernelError::NoNvrtc(format!(
            "no folder with cuda_fp16.h was found for NVRTC (set {} or run {})",
            nvrtc::INCLUDE_ENV,
            crate::cuda::libs::SETUP_COMMAND
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
    let (major, minor) = ctx.compute_capability().map_err(driver("compute_capability"))?;
    let arch = nvrtc::arch_for(major, minor);
    let compiled = nvrtc::compile(&sources::CAST, &arch, include_dirs)?;
    let (module, loaded) = load_compiled(&ctx, compiled)?;
    let sms = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(driver("attribute"))?;
    let cast = Cast::load(&module, Grid::for_sm_count(sms.max(1) as u32))?;
    let stream = ctx.default_stream();
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.001 + 1.0 / 3.0).collect();
    let mut x = stream.clone_htod(&host).map_err(driver("memcpy"))?;
    cast.round_to_f16(&stream, &mut x.as_view_mut())?;
    let back = stream.clone_dtoh(&x).map_err(driver("memcpy"))?;
    if let Some(i) = (0..host.len()).find(|&i| back[i] != f16::from_f32(host[i]).to_f32()) {
        return Err(KernelError::Cuda {
            op: "round_to_f16_f32",
            detail: format!("element {i}: got {}, expected {}", back[i], f16::from_f32(host[i]).to_f32()),
        });
    }
    Ok(KernelCheck { arch, nvrtc: nv, loaded })
}

/// Direction of a convolution check.
pub const CONV_DIRECTIONS: [&str; 3] = ["forward", "backward data", "backward filter"];

/// One fp16 cuDNN convolution of shape `s` on GPU `ordinal` in each direction, with the
/// algorithm cuDNN picks within `workspace_limit`. The forward result is compared with a host
/// computation at a few outputs; the backward results must be finite and not all zero.
pub fn conv_check(ordinal: usize, s: &ConvShape, workspace_limit: usize) -> Vec<(&'static str, Result<()>)> {
    match conv_inner(ordinal, s, workspace_limit) {
        Ok(v) => v,
        Err(e) => {
            let text = e.to_string();
            CONV_DIRECTIONS
                .iter()
                .map(|d| (*d, Err(KernelError::Cuda { op: "cudnn", detail: text.clone() })))
                .collect()
        }
    }
}

fn pattern(len: usize, seed: usize) -> Vec<f16> {
    (0..len).map(|i| f16::from_f32((((i * 7 + seed * 13) % 17) as f32 - 8.0) / 16.0)).collect()
}

fn conv_inner(
    ordinal: usize,
    s: &ConvShape,
    workspace_limit: usize,
) -> Result<Vec<(&'static str, Result<()>)>> {
    let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
    let stream = ctx.default_stream();
    let cudnn = create_handle(stream.clone())?;
    let plan = ConvPlan::<f16>::new(&cudnn, s, workspace_limit, false)?;
    let (hx, hw, hy) = (pattern(s.x_len(), 1), pattern(s.w_len(), 2), pattern(s.y_len(), 3));
    let x = stream.clone_htod(&hx).map_err(driver("memcpy"))?;
    let w = stream.clone_htod(&hw).map_err(driver("memcpy"))?;
    let dy = stream.clone_htod(&hy).map_err(driver("memcpy"))?;
    let mut y = stream.alloc_zeros::<f16>(s.y_len()).map_err(driver("alloc"))?;
    let mut dx = stream.alloc_zeros::<f16>(s.x_len()).map_err(driver("alloc"))?;
    let mut dw = stream.alloc_zeros::<f16>(s.w_len()).map_err(driver("alloc"))?;
    let mut ws = stream.alloc_zeros::<u8>(plan.workspace_bytes().max(1)).map_err(driver("alloc"))?;
    let mut out = Vec::new();

    let fwd =
        plan.fwd(&x.as_view(), &w.as_view(), &mut y.as_view_mut(), &mut ws.as_view_mut()).and_then(|()| {
            let got = stream.clone_dtoh(&y).map_err(driver("memcpy"))?;
            check_fwd(s, &hx, &hw, &got)
        });
    out.push((CONV_DIRECTIONS[0], fwd));
    let bd = plan
        .bwd_data(&dy.as_view(), &w.as_view(), &mut dx.as_view_mut(), &mut ws.as_view_mut())
        .and_then(|()| nonzero_finite("conv bwd data", &stream.clone_dtoh(&dx).map_err(driver("memcpy"))?));
    out.push((CONV_DIRECTIONS[1], bd));
    let bf = plan
        .bwd_filter(&x.as_view(), &dy.as_view(), 0.0, &mut dw.as_view_mut(), &mut ws.as_view_mut())
        .and_then(|()| nonzero_finite("conv bwd filter", &stream.clone_dtoh(&dw).map_err(driver("memcpy"))?));
    out.push((CONV_DIRECTIONS[2], bf));
    Ok(out)
}

fn nonzero_finite(op: &'static str, v: &[f16]) -> Result<()> {
    if v.iter().any(|x| !x.to_f32().is_finite()) {
        return Err(KernelError::Cuda { op, detail: "non-finite values in the result".into() });
    }
    if v.iter().all(|x| x.to_f32() == 0.0) {
        return Err(KernelError::Cuda { op, detail: "the result is all zeros".into() });
    }
    Ok(())
}

/// NHWC input, OHWI weights: output (0, oy, ox, co) computed on the host at a few places.
fn check_fwd(s: &ConvShape, x: &[f16], w: &[f16], y: &[f16]) -> Result<()> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let picks = [(0, 0, 0), (oh / 2, ow / 2, s.c_out / 2), (oh - 1, ow - 1, s.c_out - 1)];
    for (oy, ox, co) in picks {
        let mut acc = 0f32;
        for ky in 0..s.k {
            for kx in 0..s.k {
                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                    continue;
                }
                for ci in 0..s.c_in {
                    let xv = x[((iy as usize) * s.w + ix as usize) * s.c_in + ci].to_f32();
                    let wv = w[((co * s.k + ky) * s.k + kx) * s.c_in + ci].to_f32();
                    acc += xv * wv;
                }
            }
        }
        let got = y[(oy * ow + ox) * s.c_out + co].to_f32();
        if (got - acc).abs() > 1e-2 * acc.abs().max(1.0) {
            return Err(KernelError::Cuda {
                op: "conv fwd",
                detail: format!("output ({oy},{ox},{co}) is {got}, the host computes {acc}"),
            });
        }
    }
    Ok(())
}

/// One cuBLAS GemmEx with fp16 inputs and fp32 accumulation and output (the projector's
/// GEMMs under AMP), compared with the host.
pub fn gemm_check(ordinal: usize) -> Result<()> {
    let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
    let stream = ctx.default_stream();
    let blas = Blas::new(stream.clone())?;
    let (m, n, k) = (64usize, 48usize, 32usize);
    let (ha, hb) = (pattern(m * k, 4), pattern(k * n, 5));
    let a = stream.clone_htod(&ha).map_err(driver("memcpy"))?;
    let b = stream.clone_htod(&hb).map_err(driver("memcpy"))?;
    let mut c = stream.alloc_zeros::<f32>(m * n).map_err(driver("alloc"))?;
    let g = ColMajorGemm { transa: false, transb: false, m, n, k, lda: m, ldb: k, ldc: m };
    blas.gemm_f16_to_f32("doctor gemm", g, 1.0, &a.as_view(), &b.as_view(), 0.0, &mut c.as_view_mut())?;
    let got = stream.clone_dtoh(&c).map_err(driver("memcpy"))?;
    for (i, j) in [(0, 0), (m / 2, n / 3), (m - 1, n - 1)] {
        let want: f32 = (0..k).map(|p| ha[i + p * m].to_f32() * hb[p + j * k].to_f32()).sum();
        let v = got[i + j * m];
        if (v - want).abs() > 1e-3 * want.abs().max(1.0) {
            return Err(KernelError::Cuda {
                op: "cublasGemmEx",
                detail: format!("C[{i},{j}] is {v}, the host computes {want}"),
            });
        }
    }
    Ok(())
}

/// An NCCL all-reduce (sum) of a small fp32 buffer between GPUs `0..gpus`, one thread per GPU
/// in this process, checked on every GPU.
pub fn nccl_check(gpus: usize) -> Result<()> {
    crate::cuda::nccl::require_nccl()?;
    let id = crate::cuda::nccl::NcclId::new()?;
    let bytes = id.to_bytes();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..gpus)
            .map(|rank| {
                scope.spawn(move || -> Result<()> {
                    let ctx = CudaContext::new(rank).map_err(driver("cuCtxCreate"))?;
                    ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
                    let stream = ctx.default_stream();
                    let id = crate::cuda::nccl::NcclId::from_bytes(&bytes)?;
                    let comm = cudarc::nccl::Comm::from_rank(stream.clone(), rank, gpus, id.into_inner())
                        .map_err(|e| crate::cuda::nccl::nccl_err("ncclCommInitRank", e))?;
                    let host: Vec<f32> = (0..256).map(|i| (i + rank) as f32).collect();
                    let mut buf = stream.clone_htod(&host).map_err(driver("memcpy"))?;
                    comm.all_reduce_in_place(&mut buf, &cudarc::nccl::ReduceOp::Sum)
                        .map_err(|e| crate::cuda::nccl::nccl_err("ncclAllReduce", e))?;
                    let got = stream.clone_dtoh(&buf).map_err(driver("memcpy"))?;
                    let r_sum = (gpus * (gpus - 1) / 2) as f32;
                    match (0..got.len()).find(|&i| got[i] != i as f32 * gpus as f32 + r_sum) {
                        Some(i) => Err(KernelError::Cuda {
                            op: "ncclAllReduce",
                            detail: format!("rank {rank}: element {i} is {}", got[i]),
                        }),
                        None => Ok(()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(KernelError::Cuda { op: "nccl", detail: "a rank panicked".into() })
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}
