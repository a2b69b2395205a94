//! Where each CUDA library is: the places searched, in order, and what was found there.

use std::path::{Path, PathBuf};

/// A library the project loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lib {
    Driver,
    Nvrtc,
    Cublas,
    Cudnn,
    Nccl,
}

impl Lib {
    pub const ALL: [Lib; 5] = [Lib::Driver, Lib::Nvrtc, Lib::Cublas, Lib::Cudnn, Lib::Nccl];

    /// The stem cudarc builds its candidate names from (`lib{stem}.so...`).
    pub fn stem(self) -> &'static str {
        match self {
            Lib::Driver => "cuda",
            Lib::Nvrtc => "nvrtc",
            Lib::Cublas => "cublas",
            Lib::Cudnn => "cudnn",
            Lib::Nccl => "nccl",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Lib::Driver => "CUDA driver (libcuda)",
            Lib::Nvrtc => "NVRTC (libnvrtc)",
            Lib::Cublas => "cuBLAS (libcublas)",
            Lib::Cudnn => "cuDNN (libcudnn)",
            Lib::Nccl => "NCCL (libnccl)",
        }
    }

    /// Major versions the project can use (cudarc's bindings: CUDA 12/13, cuDNN 9, NCCL 2).
    /// The driver's own file is `libcuda.so.1` whatever its CUDA version.
    fn accepts_major(self, major: u32) -> bool {
        match self {
            Lib::Driver => major == 1,
            Lib::Nvrtc | Lib::Cublas => major == 12 || major == 13,
            Lib::Cudnn => major == 9,
            Lib::Nccl => major == 2,
        }
    }

    /// Files that must sit next to the library (the library opens them by name at run time,
    /// or links against them), as file-name prefixes.
    pub fn companions(self) -> &'static [&'static str] {
        match self {
            Lib::Nvrtc => &["libnvrtc-builtins.so"],
            Lib::Cublas => &["libcublasLt.so"],
            // cuDNN 9's libcudnn.so.9 is a front that dlopens these by name.
            Lib::Cudnn => &[
                "libcudnn_graph.so",
                "libcudnn_ops.so",
                "libcudnn_cnn.so",
                "libcudnn_engines_precompiled.so",
                "libcudnn_heuristic.so",
            ],
            Lib::Driver | Lib::Nccl => &[],
        }
    }
}

/// The names cudarc 0.19.10 tries for `stem` on Linux (its `get_lib_name_candidates` with the
/// cuda-13000 bindings, less the Windows-style `lib{stem}64_*` names).
pub fn cudarc_names(stem: &str) -> Vec<String> {
    ["", ".13", ".12", ".11", ".10", ".9", ".1"].iter().map(|v| format!("lib{stem}.so{v}")).collect()
}

/// One library found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub lib: Lib,
    /// The file as found (may be a link).
    pub path: PathBuf,
    /// Its version from the real file's name (`libnccl.so.2.21.5` -> "2.21.5"), when it has one.
    pub version: Option<String>,
    /// The place it was found in (one of [`Roots`]' labels).
    pub source: String,
    /// Companion files missing from its folder (see [`Lib::companions`]).
    pub missing_companions: Vec<String>,
}

impl Found {
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The major version from [`Found::version`], or from the file name as found.
    pub fn major(&self) -> Option<u32> {
        self.version.as_deref().and_then(|v| v.split('.').next()).and_then(|m| m.parse().ok()).or_else(|| {
            let name = self.path.file_name()?.to_str()?;
            suffix_major(name, self.lib.stem())
        })
    }

    /// Whether cudarc would open this file under one of its names in this folder.
    pub fn cudarc_can_open(&self) -> bool {
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        cudarc_names(self.lib.stem()).iter().any(|c| c == name)
    }
}

/// Everything the search found, and the folder NVRTC can include `cuda_fp16.h` from.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub found: Vec<Found>,
    pub include_dir: Option<PathBuf>,
    /// The places searched, in order (for the doctor's report).
    pub searched: Vec<String>,
}

