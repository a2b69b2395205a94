//! Making what the search found loadable by cudarc: a folder of links under the names cudarc
//! tries, and `LD_LIBRARY_PATH` set before the process starts (re-executing once if needed).

use super::search::{discover, Discovery, Found, Lib, Roots};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Folders to search first (colon-separated), e.g. where `scripts/setup_gpu.sh` installed.
pub const LIBS_ENV: &str = "MOCO_CUDA_LIBS";
/// Set once a process has prepared its library path; children inherit it and skip the search.
pub const READY_ENV: &str = "MOCO_CUDA_ENV_READY";
/// `off`: no search, no re-execution (the environment is used as it is).
pub const DISCOVERY_ENV: &str = "MOCO_CUDA_DISCOVERY";

/// What [`prepare`] decided.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Folders to put first on `LD_LIBRARY_PATH`, in order (the link folder first).
    pub lib_dirs: Vec<PathBuf>,
    /// The private folder of links, when one was needed.
    pub link_dir: Option<PathBuf>,
    /// `name -> target` of every link made there.
    pub links: Vec<(String, PathBuf)>,
}

/// Folders the loader searches by itself: never worth putting on `LD_LIBRARY_PATH`.
fn is_system_dir(dir: &Path) -> bool {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu"),
        format!("/lib/{arch}-linux-gnu"),
        "/usr/lib64".into(),
        "/lib64".into(),
        "/usr/lib".into(),
        "/lib".into(),
    ]
    .iter()
    .any(|s| Path::new(s) == dir)
}

/// The links a found library needs: `lib{stem}.so` -> the real file, unless cudarc already
/// opens it by its own name.
fn links_for(found: &Found) -> Option<(String, PathBuf)> {
    if found.lib == Lib::Driver || found.cudarc_can_open() {
        return None;
    }
    let target = std::fs::canonicalize(&found.path).unwrap_or_else(|_| found.path.clone());
    Some((format!("lib{}.so", found.lib.stem()), target))
}

