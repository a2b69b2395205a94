//! Finding out whether CUDA can be used, BEFORE touching cudarc's driver API: cudarc panics
//! (it does not return an error) on the first driver call when libcuda is absent.

use crate::error::{KernelError, Result};

/// `Ok` when the CUDA driver library (libcuda) can be loaded, else `KernelError::NoCuda` with
/// a message that says what to do. Never panics, and never calls a driver function.
pub fn probe_driver() -> Result<()> {
    // SAFETY: is_culib_present only tries to dlopen the candidate names ("libcuda.so",
    // "libcuda.so.1", ...) and drops the handles; it calls no driver function.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(KernelError::NoCuda(
            "libcuda.so could not be loaded: this machine has no NVIDIA driver, or it is not on \
             the library path"
                .to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Whether a libcuda the dynamic loader could find exists, judged independently of cudarc:
    /// the folders of LD_LIBRARY_PATH and the usual system library folders.
    fn libcuda_on_disk() -> bool {
        let mut dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        for d in [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib/wsl/lib",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/compat",
        ] {
            dirs.push(d.to_string());
        }
        let in_dirs =
            dirs.iter().any(|d| ["libcuda.so", "libcuda.so.1"].iter().any(|f| Path::new(d).join(f).exists()));
        // The loader's cache covers folders configured in /etc/ld.so.conf.d as well.
        let in_cache = std::process::Command::new("ldconfig")
            .arg("-p")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim_start().starts_with("libcuda.so"))
            })
            .unwrap_or(false);
        in_dirs || in_cache
    }

    #[test]
    fn probe_reports_the_driver_without_panicking() {
        let result = std::panic::catch_unwind(probe_driver);
        let result = result.expect("probe_driver must return, not panic, whatever the machine has");
        match result {
            Ok(()) => assert!(libcuda_on_disk(), "probe found a driver that is not on disk"),
            Err(KernelError::NoCuda(msg)) => {
                assert!(!libcuda_on_disk(), "libcuda is on disk but the probe reported: {msg}");
                let shown = KernelError::NoCuda(msg).to_string();
                assert!(shown.contains("--device cpu"), "the message must say what to do: {shown}");
            }
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
}
