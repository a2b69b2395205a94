//! `launcher --nsys`: run each worker under `nsys profile` (Nsight Systems), one report per
//! rank in the run's log folder. NVTX ranges carry the same names as the trace phases
//! (`moco_worker::trace`), so the report shows forward / backward / comm / optimizer per step.

use crate::error::{LauncherError, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rewrite `cmd` (a worker command) to run under `nsys profile`, writing
/// `out_dir/rank<rank>.nsys-rep`; fails clearly when nsys is not on PATH.
pub fn wrap_with_nsys(cmd: &mut Command, out_dir: &Path, rank: usize) -> Result<()> {
    wrap_with_nsys_in(std::env::var_os("PATH").as_deref(), cmd, out_dir, rank)
}

/// `wrap_with_nsys` looking for nsys in `path_var` (a PATH value).
fn wrap_with_nsys_in(path_var: Option<&OsStr>, cmd: &mut Command, out_dir: &Path, rank: usize) -> Result<()> {
    let nsys = path_var.and_then(|p| find_in(p, "nsys")).ok_or_else(|| {
        LauncherError::Spawn(
            "--nsys: `nsys` (Nsight Systems) is not on PATH; install it or drop --nsys".into(),
        )
    })?;
    *cmd = wrapped(&nsys, cmd, out_dir, rank);
    Ok(())
}

/// `nsys profile ... -o out_dir/rank<r> <program> <args>`, with the command's environment and
/// working folder.
fn wrapped(nsys: &Path, cmd: &Command, out_dir: &Path, rank: usize) -> Command {
    let mut w = Command::new(nsys);
    w.arg("profile")
        .arg("--trace=cuda,nvtx,osrt")
        .arg("--force-overwrite=true")
        .arg("-o")
        .arg(out_dir.join(format!("rank{rank}")))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    w
}

/// The first executable file called `name` in the folders of `path_var`.
fn find_in(path_var: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moco-nsys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn worker_cmd() -> Command {
        let mut c = Command::new("/opt/moco/worker");
        c.args(["--rank", "2", "--world-size", "4"]).env("RUN_ID", "abc").env_remove("CUDA_VISIBLE_DEVICES");
        c.current_dir("/tmp");
        c
    }

    #[test]
    fn wraps_the_worker_command_with_its_environment() {
        let w = wrapped(Path::new("/usr/local/bin/nsys"), &worker_cmd(), Path::new("runs/x/logs"), 2);
        assert_eq!(w.get_program(), "/usr/local/bin/nsys");
        let args: Vec<&OsStr> = w.get_args().collect();
        let want = [
            "profile",
            "--trace=cuda,nvtx,osrt",
            "--force-overwrite=true",
            "-o",
            "runs/x/logs/rank2",
            "/opt/moco/worker",
            "--rank",
            "2",
            "--world-size",
            "4",
        ];
        assert_eq!(args, want.iter().map(OsStr::new).collect::<Vec<_>>());
        let envs: Vec<(&OsStr, Option<&OsStr>)> = w.get_envs().collect();
        assert!(envs.contains(&(OsStr::new("RUN_ID"), Some(OsStr::new("abc")))), "{envs:?}");
        assert!(envs.contains(&(OsStr::new("CUDA_VISIBLE_DEVICES"), None)), "{envs:?}");
        assert_eq!(w.get_current_dir(), Some(Path::new("/tmp")));
    }

    #[test]
    fn finds_an_executable_nsys_and_skips_other_files() {
        let d = temp_dir("find");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("nsys"), "not executable").unwrap();
        std::fs::write(b.join("nsys"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("nsys"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_in(&path, "nsys"), Some(b.join("nsys")));

        let mut cmd = worker_cmd();
        wrap_with_nsys_in(Some(&path), &mut cmd, &d, 0).unwrap();
        assert_eq!(cmd.get_program(), b.join("nsys").as_os_str());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn without_nsys_the_error_says_so_and_the_command_is_untouched() {
        let d = temp_dir("missing");
        let path = OsString::from(d.as_os_str());
        let mut cmd = worker_cmd();
        let e = wrap_with_nsys_in(Some(&path), &mut cmd, &d, 0).unwrap_err().to_string();
        assert!(e.contains("nsys") && e.contains("PATH") && e.contains("--nsys"), "{e}");
        assert_eq!(cmd.get_program(), "/opt/moco/worker");
        let e = wrap_with_nsys_in(None, &mut cmd, &d, 0).unwrap_err().to_string();
        assert!(e.contains("not on PATH"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