impl Discovery {
    pub fn get(&self, lib: Lib) -> Option<&Found> {
        self.found.iter().find(|f| f.lib == lib)
    }

    pub fn missing(&self) -> Vec<Lib> {
        Lib::ALL.into_iter().filter(|l| self.get(*l).is_none()).collect()
    }
}

/// A place to search: a label and the folders to look in for libraries and headers.
#[derive(Debug, Clone)]
pub struct Root {
    pub label: String,
    pub lib_dirs: Vec<PathBuf>,
    pub include_dirs: Vec<PathBuf>,
    /// Whether the driver may be taken from here (never from Python wheels: they carry none,
    /// and a toolkit's `stubs/libcuda.so` must never be used).
    pub driver_ok: bool,
}

/// The places searched, first match wins per library:
/// 1. `$MOCO_CUDA_LIBS` (colon-separated folders) and the project-local `.cuda-libs` (in the
///    current folder and in the checkout the binary was built in), where `scripts/setup_gpu.sh`
///    installs NVIDIA's wheels;
/// 2. NVIDIA's wheels in the active Python (`$VIRTUAL_ENV`, `$CONDA_PREFIX`, the `python3` on
///    `PATH`, `~/.local`): `site-packages/nvidia/*/lib`;
/// 3. a toolkit: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`;
/// 4. the loader's own places: `$LD_LIBRARY_PATH`, `ldconfig -p`, the system library folders.
///
/// `MOCO_CUDA_SEARCH_SYSTEM=0` leaves out the places that belong to the machine rather than
/// the environment (python3 on PATH, ~/.local, /usr/local/cuda, ldconfig, system folders): the
/// tests use it to pose as a machine that lacks a library.
#[derive(Debug, Clone, Default)]
pub struct Roots(pub Vec<Root>);

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `dir/nvidia/*/{lib,include}` of a site-packages folder (or of a `pip --target` folder).
fn wheel_dirs(site: &Path, libs: &mut Vec<PathBuf>, incs: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(site.join("nvidia")) else { return };
    let mut subs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subs.sort();
    for sub in subs {
        libs.push(sub.join("lib"));
        incs.push(sub.join("include"));
    }
}

/// The site-packages folders of a Python prefix (`lib/python3.*/{site,dist}-packages`).
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(rd) = std::fs::read_dir(prefix.join(lib)) else { continue };
        let mut pys: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pys.sort();
        for py in pys {
            out.push(py.join("site-packages"));
            out.push(py.join("dist-packages"));
        }
    }
    out
}

/// A folder laid out by `pip install --target`, a venv, or a plain folder of libraries.
fn local_root(label: String, dir: &Path) -> Root {
    let (mut libs, mut incs) =
        (vec![dir.to_path_buf(), dir.join("lib"), dir.join("lib64")], vec![dir.join("include")]);
    wheel_dirs(dir, &mut libs, &mut incs);
    for site in site_packages(dir) {
        wheel_dirs(&site, &mut libs, &mut incs);
    }
    Root { label, lib_dirs: libs, include_dirs: incs, driver_ok: true }
}

fn python_root(label: String, prefix: &Path) -> Root {
    let (mut libs, mut incs) = (Vec::new(), Vec::new());
    for site in site_packages(prefix) {
        wheel_dirs(&site, &mut libs, &mut incs);
    }
    Root { label, lib_dirs: libs, include_dirs: incs, driver_ok: false }
}

fn toolkit_root(label: String, home: &Path) -> Root {
    let target = home.join("targets").join(format!("{}-linux", std::env::consts::ARCH));
    Root {
        label,
        lib_dirs: vec![home.join("lib64"), home.join("lib"), target.join("lib")],
        include_dirs: vec![home.join("include"), target.join("include")],
        driver_ok: false,
    }
}