/// A stable folder name for a set of links (FNV-1a of the mapping), so processes with the
/// same libraries share one folder and a changed set never overwrites a folder in use.
fn folder_name(links: &[(String, PathBuf)]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for (name, target) in links {
        for b in name.bytes().chain([0]).chain(target.to_string_lossy().bytes()).chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// Makes the link folder under `base` (built under a temporary name and renamed into place,
/// so a process never sees half of it). Returns its path.
pub fn make_link_dir(base: &Path, links: &[(String, PathBuf)]) -> std::io::Result<PathBuf> {
    private_base(base)?;
    let dir = base.join(folder_name(links));
    if holds_exactly(&dir, links) {
        return Ok(dir);
    }
    let tmp = base.join(format!(".tmp-{}-{}", std::process::id(), folder_name(links)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (name, target) in links {
        std::os::unix::fs::symlink(target, tmp.join(name))?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process made the same folder meanwhile: same name, same content.
        Err(_) if holds_exactly(&dir, links) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

/// Whether `dir` holds exactly these links and nothing else (a folder this program made).
fn holds_exactly(dir: &Path, links: &[(String, PathBuf)]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    let count = rd.count();
    count == links.len() && links.iter().all(|(n, t)| std::fs::read_link(dir.join(n)).is_ok_and(|l| &l == t))
}

/// Makes `base` (mode 0700) or checks that it is this user's and writable by nobody else:
/// its links go first on the library path, so a folder another user could write into (a name
/// squatted in /tmp) must never be used.
fn private_base(base: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(base)?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a folder of this user writable only by it; remove it", base.display()),
        ));
    }
    Ok(())
}

/// Where link folders go: per user, under the temporary folder.
fn link_base() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("moco-cuda-links-{uid}"))
}

/// The link folder and the folders to put on `LD_LIBRARY_PATH` for `d`.
pub fn prepare(d: &Discovery, base: &Path) -> std::io::Result<Prepared> {
    let links: Vec<(String, PathBuf)> = d.found.iter().filter_map(links_for).collect();
    let mut p = Prepared::default();
    if !links.is_empty() {
        let dir = make_link_dir(base, &links)?;
        p.lib_dirs.push(dir.clone());
        p.link_dir = Some(dir);
        p.links = links;
    }
    // Each library's own folder: NVRTC opens its builtins, cuDNN its sub-libraries and cuBLAS
    // links cuBLASLt by name from there.
    for f in &d.found {
        let dir = f.dir().to_path_buf();
        if !is_system_dir(&dir) && !p.lib_dirs.contains(&dir) {
            p.lib_dirs.push(dir);
        }
    }
    Ok(p)
}

/// `LD_LIBRARY_PATH` with `first` in front of `old` (entries of `old` already in `first` are
/// dropped).
pub fn joined_path(first: &[PathBuf], old: Option<&OsString>) -> OsString {
    let mut all: Vec<PathBuf> = first.to_vec();
    if let Some(old) = old {
        for d in std::env::split_paths(old).filter(|d| !d.as_os_str().is_empty()) {
            if !all.contains(&d) {
                all.push(d);
            }
        }
    }
    std::env::join_paths(all).unwrap_or_default()
}

/// What [`prepare_process`] did, for the doctor and the logs.
#[derive(Debug, Clone)]
pub enum ProcessEnv {
    /// `MOCO_CUDA_DISCOVERY=off`.
    Off,
    /// A parent process (or this one, before re-executing) prepared the environment.
    Inherited,
    /// Searched; the library path already had everything.
    Ready(Discovery),
    /// Searched, but the link folder could not be made (the message says why).
    Failed(Discovery, String),
}

/// Call first thing in `main`, before any thread starts: finds the CUDA libraries, and when
/// `LD_LIBRARY_PATH` lacks a folder they need, sets it and re-executes this program (same
/// arguments, same pid) so the loader sees it. Also sets `MOCO_CUDA_INCLUDE` for NVRTC when
/// unset. Processes spawned later inherit all of it. Returns only when no re-execution was
/// needed (or it failed, which is logged and leaves the environment as it was).
pub fn prepare_process() -> ProcessEnv {
    if std::env::var(DISCOVERY_ENV).is_ok_and(|v| v == "off") {
        return ProcessEnv::Off;
    }
    if std::env::var_os(READY_ENV).is_some() {
        return ProcessEnv::Inherited;
    }
    let d = discover(&Roots::from_env());
    if let Some(inc) = &d.include_dir {
        let set = [crate::cuda::nvrtc::INCLUDE_ENV, crate::cuda::nvrtc::WHEEL_INCLUDE_ENV]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !set {
            // Before any thread exists (the caller's contract), so no reader races this write.
            std::env::set_var(crate::cuda::nvrtc::INCLUDE_ENV, inc);
        }
    }
    let p = match prepare(&d, &link_base()) {
        Ok(p) => p,
        Err(e) => {
            let msg =
                format!("cannot make the CUDA library link folder under {}: {e}", link_base().display());
            return ProcessEnv::Failed(d, msg);
        }
    };
    let old = std::env::var_os("LD_LIBRARY_PATH");
    let have: Vec<PathBuf> = old.as_ref().map(|o| std::env::split_paths(o).collect()).unwrap_or_default();
    std::env::set_var(READY_ENV, "1");
    if p.lib_dirs.iter().all(|d| have.contains(d)) {
        return ProcessEnv::Ready(d);
    }
    std::env::set_var("LD_LIBRARY_PATH", joined_path(&p.lib_dirs, old.as_ref()));
    let err = reexec();
    // Only reached when exec failed: go on without the found libraries.
    ProcessEnv::Failed(d, format!("cannot re-execute with the CUDA library path: {err}"))
}

/// Replaces this process with a fresh run of the same program and arguments.
fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // /proc/self/exe: the binary itself, even when argv[0] was a bare name found on PATH.
    let exe = std::fs::read_link("/proc/self/exe").or_else(|_| std::env::current_exe());
    match exe {
        Ok(exe) => std::process::Command::new(exe).arg0(argv0).args(args).exec(),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versioned_library_gets_a_link_under_cudarcs_name() {
        let t = std::env::temp_dir().join(format!("moco-bridge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let libdir = t.join("wheel/nvidia/nccl/lib");
        std::fs::create_dir_all(&libdir).unwrap();
        std::fs::write(libdir.join("libnccl.so.2"), b"x").unwrap();
        std::fs::create_dir_all(t.join("blas")).unwrap();
        std::fs::write(t.join("blas/libcublas.so.12"), b"x").unwrap();
        let d = discover(&Roots(vec![super::super::search::Root {
            label: "t".into(),
            lib_dirs: vec![libdir.clone(), t.join("blas")],
            include_dirs: vec![],
            driver_ok: true,
        }]));
        let base = t.join("links");
        let p = prepare(&d, &base).unwrap();
        let link_dir = p.link_dir.clone().expect("libnccl.so.2 needs a link");
        assert_eq!(std::fs::read_link(link_dir.join("libnccl.so")).unwrap(), libdir.join("libnccl.so.2"));
        assert!(!link_dir.join("libcublas.so").exists(), "cudarc opens libcublas.so.12 itself");
        // The link folder first, then each library's folder in the order of Lib::ALL.
        assert_eq!(p.lib_dirs, vec![link_dir.clone(), t.join("blas"), libdir.clone()]);
        // The same set again reuses the folder.
        assert_eq!(prepare(&d, &base).unwrap().link_dir, Some(link_dir));
        let joined = joined_path(&p.lib_dirs, Some(&OsString::from(format!("/x:{}", libdir.display()))));
        let parts: Vec<PathBuf> = std::env::split_paths(&joined).collect();
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!(parts[3], PathBuf::from("/x"));
        // A base others can write into is never used.
        use std::os::unix::fs::PermissionsExt;
        let open = t.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&d, &open).unwrap_err().to_string();
        assert!(e.contains("writable only by it"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
