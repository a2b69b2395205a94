//! `launcher doctor` and the library discovery, on the emulated CUDA device (kernels/emu): the
//! stand-in libcuda/cuBLAS/cuDNN/NCCL (`libmoco_emu.so`) and the real NVRTC from NVIDIA's wheel
//! are laid out in temporary folders as NVIDIA's Python wheels lay them out and as a CUDA
//! toolkit does, under the libraries' real versioned names (`libnccl.so.2`, `libcudnn.so.9`,
//! ...), which cudarc does not all open by itself. The programs must find them with no
//! environment prepared (`MOCO_CUDA_SEARCH_SYSTEM=0` keeps this machine's own folders out).
//!
//! Needs `MOCO_NVRTC_LIB` / `MOCO_NVRTC_INCLUDE` (scripts/test.sh exports them) and the
//! emulator built (`cargo build --bins` builds it).

use moco_tests::{assert_contains, emu_env, launcher, TempDir, TINY_RUN};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The emulator's library and the real NVRTC folder and headers.
struct Parts {
    emu: PathBuf,
    nvrtc_lib: PathBuf,
    include: PathBuf,
}

fn parts() -> Parts {
    let env = emu_env();
    let path = &env.iter().find(|(k, _)| k == "LD_LIBRARY_PATH").expect("emu_env sets LD_LIBRARY_PATH").1;
    let links = PathBuf::from(path.split(':').next().expect("a first folder"));
    let emu = std::fs::read_link(links.join("libcuda.so")).expect("emu_env links libcuda.so to the emulator");
    let nvrtc_lib =
        PathBuf::from(std::env::var("MOCO_NVRTC_LIB").expect("MOCO_NVRTC_LIB (scripts/test.sh sets it)"));
    let include = std::env::var("MOCO_NVRTC_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| nvrtc_lib.parent().expect("lib's parent").join("include"));
    assert!(include.join("cuda_fp16.h").is_file(), "no cuda_fp16.h in {}", include.display());
    Parts { emu, nvrtc_lib, include }
}

/// Which libraries a layout leaves out.
#[derive(Clone, Copy, Default)]
struct Without {
    driver: bool,
    nvrtc: bool,
    cublas: bool,
    cudnn: bool,
    nccl: bool,
    headers: bool,
}

fn link(target: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap_or_else(|e| panic!("link {} -> {}: {e}", at.display(), target.display()));
}

/// NVRTC's files (library and builtins) linked into `dir` under their own names.
fn nvrtc_into(p: &Parts, dir: &Path) {
    for e in std::fs::read_dir(&p.nvrtc_lib).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("libnvrtc") {
            link(&e.path(), &dir.join(&name));
        }
    }
}

/// The driver as a system installs it: `libcuda.so.1` in a folder of its own.
fn driver_into(p: &Parts, root: &Path) -> PathBuf {
    let dir = root.join("driver");
    link(&p.emu, &dir.join("libcuda.so.1"));
    dir
}

/// A venv with NVIDIA's CUDA 13 wheels installed: site-packages/nvidia/{cu13,cublas,cudnn,nccl}.
fn wheel_layout(p: &Parts, root: &Path, w: Without) -> PathBuf {
    let venv = root.join("venv");
    let nv = venv.join("lib/python3.12/site-packages/nvidia");
    if !w.nvrtc {
        nvrtc_into(p, &nv.join("cu13/lib"));
    }
    if !w.headers {
        link(&p.include, &nv.join("cu13/include"));
    }
    if !w.cublas {
        for n in ["libcublas.so.13", "libcublasLt.so.13"] {
            link(&p.emu, &nv.join("cublas/lib").join(n));
        }
    }
    if !w.cudnn {
        for n in ["libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9"] {
            link(&p.emu, &nv.join("cudnn/lib").join(n));
        }
    }
    if !w.nccl {
        link(&p.emu, &nv.join("nccl/lib/libnccl.so.2"));
    }
    std::fs::create_dir_all(&nv).unwrap();
    venv
}