/// The folder of the `python3` on PATH, resolved through links, as a Python prefix.
fn path_python_prefix() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let exe = std::env::split_paths(&path).map(|d| d.join("python3")).find(|p| p.is_file())?;
    let real = std::fs::canonicalize(exe).ok()?;
    Some(real.parent()?.parent()?.to_path_buf())
}

/// Folders `ldconfig -p` lists for `lib*` names of interest.
fn ldconfig_dirs() -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, path)) = line.trim().split_once(" => ") else { continue };
        let name = name.split_whitespace().next().unwrap_or("");
        if Lib::ALL.iter().any(|l| name.starts_with(&format!("lib{}.so", l.stem()))) {
            if let Some(dir) = Path::new(path.trim()).parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    dirs
}

impl Roots {
    /// The places of the list above, from this process's environment.
    pub fn from_env() -> Roots {
        let system = std::env::var("MOCO_CUDA_SEARCH_SYSTEM").map(|v| v != "0").unwrap_or(true);
        let mut roots = Vec::new();
        if let Some(v) = std::env::var_os(super::bridge::LIBS_ENV) {
            for dir in std::env::split_paths(&v).filter(|d| !d.as_os_str().is_empty()) {
                roots.push(local_root(format!("{}={}", super::bridge::LIBS_ENV, dir.display()), &dir));
            }
        }
        let mut locals = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            locals.push(cwd.join(".cuda-libs"));
        }
        // target/<profile>/launcher -> the checkout's .cuda-libs (a place of the machine, like
        // /usr/local/cuda: left out with MOCO_CUDA_SEARCH_SYSTEM=0).
        if let Some(repo) = system
            .then_some(())
            .and_then(|()| std::env::current_exe().ok())
            .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        {
            locals.push(repo.join(".cuda-libs"));
        }
        for dir in locals {
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            if dir.is_dir() && !roots.iter().any(|r: &Root| r.lib_dirs.first() == Some(&dir)) {
                roots.push(local_root(format!("project folder {}", dir.display()), &dir));
            }
        }
        for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            if let Some(p) = env_path(var) {
                roots.push(python_root(format!("Python wheels (${var}={})", p.display()), &p));
            }
        }
        if system {
            if let Some(p) = path_python_prefix() {
                roots.push(python_root(format!("Python wheels ({})", p.display()), &p));
            }
            if let Some(home) = env_path("HOME") {
                roots.push(python_root("Python wheels (~/.local)".into(), &home.join(".local")));
            }
        }
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(p) = env_path(var) {
                roots.push(toolkit_root(format!("${var}={}", p.display()), &p));
            }
        }
        if system {
            roots.push(toolkit_root("/usr/local/cuda".into(), Path::new("/usr/local/cuda")));
        }
        if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
            let dirs: Vec<PathBuf> =
                std::env::split_paths(&v).filter(|d| !d.as_os_str().is_empty()).collect();
            // A wheel's or toolkit's lib folder has its headers in ../include.
            let incs = dirs.iter().filter_map(|d| d.parent()).map(|p| p.join("include")).collect();
            roots.push(Root {
                label: "LD_LIBRARY_PATH".into(),
                lib_dirs: dirs,
                include_dirs: incs,
                driver_ok: true,
            });
        }
        if system {
            let arch = std::env::consts::ARCH;
            let dirs = [
                format!("/usr/lib/{arch}-linux-gnu"),
                format!("/lib/{arch}-linux-gnu"),
                "/usr/lib64".into(),
                "/usr/lib".into(),
                "/usr/lib/wsl/lib".into(),
            ];
            roots.push(Root {
                label: "system library folders".into(),
                lib_dirs: dirs.iter().map(PathBuf::from).collect(),
                include_dirs: vec![PathBuf::from("/usr/include")],
                driver_ok: true,
            });
        }
        Roots(roots)
    }
}

/// The major version after `lib{stem}.so.` in a file name.
fn suffix_major(name: &str, stem: &str) -> Option<u32> {
    name.strip_prefix(&format!("lib{stem}.so."))?.split('.').next()?.parse().ok()
}

