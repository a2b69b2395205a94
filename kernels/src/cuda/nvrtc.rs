//! Compiling the kernel sources with NVRTC (compiled, not yet run on a GPU; the compilation
//! itself runs without a GPU and is what `tests/cuda_compile.rs` checks in CI).
//!
//! At run time each source is compiled for the device's own architecture (`sm_XY`) to a CUBIN,
//! not to PTX: a driver older than the NVRTC that produced a PTX file refuses it
//! (CUDA_ERROR_UNSUPPORTED_PTX_VERSION, cudarc#598), whereas machine code for the device's own
//! architecture needs no JIT. The same call also returns the PTX, which the CI test inspects.
//!
//! cudarc's safe `compile_ptx_with_opts` cannot pass in-memory headers nor return a CUBIN, so
//! this module drives `cudarc::nvrtc::sys` directly.

use crate::cuda::sources::{KernelSource, COMMON_HEADER};
use crate::error::{KernelError, Result};
use cudarc::nvrtc::sys;
use std::ffi::{c_char, c_int, CString};
use std::path::Path;

/// Environment variable naming a folder that holds `cuda_fp16.h` (checked first).
pub const INCLUDE_ENV: &str = "MOCO_CUDA_INCLUDE";
/// Set by `scripts/setup_nvrtc.sh` to the PyPI wheel's include folder (checked second).
pub const WHEEL_INCLUDE_ENV: &str = "MOCO_NVRTC_INCLUDE";

/// What one NVRTC compilation produced.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The PTX text (for inspection: entry names, parameters, ptxas reports).
    pub ptx: String,
    /// Machine code for the requested `sm_XY` architecture; what the driver loads.
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings); empty when the source compiled cleanly.
    pub log: String,
}

/// `true` when a `libnvrtc` that cudarc can open is on the library path. cudarc panics on the
/// first NVRTC call when it is not, so every entry point here checks this first.
pub fn nvrtc_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the candidate file names and drops the
    // handles; it calls no NVRTC function and has no preconditions.
    unsafe { sys::is_culib_present() }
}

/// The `--gpu-architecture` value for a compute capability, e.g. (8, 6) -> "sm_86".
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Folders to pass as `--include-path` so `#include <cuda_fp16.h>` resolves: the two
/// environment variables above, then `$CUDA_HOME/include`, `$CUDA_PATH/include` and
/// `/usr/local/cuda/include`, keeping only folders that hold `cuda_fp16.h`.
pub fn default_include_dirs() -> Vec<String> {
    let mut candidates: Vec<String> = Vec::new();
    for var in [INCLUDE_ENV, WHEEL_INCLUDE_ENV] {
        if let Ok(dir) = std::env::var(var) {
            candidates.push(dir);
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(root) = std::env::var(var) {
            candidates.push(format!("{root}/include"));
        }
    }
    candidates.push("/usr/local/cuda/include".to_string());
    candidates.retain(|dir| Path::new(dir).join("cuda_fp16.h").is_file());
    candidates.dedup();
    candidates
}

/// The NVRTC options every kernel is compiled with. No fast-math: the kernels are compared
/// with the CPU reference, and `expf`/division precision matters more than the few cycles.
/// `-lineinfo` lets profilers map instructions to source lines at no run-time cost.
fn options(arch: &str, include_dirs: &[String]) -> Vec<String> {
    let mut opts =
        vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string(), "-lineinfo".to_string()];
    opts.extend(include_dirs.iter().map(|d| format!("--include-path={d}")));
    opts
}

/// Destroys the NVRTC program on every exit path.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful nvrtcCreateProgram and is destroyed only here.
        // A failure to destroy leaks a little host memory; nothing useful can be done in drop.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

fn check(op: &'static str, r: sys::nvrtcResult) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(KernelError::Cuda { op, detail: format!("{r:?}") })
    }
}

