//! NVTX ranges for Nsight Systems, loaded at run time and only if present.
//!
//! cudarc's `nvtx` feature panics at first use when libnvToolsExt is missing, and the library no
//! longer ships with CUDA 12.9+ (shared/GPU.md), so it is opened here by hand: `MOCO_NVTX_LIB`
//! (a path, e.g. the `nvidia-nvtx` wheel's `nvidia/nvtx/lib/libnvToolsExt.so.1`), else
//! `libnvToolsExt.so.1` / `libnvToolsExt.so` on the loader path. If none loads, ranges are
//! skipped silently: the Chrome trace is the profile that always works.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

type PushFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopFn = unsafe extern "C" fn() -> c_int;

pub struct Nvtx {
    push: PushFn,
    pop: PopFn,
    /// Span names as C strings, made once per name (span names are a small fixed set).
    names: Mutex<HashMap<&'static str, &'static CStr>>,
    /// Keeps the library mapped while `push`/`pop` may be called.
    _lib: libloading::Library,
}

impl Nvtx {
    /// The library's range functions, or None when it is absent or incomplete.
    pub fn load() -> Option<Nvtx> {
        let mut candidates: Vec<String> = Vec::new();
        if let Ok(p) = std::env::var("MOCO_NVTX_LIB") {
            candidates.push(p);
        }
        candidates.extend(["libnvToolsExt.so.1".to_string(), "libnvToolsExt.so".to_string()]);
        candidates.into_iter().find_map(|c| Self::open(&c))
    }

    fn open(path: &str) -> Option<Nvtx> {
        // SAFETY: libnvToolsExt's initialisers only set up its injection hooks (they look for a
        // profiler through NVTX_INJECTION64_PATH); loading it has no other side effect.
        let lib = unsafe { libloading::Library::new(path) }.ok()?;
        // SAFETY: the types are the NVTX C API's: `int nvtxRangePushA(const char*)` and
        // `int nvtxRangePop(void)`. The function pointers are copied out and stay valid while
        // `_lib` keeps the library loaded, which lives as long as they do in `Nvtx`.
        let (push, pop) = unsafe {
            let push = *lib.get::<PushFn>(b"nvtxRangePushA\0").ok()?;
            let pop = *lib.get::<PopFn>(b"nvtxRangePop\0").ok()?;
            (push, pop)
        };
        Some(Nvtx { push, pop, names: Mutex::new(HashMap::new()), _lib: lib })
    }

    pub fn push(&self, name: &'static str) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let c: &'static CStr = names.entry(name).or_insert_with(|| {
            let owned = CString::new(name.replace('\0', " ")).unwrap_or_default();
            Box::leak(owned.into_boxed_c_str())
        });
        // SAFETY: `c` is a NUL-terminated string that lives for the rest of the process; NVTX
        // copies the message and keeps no pointer after the call returns.
        unsafe { (self.push)(c.as_ptr()) };
    }

    pub fn pop(&self) {
        // SAFETY: nvtxRangePop takes no arguments; popping with no open range is defined (it
        // returns a negative value, ignored here).
        unsafe { (self.pop)() };
    }
}