/// The version in the library's file names, following links (`libcublas.so` ->
/// `libcublas.so.12` -> `libcublas.so.12.4.5.8` gives "12.4.5.8"): the longest one seen.
fn version_of(path: &Path, stem: &str) -> Option<String> {
    let prefix = format!("lib{stem}.so.");
    let mut best: Option<String> = None;
    let mut at = path.to_path_buf();
    for _ in 0..8 {
        if let Some(v) = at.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(&prefix)) {
            let numeric =
                !v.is_empty() && v.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if numeric && best.as_ref().is_none_or(|b| v.len() > b.len()) {
                best = Some(v.to_string());
            }
        }
        let Ok(next) = std::fs::read_link(&at) else { break };
        at = if next.is_absolute() { next } else { at.parent().unwrap_or(Path::new("/")).join(next) };
    }
    best
}

/// The best file for `lib` in `dir`: a name cudarc opens if there is one, else a versioned
/// file of an accepted major version (`libnccl.so.2`, `libnccl.so.2.21.5`).
fn find_in(dir: &Path, lib: Lib) -> Option<PathBuf> {
    let stem = lib.stem();
    let prefix = format!("lib{stem}.so");
    let rd = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n == &prefix || n.starts_with(&format!("{prefix}.")))
        .filter(|n| dir.join(n).is_file())
        .collect();
    // Shortest first: `libnccl.so.2` before `libnccl.so.2.21.5`.
    names.sort_by_key(|n| (n.len(), n.clone()));
    let accepted = |n: &String| n == &prefix || suffix_major(n, stem).is_some_and(|m| lib.accepts_major(m));
    let cudarc = cudarc_names(stem);
    names
        .iter()
        .find(|n| cudarc.contains(n) && accepted(n))
        .or_else(|| names.iter().find(|n| accepted(n)))
        .map(|n| dir.join(n))
}

fn companions_missing(dir: &Path, lib: Lib) -> Vec<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    lib.companions()
        .iter()
        .filter(|c| !names.iter().any(|n| n.starts_with(*c)))
        .map(|c| format!("{c}*"))
        .collect()
}