/// Reads a NUL-terminated NVRTC output of `size` bytes through `get`.
fn read_output(
    op: &'static str,
    size: usize,
    get: impl FnOnce(*mut c_char) -> sys::nvrtcResult,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    check(op, get(buf.as_mut_ptr().cast()))?;
    Ok(buf)
}

fn nul_terminated_to_string(mut bytes: Vec<u8>) -> String {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles one kernel family for `arch` ("sm_86"), with `common.cuh` supplied in memory.
/// A compile error comes back as `KernelError::Compile` carrying NVRTC's full log.
pub fn compile(source: &KernelSource, arch: &str, include_dirs: &[String]) -> Result<Compiled> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc(
            "libnvrtc was not found on the library path (run scripts/setup_nvrtc.sh and \
             export what it prints, or install the CUDA toolkit)"
                .to_string(),
        ));
    }
    let to_c = |s: &str| {
        CString::new(s).map_err(|_| KernelError::Cuda { op: "nvrtc", detail: format!("NUL byte in {s:?}") })
    };
    let src = to_c(source.text)?;
    let name = to_c(source.file)?;
    let header_text = to_c(COMMON_HEADER.text)?;
    let header_name = to_c(COMMON_HEADER.file)?;
    let headers = [header_text.as_ptr()];
    let header_names = [header_name.as_ptr()];

    let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is a live NUL-terminated CString (or an array of them) that
    // outlives the program: NVRTC copies the sources and headers during creation.
    let created = unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            headers.len() as c_int,
            headers.as_ptr(),
            header_names.as_ptr(),
        )
    };
    check("nvrtcCreateProgram", created)?;
    let prog = Program(raw);

    let opts: Vec<CString> = options(arch, include_dirs).iter().map(|o| to_c(o)).collect::<Result<_>>()?;
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: prog.0 is a live program; opt_ptrs holds opt_ptrs.len() pointers to live
    // NUL-terminated strings (opts outlives the call).
    let compiled = unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };

    let mut log_size = 0usize;
    // SAFETY: prog.0 is live; log_size is a valid out-pointer.
    check("nvrtcGetProgramLogSize", unsafe { sys::nvrtcGetProgramLogSize(prog.0, &mut log_size) })?;
    // SAFETY: the buffer has the log_size bytes NVRTC just reported for this program.
    let log = read_output("nvrtcGetProgramLog", log_size, |p| unsafe { sys::nvrtcGetProgramLog(prog.0, p) })?;
    let log = nul_terminated_to_string(log);
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(KernelError::Compile {
            kernel: source.file.to_string(),
            arch: arch.to_string(),
            log: format!("{compiled:?}\n{log}"),
        });
    }

    let mut ptx_size = 0usize;
    // SAFETY: prog.0 is live and compiled; ptx_size is a valid out-pointer.
    check("nvrtcGetPTXSize", unsafe { sys::nvrtcGetPTXSize(prog.0, &mut ptx_size) })?;
    // SAFETY: the buffer has the ptx_size bytes NVRTC just reported for this program.
    let ptx = read_output("nvrtcGetPTX", ptx_size, |p| unsafe { sys::nvrtcGetPTX(prog.0, p) })?;

    let mut cubin_size = 0usize;
    // SAFETY: prog.0 is live and compiled for a real sm_XY architecture, so a CUBIN exists.
    check("nvrtcGetCUBINSize", unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut cubin_size) })?;
    // SAFETY: the buffer has the cubin_size bytes NVRTC just reported for this program.
    let cubin = read_output("nvrtcGetCUBIN", cubin_size, |p| unsafe { sys::nvrtcGetCUBIN(prog.0, p) })?;

    Ok(Compiled { ptx: nul_terminated_to_string(ptx), cubin, log })
}

/// NVRTC's version (major, minor), for logs and error messages.
pub fn version() -> Result<(i32, i32)> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc("libnvrtc was not found on the library path".into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present (checked above); both out-pointers are valid.
    check("nvrtcVersion", unsafe { sys::nvrtcVersion(&mut major, &mut minor) })?;
    Ok((major, minor))
}
