//! Modules and functions: a module image's entry points, each bound to its host twin.

use super::{invalid, put, status};
use crate::error::{EmuError, Result};
use crate::{kernels, module};
use cudarc::driver::sys::{CUfunction, CUfunction_attribute, CUmodule, CUresult};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

/// A kernel as the launch sees it.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub twin: usize,
    pub static_shared: usize,
    /// Dynamic shared memory allowed by cuFuncSetAttribute (default: the 48 KiB limit).
    pub max_dynamic_shared: usize,
}

#[derive(Default)]
struct Registry {
    modules: HashMap<u64, Vec<module::Entry>>,
    functions: HashMap<u64, Function>,
    next: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(|| Registry { next: 0x100, ..Default::default() }))
}

/// The function behind a handle.
pub fn function(f: CUfunction) -> Result<Function> {
    with(|r| r.functions.get(&(f as u64)).cloned()).ok_or_else(|| {
        EmuError::driver(CUresult::CUDA_ERROR_INVALID_HANDLE, format!("unknown function {f:p}"))
    })
}

/// Refuses an image the emulated driver (`MOCO_EMU_DRIVER_VERSION`) is too old for, as a real
/// one does: a CUBIN needs a driver of at least the same CUDA major version as the toolkit that
/// built it (minor-version compatibility), PTX needs at least the same major.minor (the driver
/// JIT-compiles it and cannot read a newer PTX ISA; cudarc#598). The error code is the one the
/// real driver returns for PTX (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); for a CUBIN the emulator
/// uses the same code (what a real driver returns there was not observed).
fn check_toolkit(release: Option<(i32, i32)>, cubin: bool) -> Result<()> {
    let cfg = crate::device::config();
    if cubin && cfg.refuse_cubin {
        return Err(EmuError::driver(
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
            "MOCO_EMU_REFUSE_CUBIN=1: CUBINs are refused",
        ));
    }
    let Some((major, minor)) = release else { return Ok(()) };
    let (dmajor, dminor) = (cfg.driver_version / 1000, cfg.driver_version % 1000 / 10);
    let too_new = if cubin { major > dmajor } else { (major, minor) > (dmajor, dminor) };
    if too_new {
        return Err(EmuError::driver(
            CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
            format!(
                "this {} was built by CUDA {major}.{minor} tools; the driver supports CUDA {dmajor}.{dminor} \
                 (MOCO_EMU_DRIVER_VERSION)",
                if cubin { "CUBIN" } else { "PTX" }
            ),
        ));
    }
    Ok(())
}