/// A toolkit under CUDA_HOME with cuDNN and NCCL copied in, as NVIDIA's tarballs instruct.
fn toolkit_layout(p: &Parts, root: &Path) -> PathBuf {
    let home = root.join("cuda");
    let lib = home.join("lib64");
    nvrtc_into(p, &lib);
    link(&p.include, &home.join("include"));
    link(&p.emu, &lib.join("libcublas.so.13.0.0.19"));
    link(Path::new("libcublas.so.13.0.0.19"), &lib.join("libcublas.so.13"));
    link(Path::new("libcublas.so.13"), &lib.join("libcublas.so"));
    link(&p.emu, &lib.join("libcublasLt.so.13"));
    link(&p.emu, &lib.join("libcudnn.so.9.10.2"));
    link(Path::new("libcudnn.so.9.10.2"), &lib.join("libcudnn.so.9"));
    link(&p.emu, &lib.join("libnccl.so.2.27.3"));
    link(Path::new("libnccl.so.2.27.3"), &lib.join("libnccl.so.2"));
    home
}

/// `launcher ARGS` with nothing prepared: only `env` (and the emulator's settings) set.
fn launcher_in(
    root: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    extra: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(launcher());
    cmd.args(args).current_dir(root).stdin(Stdio::null());
    for k in [
        "LD_LIBRARY_PATH",
        "MOCO_NVRTC_INCLUDE",
        "MOCO_NVRTC_LIB",
        "MOCO_CUDA_INCLUDE",
        "MOCO_CUDA_LIBS",
        "MOCO_CUDA_ENV_READY",
        "MOCO_CUDA_DISCOVERY",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CUDA_HOME",
        "CUDA_PATH",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("MOCO_CUDA_SEARCH_SYSTEM", "0").env("TMPDIR", root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the launcher starts");
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!se.contains("panicked") && !so.contains("panicked"), "{so}\n{se}");
    (out.status.code().unwrap_or(-1), so, se)
}

const DOCTOR: &[&str] = &["doctor", "--preset", "tiny"];

#[test]
fn doctor_passes_on_the_wheel_layout_and_bridges_libnccl_so_2() {
    let p = parts();
    let t = TempDir::new("doctor-wheels");
    let venv = wheel_layout(&p, t.path(), Without::default());
    let driver = driver_into(&p, t.path());
    let (code, out, err) =
        launcher_in(t.path(), DOCTOR, &[("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_contains(
        &out,
        &[
            "ok    NVIDIA driver: supports CUDA 13.0",
            "ok    GPU 1: moco-emu emulated GPU, 8.0 GiB, compute capability 8.6",
            "nvidia/nccl/lib/libnccl.so.2 (version 2), from Python wheels ($VIRTUAL_ENV=",
            "nvidia/cudnn/lib/libcudnn.so.9 (version 9), from Python wheels",
            "nvidia/cu13/include",
            "loaded as CUBIN, ran correctly",
            "cuDNN conv 3x3 8->8 at 16x16, fp16, forward: ran, result checked",
            "backward data: ran, result checked",
            "backward filter: ran, result checked",
            "cuBLAS GemmEx fp16 -> fp32: ran, result checked",
            // cudarc never opens libnccl.so.2: this ran through the link folder.
            "NCCL all-reduce between 2 GPU(s): ran, sums checked",
            "GPU 0: the plan needs",
            "doctor: training can start on the GPU",
        ],
    );
    // The link folder under the (per-test) temporary folder names libnccl.so.
    let links: Vec<PathBuf> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("moco-cuda-links"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten().map(|e| e.path()))
        .collect();
    assert!(links.iter().any(|d| d.join("libnccl.so").exists()), "no libnccl.so link in {links:?}");
    // Without the discovery the same layout is unusable: cudarc finds neither NCCL nor NVRTC.
    let (code, out, _) = launcher_in(
        t.path(),
        DOCTOR,
        &[("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)],
        &[("MOCO_CUDA_DISCOVERY", "off")],
    );
    assert_eq!(code, 1, "{out}");
    assert_contains(&out, &["NCCL (libnccl)", "cannot be loaded under the names cudarc tries"]);
}

#[test]
fn doctor_passes_on_a_toolkit_under_cuda_home() {
    let p = parts();
    let t = TempDir::new("doctor-toolkit");
    let home = toolkit_layout(&p, t.path());
    let driver = driver_into(&p, t.path());
    let (code, out, err) =
        launcher_in(t.path(), DOCTOR, &[("CUDA_HOME", &home), ("LD_LIBRARY_PATH", &driver)], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_contains(
        &out,
        &[
            "lib64/libnccl.so.2 (version 2.27.3), from $CUDA_HOME=",
            "lib64/libcublas.so (version 13.0.0.19), from $CUDA_HOME=",
            "lib64/libcudnn.so.9 (version 9.10.2), from $CUDA_HOME=",
            "NCCL all-reduce between 2 GPU(s): ran, sums checked",
            "doctor: training can start on the GPU",
        ],
    );
}

#[test]
fn each_missing_library_is_named_with_its_fix() {
    let p = parts();
    let cases: [(&str, Without, &[&str]); 6] = [
        (
            "driver",
            Without { driver: true, ..Default::default() },
            &["FAIL  NVIDIA driver", "nvidia-smi", "--device cpu"],
        ),
        (
            "nvrtc",
            Without { nvrtc: true, ..Default::default() },
            &["FAIL  NVRTC (libnvrtc): not found", "nvidia-cuda-nvrtc"],
        ),
        (
            "cublas",
            Without { cublas: true, ..Default::default() },
            &["FAIL  cuBLAS (libcublas): not found", "pip install nvidia-cublas"],
        ),
        (
            "cudnn",
            Without { cudnn: true, ..Default::default() },
            &["FAIL  cuDNN (libcudnn): not found", "pip install nvidia-cudnn-cu13"],
        ),
        (
            "nccl",
            Without { nccl: true, ..Default::default() },
            &["FAIL  NCCL (libnccl): not found", "pip install nvidia-nccl-cu13"],
        ),
        (
            "headers",
            Without { headers: true, ..Default::default() },
            &["FAIL  cuda_fp16.h (for NVRTC): not found", "nvidia-cuda-runtime"],
        ),
    ];
    for (what, w, needles) in cases {
        let t = TempDir::new(&format!("doctor-no-{what}"));
        let venv = wheel_layout(&p, t.path(), w);
        let mut env: Vec<(&str, &Path)> = vec![("VIRTUAL_ENV", &venv)];
        let driver = driver_into(&p, t.path());
        if !w.driver {
            env.push(("LD_LIBRARY_PATH", &driver));
        }
        let (code, out, err) = launcher_in(t.path(), DOCTOR, &env, &[]);
        assert_eq!(code, 1, "without {what} the doctor must fail:\n{out}\n{err}");
        assert_contains(&out, needles);
        if what != "driver" {
            assert_contains(&out, &["setup_gpu.sh --cuda 13"]);
        }
        assert_contains(&out, &["training on the GPU cannot start"]);
        assert_eq!(out.matches("  FAIL  ").count(), 1, "only {what} is missing:\n{out}");
    }
}

#[test]
fn a_driver_older_than_nvrtc_is_refused_with_advice_and_setup_picks_its_cuda() {
    let p = parts();
    let t = TempDir::new("doctor-old-driver");
    let venv = wheel_layout(&p, t.path(), Without::default());
    let driver = driver_into(&p, t.path());
    let env: [(&str, &Path); 2] = [("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)];
    let (code, out, err) = launcher_in(t.path(), DOCTOR, &env, &[("MOCO_EMU_DRIVER_VERSION", "12040")]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert_contains(
        &out,
        &["supports CUDA 12.4", "NVRTC 13.0 is newer than the driver's CUDA 12.4", "setup_gpu.sh --cuda 12"],
    );
    // Training is refused before any worker starts, with the same advice.
    let run = t.path().join("run");
    let mut args = vec!["--device", "cuda", "--steps", "1", "--out", run.to_str().unwrap()];
    args.extend(TINY_RUN);
    let (code, _, err) = launcher_in(t.path(), &args, &env, &[("MOCO_EMU_DRIVER_VERSION", "12040")]);
    assert_ne!(code, 0);
    assert_contains(
        &err,
        &["the GPU is not ready for training", "NVRTC 13.0 is newer than the driver's CUDA 12.4"],
    );
    assert!(!run.join("logs").exists(), "no worker may have started");

    // The setup script reads the driver's version through cuDriverGetVersion (no nvidia-smi
    // here) and chooses CUDA 12 wheels no newer than 12.4.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup_gpu.sh");
    let out = Command::new(&script)
        .args(["--dry-run", "--target", t.path().join("libs").to_str().unwrap()])
        .env("LD_LIBRARY_PATH", &driver)
        .env("MOCO_EMU_DRIVER_VERSION", "12040")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env_remove("MOCO_DRIVER_CUDA")
        .output()
        .expect("setup_gpu.sh runs");
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("no NVIDIA driver found") {
        assert!(out.status.success(), "{err}");
        assert_contains(
            &err,
            &[
                "the NVIDIA driver supports CUDA 12.4",
                "nvidia-cuda-nvrtc-cu12>=12.0,<12.5",
                "nvidia-cudnn-cu12>=9,<10",
                "nvidia-nccl-cu12>=2,<3",
                "nvidia-cublas-cu12",
                "dry run",
            ],
        );
    } else {
        // /usr/bin/python3 may be absent or lack ctypes access; the choice is still checked below.
        eprintln!("note: python3 on /usr/bin could not read the emulated driver's version: {err}");
    }
}

#[test]
fn setup_gpu_chooses_the_wheels_of_the_drivers_cuda() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup_gpu.sh");
    let t = TempDir::new("setup-gpu");
    let run = |args: &[&str]| {
        let out = Command::new(&script)
            .args(args)
            .args(["--dry-run", "--target", t.path().to_str().unwrap()])
            .env("PATH", "/usr/bin:/bin")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("MOCO_DRIVER_CUDA")
            .output()
            .expect("setup_gpu.sh runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = run(&["--driver-cuda", "13.0"]);
    assert!(ok, "{err}");
    assert_contains(
        &err,
        &[
            "CUDA 13 wheels",
            "nvidia-cuda-nvrtc>=13.0,<13.1",
            "nvidia-cudnn-cu13",
            "nvidia-nccl-cu13",
            "nvidia-cublas>=13,<14",
        ],
    );
    let (ok, err) = run(&["--driver-cuda", "12.8"]);
    assert!(ok, "{err}");
    assert_contains(
        &err,
        &["CUDA 12 wheels", "nvidia-cuda-nvrtc-cu12>=12.0,<12.9", "nvidia-cuda-runtime-cu12>=12.0,<12.9"],
    );
    // A CUDA 13 driver runs CUDA 12 libraries: --cuda 12 is allowed, with any 12.x NVRTC.
    let (ok, err) = run(&["--driver-cuda", "13.0", "--cuda", "12"]);
    assert!(ok, "{err}");
    assert_contains(&err, &["nvidia-cuda-nvrtc-cu12>=12.0,<13"]);
    let (ok, err) = run(&["--driver-cuda", "11.8"]);
    assert!(!ok);
    assert_contains(&err, &["needs CUDA 12 or newer", "update the NVIDIA"]);
    // No driver anywhere (no nvidia-smi, libcuda not loadable): the driver comes first.
    let (ok, err) = run(&[]);
    if !ok {
        assert_contains(&err, &["no NVIDIA driver found", "nvidia-smi"]);
    } else {
        // This machine has a driver: then it chose from the driver's version.
        assert_contains(&err, &["the NVIDIA driver supports CUDA"]);
    }
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none(), "a dry run installs nothing");
}

#[test]
fn a_refused_cubin_falls_back_to_ptx() {
    let p = parts();
    let t = TempDir::new("doctor-ptx");
    let venv = wheel_layout(&p, t.path(), Without::default());
    let driver = driver_into(&p, t.path());
    let env: [(&str, &Path); 2] = [("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)];
    let (code, out, err) = launcher_in(t.path(), DOCTOR, &env, &[("MOCO_EMU_REFUSE_CUBIN", "1")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_contains(
        &out,
        &["the driver refused the CUBIN", "CUDA_ERROR_NO_BINARY_FOR_GPU", "loaded as PTX, ran correctly"],
    );
}

#[test]
fn training_stops_with_the_doctors_advice_instead_of_a_worker_panic() {
    let p = parts();
    let t = TempDir::new("doctor-train");
    let venv = wheel_layout(&p, t.path(), Without { cudnn: true, ..Default::default() });
    let driver = driver_into(&p, t.path());
    let run = t.path().join("run");
    let mut args = vec!["--device", "cuda", "--gpus", "2", "--steps", "1", "--out", run.to_str().unwrap()];
    args.extend(TINY_RUN);
    let (code, _, err) =
        launcher_in(t.path(), &args, &[("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)], &[]);
    assert_ne!(code, 0);
    assert_contains(
        &err,
        &["the GPU is not ready for training", "cuDNN (libcudnn): not found", "setup_gpu.sh"],
    );
    assert!(!run.join("logs").exists(), "no worker may have started");
}

#[test]
fn the_launchers_workers_and_a_worker_started_by_hand_find_the_libraries_themselves() {
    let p = parts();
    let t = TempDir::new("doctor-workers");
    let venv = wheel_layout(&p, t.path(), Without::default());
    let driver = driver_into(&p, t.path());
    let env: [(&str, &Path); 2] = [("VIRTUAL_ENV", &venv), ("LD_LIBRARY_PATH", &driver)];
    // Two workers spawned by the launcher, joined by NCCL (only there as libnccl.so.2).
    let run = t.path().join("run");
    let mut args = vec![
        "--device",
        "cuda",
        "--gpus",
        "2",
        "--nccl",
        "auto",
        "--steps",
        "1",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(TINY_RUN);
    let (code, _, err) = launcher_in(t.path(), &args, &env, &[]);
    assert_eq!(code, 0, "{err}");
    assert_contains(&err, &["2 worker(s) on the cuda", "done: 1 steps"]);
    let log = std::fs::read_to_string(run.join("logs/rank-0.log")).unwrap_or_default();
    assert!(log.contains("NCCL"), "rank 0 did not use NCCL:\n{log}");
    // A worker started by hand (as under SLURM) searches by itself: NVRTC's builtins and
    // cuda_fp16.h are only in the wheel's folders.
    let mut cmd = Command::new(moco_tests::worker());
    cmd.args(["--device", "cuda", "--steps", "1", "--out", t.path().join("w").to_str().unwrap()])
        .args(TINY_RUN)
        .current_dir(t.path())
        .stdin(Stdio::null());
    for k in [
        "MOCO_NVRTC_INCLUDE",
        "MOCO_NVRTC_LIB",
        "MOCO_CUDA_INCLUDE",
        "MOCO_CUDA_ENV_READY",
        "RANK",
        "WORLD_SIZE",
        "SLURM_PROCID",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("MOCO_CUDA_SEARCH_SYSTEM", "0").env("TMPDIR", t.path()).envs(env.iter().map(|(k, v)| (*k, *v)));
    let out = cmd.output().expect("the worker starts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
