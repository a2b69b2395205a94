//! Turning a fault in emulated device work into a report, as compute-sanitizer would give one:
//! an access to a guard page (or to freed device memory) while a stream op runs is reported
//! with the op's label (the kernel's name) and the allocation it ran past, then the process
//! exits with status 86. A fault outside device work is handed to the previous handler (Rust's
//! stack-overflow detection, or the default action), so the emulator hides no host bug.

use std::sync::Once;

static mut PREVIOUS: Option<libc::sigaction> = None;

/// Exit status of a process whose device work faulted.
pub const FAULT_EXIT: i32 = 86;

extern "C" {
    // cxx/runtime.cpp: the running CUDA thread's blockIdx and threadIdx (plain loads, so
    // async-signal-safe); 0 when no kernel runs.
    fn moco_emu_kernel_position(out: *mut u32) -> libc::c_int;
    // cxx/fiber.cpp: whether addr is in the guard page of a CUDA thread's fiber stack.
    fn moco_emu_fiber_guard_hit(addr: *const libc::c_void) -> libc::c_int;
}

/// " (block (x,y,z), thread (x,y,z))" while a kernel's CUDA thread runs, else "".
fn kernel_position() -> String {
    let mut p = [0u32; 6];
    // SAFETY: p has the 6 elements the function writes; it only reads plain globals.
    if unsafe { moco_emu_kernel_position(p.as_mut_ptr()) } == 0 {
        return String::new();
    }
    format!(" (block ({},{},{}), thread ({},{},{}))", p[0], p[1], p[2], p[3], p[4], p[5])
}

fn write_stderr(s: &str) {
    // SAFETY: write(2) is async-signal-safe; the buffer is valid for its length.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    // try_lock: the fault may have happened while the label was being written.
    let label = crate::stream::RUNNING.try_lock().ok().map(|l| l.clone()).unwrap_or_default();
    if !label.is_empty() {
        let region = crate::memory::try_find_near(addr);
        // SAFETY: a read-only scan of the fiber stack table.
        let stack_overflow = unsafe { moco_emu_fiber_guard_hit(addr as *const libc::c_void) } != 0;
        let what = match region {
            _ if stack_overflow => {
                "the guard page of the CUDA thread's 64 KiB stack (stack overflow)".to_string()
            }
            Some(r) if addr >= r.start + r.size => {
                format!(
                    "{} bytes past the end of a {}-byte allocation at {:#x}",
                    addr - (r.start + r.size),
                    r.size,
                    r.start
                )
            }
            Some(r) if addr < r.start => {
                format!(
                    "{} bytes before the start of a {}-byte allocation at {:#x}",
                    r.start - addr,
                    r.size,
                    r.start
                )
            }
            Some(r) => format!("inside a {}-byte allocation at {:#x}", r.size, r.start),
            None => "outside every live allocation (freed, or never device memory)".to_string(),
        };
        write_stderr(&format!(
            "moco-emu: invalid device memory access in {label}{}: address {addr:#x}, {what}\n",
            kernel_position()
        ));
        // SAFETY: _exit is async-signal-safe and ends the process without running handlers
        // that might touch the corrupt state.
        unsafe { libc::_exit(FAULT_EXIT) };
    }
    // Not device work: restore the previous handler and return, so the faulting instruction
    // runs again under it (Rust's stack-overflow report, or the default core dump).
    // SAFETY: PREVIOUS was written once, before this handler was installed.
    unsafe {
        match &*std::ptr::addr_of!(PREVIOUS) {
            Some(prev) => {
                libc::sigaction(sig, prev, std::ptr::null_mut());
            }
            None => {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    let _ = ctx;
}

/// Installs the handler for SIGSEGV and SIGBUS once (from `cuInit`).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction with a zeroed struct filled in as POSIX requires; PREVIOUS is
        // written before the handler that reads it is installed.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                on_segv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut prev) == 0 {
                *std::ptr::addr_of_mut!(PREVIOUS) = Some(prev);
            }
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}