/// Searches `roots` for every library and for `cuda_fp16.h`.
pub fn discover(roots: &Roots) -> Discovery {
    let mut d =
        Discovery { searched: roots.0.iter().map(|r| r.label.clone()).collect(), ..Default::default() };
    let mut all = roots.0.clone();
    let mut ldconfig_added = false;
    for lib in Lib::ALL {
        let mut hit = None;
        for root in &all {
            if lib == Lib::Driver && !root.driver_ok {
                continue;
            }
            if let Some(path) = root.lib_dirs.iter().find_map(|dir| find_in(dir, lib)) {
                hit = Some((path, root.label.clone()));
                break;
            }
        }
        // The loader's cache only when the folders above had nothing: it costs a process.
        if hit.is_none()
            && !ldconfig_added
            && std::env::var("MOCO_CUDA_SEARCH_SYSTEM").map(|v| v != "0").unwrap_or(true)
        {
            ldconfig_added = true;
            let dirs = ldconfig_dirs();
            if !dirs.is_empty() {
                all.push(Root {
                    label: "ldconfig -p".into(),
                    lib_dirs: dirs,
                    include_dirs: vec![],
                    driver_ok: true,
                });
                d.searched.push("ldconfig -p".into());
                hit = all
                    .last()
                    .and_then(|r| r.lib_dirs.iter().find_map(|dir| find_in(dir, lib)))
                    .map(|p| (p, "ldconfig -p".to_string()));
            }
        }
        if let Some((path, source)) = hit {
            let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            // The emulated CUDA device (kernels/emu) is one library standing in for all of
            // them: it has no companions to look for.
            let emulated = std::fs::canonicalize(&path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().starts_with("libmoco_emu")))
                .unwrap_or(false);
            d.found.push(Found {
                lib,
                version: version_of(&path, lib.stem()),
                missing_companions: if emulated { Vec::new() } else { companions_missing(&dir, lib) },
                path,
                source,
            });
        }
    }
    d.include_dir =
        all.iter().flat_map(|r| r.include_dirs.iter()).find(|dir| dir.join("cuda_fp16.h").is_file()).cloned();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moco-libs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn cudarc_never_tries_libnccl_so_2() {
        let names = cudarc_names("nccl");
        assert!(names.contains(&"libnccl.so".to_string()));
        assert!(!names.contains(&"libnccl.so.2".to_string()));
        assert!(cudarc_names("cudnn").contains(&"libcudnn.so.9".to_string()));
    }

    #[test]
    fn wheels_are_found_with_versions_and_companions() {
        let t = temp("wheels");
        let site = t.join("lib/python3.11/site-packages/nvidia");
        touch(&site.join("nccl/lib/libnccl.so.2"));
        touch(&site.join("cudnn/lib/libcudnn.so.9"));
        touch(&site.join("cudnn/lib/libcudnn_ops.so.9"));
        touch(&site.join("cublas/lib/libcublas.so.12"));
        touch(&site.join("cublas/lib/libcublasLt.so.12"));
        touch(&site.join("cuda_nvrtc/lib/libnvrtc.so.12"));
        touch(&site.join("cuda_runtime/include/cuda_fp16.h"));
        // A wrong major is passed over: the project has no bindings for NCCL 3.
        touch(&site.join("other/lib/libnccl.so.3"));
        let roots = Roots(vec![python_root("venv".into(), &t)]);
        let d = discover(&roots);
        let nccl = d.get(Lib::Nccl).expect("nccl");
        assert_eq!(nccl.path, site.join("nccl/lib/libnccl.so.2"));
        assert!(!nccl.cudarc_can_open(), "libnccl.so.2 needs a libnccl.so link");
        assert_eq!(nccl.major(), Some(2));
        assert!(d.get(Lib::Cublas).unwrap().missing_companions.is_empty());
        let nvrtc = d.get(Lib::Nvrtc).unwrap();
        assert_eq!(nvrtc.missing_companions, vec!["libnvrtc-builtins.so*".to_string()]);
        assert!(d.get(Lib::Cudnn).unwrap().missing_companions.contains(&"libcudnn_cnn.so*".to_string()));
        assert_eq!(d.include_dir, Some(site.join("cuda_runtime/include")));
        // The driver never comes from wheels.
        touch(&site.join("bogus/lib/libcuda.so.1"));
        assert!(discover(&roots).get(Lib::Driver).is_none());
        assert_eq!(d.missing(), vec![Lib::Driver]);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_toolkit_layout_and_versions_from_the_real_file() {
        let t = temp("toolkit");
        touch(&t.join("lib64/libnccl.so.2.21.5"));
        std::os::unix::fs::symlink("libnccl.so.2.21.5", t.join("lib64/libnccl.so.2")).unwrap();
        touch(&t.join("lib64/libcublas.so.13.0.2.14"));
        std::os::unix::fs::symlink("libcublas.so.13.0.2.14", t.join("lib64/libcublas.so.13")).unwrap();
        std::os::unix::fs::symlink("libcublas.so.13", t.join("lib64/libcublas.so")).unwrap();
        let d = discover(&Roots(vec![toolkit_root("toolkit".into(), &t)]));
        let nccl = d.get(Lib::Nccl).unwrap();
        assert_eq!(nccl.path, t.join("lib64/libnccl.so.2"), "the shortest versioned name wins");
        assert_eq!(nccl.version.as_deref(), Some("2.21.5"));
        let blas = d.get(Lib::Cublas).unwrap();
        assert_eq!(blas.path, t.join("lib64/libcublas.so"), "a name cudarc opens is preferred");
        assert!(blas.cudarc_can_open());
        assert_eq!(blas.version.as_deref(), Some("13.0.2.14"));
        assert_eq!(blas.major(), Some(13));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
