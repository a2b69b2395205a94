//! `launcher --nsys`: run each worker under `nsys profile` (Nsight Systems), one report per
//! rank in the run's log folder. NVTX ranges carry the same names as the trace phases.

use crate::error::{LauncherError, Result};
use std::path::Path;
use std::process::Command;

/// Rewrite `cmd` (a worker command) to run under `nsys profile`; fails clearly when nsys is
/// not on PATH.
pub fn wrap_with_nsys(cmd: &mut Command, out_dir: &Path, rank: usize) -> Result<()> {
    let nsys = find_on_path("nsys").ok_or_else(|| {
        LauncherError::Spawn(
            "--nsys: `nsys` (Nsight Systems) is not on PATH; install it or drop --nsys".into(),
        )
    })?;
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new(nsys);
    wrapped
        .arg("profile")
        .arg("--trace=cuda,nvtx,osrt")
        .arg("--force-overwrite=true")
        .arg("-o")
        .arg(out_dir.join(format!("rank{rank}")))
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    *cmd = wrapped;
    Ok(())
}

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