unsafe fn load(image: *const c_void) -> Result<u64> {
    if image.is_null() {
        return Err(invalid("image is a null pointer"));
    }
    let bad = |msg: String| EmuError::driver(CUresult::CUDA_ERROR_INVALID_IMAGE, msg);
    // SAFETY: the caller promises a module image; the ELF reader only reads within the
    // length the image's own headers give.
    let entries = match unsafe { module::elf_len(image.cast()) } {
        Some(len) => {
            // SAFETY: `len` bytes make up the ELF image, per its headers.
            let bytes = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), len) };
            check_toolkit(module::toolkit_release(bytes), true)?;
            module::cubin_entries(bytes).map_err(bad)?
        }
        None => {
            // SAFETY: not ELF, so PTX text, which the driver requires to be NUL-terminated.
            let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_string_lossy();
            check_toolkit(module::toolkit_release(text.as_bytes()), false)?;
            let entries = module::ptx_entries(&text);
            if entries.is_empty() {
                return Err(bad("neither a CUBIN nor PTX with entry points".into()));
            }
            entries
        }
    };
    // Every entry must have a host twin, or the emulator would silently skip a kernel.
    let missing: Vec<&str> =
        entries.iter().filter(|e| kernels::find(&e.name).is_none()).map(|e| e.name.as_str()).collect();
    if !missing.is_empty() {
        return Err(EmuError::driver(
            CUresult::CUDA_ERROR_NOT_FOUND,
            format!(
                "kernels without a host twin (is the emulator built from these sources?): {}",
                missing.join(", ")
            ),
        ));
    }
    for e in &entries {
        if e.static_shared > crate::device::MAX_SHARED_PER_BLOCK {
            return Err(EmuError::driver(
                CUresult::CUDA_ERROR_INVALID_IMAGE,
                format!(
                    "{} declares {} bytes of static shared memory (limit 48 KiB)",
                    e.name, e.static_shared
                ),
            ));
        }
    }
    Ok(with(|r| {
        r.next += 0x10;
        let id = r.next;
        r.modules.insert(id, entries);
        id
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(out: *mut CUmodule, image: *const c_void) -> CUresult {
    status("cuModuleLoadData", unsafe {
        load(image).and_then(|id| put(out, id as usize as CUmodule, "module"))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    out: *mut CUmodule,
    image: *const c_void,
    _n: std::ffi::c_uint,
    _opts: *mut c_void,
    _vals: *mut *mut c_void,
) -> CUresult {
    status("cuModuleLoadDataEx", unsafe {
        load(image).and_then(|id| put(out, id as usize as CUmodule, "module"))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(m: CUmodule) -> CUresult {
    let removed = with(|r| r.modules.remove(&(m as u64)).is_some());
    let r = if removed {
        Ok(())
    } else {
        Err(EmuError::driver(CUresult::CUDA_ERROR_INVALID_HANDLE, "unknown module"))
    };
    status("cuModuleUnload", r)
}

unsafe fn get_function(out: *mut CUfunction, m: CUmodule, name: *const c_char) -> Result<()> {
    if name.is_null() {
        return Err(invalid("name is a null pointer"));
    }
    // SAFETY: the caller passes a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    let id = with(|r| {
        let entries = r
            .modules
            .get(&(m as u64))
            .ok_or_else(|| EmuError::driver(CUresult::CUDA_ERROR_INVALID_HANDLE, "unknown module"))?;
        let entry = entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                EmuError::driver(CUresult::CUDA_ERROR_NOT_FOUND, format!("no kernel {name} in the module"))
            })?
            .clone();
        let twin = kernels::find(&name).expect("checked at load");
        r.next += 0x10;
        let id = r.next;
        r.functions.insert(
            id,
            Function {
                name,
                twin,
                static_shared: entry.static_shared,
                max_dynamic_shared: crate::device::MAX_SHARED_PER_BLOCK - entry.static_shared,
            },
        );
        Ok(id)
    })?;
    // SAFETY: forwarded from the caller's out-pointer.
    unsafe { put(out, id as usize as CUfunction, "hfunc") }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    out: *mut CUfunction,
    m: CUmodule,
    name: *const c_char,
) -> CUresult {
    status("cuModuleGetFunction", unsafe { get_function(out, m, name) })
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    pi: *mut c_int,
    attrib: CUfunction_attribute,
    f: CUfunction,
) -> CUresult {
    use CUfunction_attribute::*;
    status(
        "cuFuncGetAttribute",
        (|| {
            let func = function(f)?;
            let v = match attrib {
                CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => crate::device::MAX_THREADS_PER_BLOCK as c_int,
                CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES => func.static_shared as c_int,
                CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => func.max_dynamic_shared as c_int,
                CU_FUNC_ATTRIBUTE_NUM_REGS => 32,
                CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES | CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES => 0,
                CU_FUNC_ATTRIBUTE_PTX_VERSION | CU_FUNC_ATTRIBUTE_BINARY_VERSION => {
                    let c = crate::device::config();
                    c.cc_major * 10 + c.cc_minor
                }
                other => {
                    return Err(EmuError::driver(
                        CUresult::CUDA_ERROR_NOT_SUPPORTED,
                        format!("{other:?} is not emulated"),
                    ))
                }
            };
            // SAFETY: forwarded from the caller's out-pointer.
            unsafe { put(pi, v, "pi") }
        })(),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(
    f: CUfunction,
    attrib: CUfunction_attribute,
    value: c_int,
) -> CUresult {
    status(
        "cuFuncSetAttribute",
        (|| {
            let func = function(f)?;
            if attrib == CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES {
                let optin = 99 * 1024;
                if value < 0 || func.static_shared + value as usize > optin {
                    return Err(invalid(format!(
                        "{}: {value} bytes of dynamic shared memory exceed the opt-in limit",
                        func.name
                    )));
                }
                with(|r| {
                    if let Some(entry) = r.functions.get_mut(&(f as u64)) {
                        entry.max_dynamic_shared = value as usize;
                    }
                });
            }
            Ok(())
        })(),
    )
}
