//! Starting the worker processes: the `worker` binary next to the launcher, the environment
//! contract, and every line of each worker's output kept in RUN_DIR/logs/rank-R.log with the
//! last lines in memory for the failure report.

use crate::error::{LauncherError, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of a worker's output kept for the failure report.
pub const TAIL_LINES: usize = 30;

/// Everything a worker needs besides its rank.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub exe: PathBuf,
    /// Flags shared by every worker (config file, data, out, steps, device, ...).
    pub args: Vec<String>,
    pub world: usize,
    pub master: String,
    pub run_id: String,
    pub restart_count: u32,
    pub log_dir: PathBuf,
    /// Wrap each worker in `nsys profile`.
    pub nsys: bool,
}

/// A running worker.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// Last lines of its stdout and stderr, interleaved as they came.
    pub tail: Arc<Mutex<VecDeque<String>>>,
}

/// The `worker` binary: next to the launcher (cargo puts both in target/<profile>/).
pub fn worker_exe() -> Result<PathBuf> {
    let me = std::env::current_exe()
        .map_err(|e| LauncherError::Spawn(format!("cannot find the launcher's own path: {e}")))?;
    let exe = me.with_file_name(format!("worker{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        return Err(LauncherError::Spawn(format!(
            "the worker binary is missing at {} (it is built with the launcher: `cargo build --release`)",
            exe.display()
        )));
    }
    Ok(exe)
}

/// Start rank `rank`.
pub fn spawn(spec: &WorkerSpec, rank: usize) -> Result<Spawned> {
    let (host, port) = spec.master.rsplit_once(':').unwrap_or((&spec.master, "0"));
    let mut cmd = if spec.nsys {
        let mut std_cmd = std::process::Command::new(&spec.exe);
        crate::nsys::wrap_with_nsys(&mut std_cmd, &spec.log_dir, rank)?;
        Command::from(std_cmd)
    } else {
        Command::new(&spec.exe)
    };
    cmd.args(&spec.args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", spec.world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", host)
        .env("MASTER_PORT", port)
        .env("RUN_ID", &spec.run_id)
        .env("RESTART_COUNT", spec.restart_count.to_string())
        .env(moco_worker::session::group::SUPERVISED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A launcher that dies takes its workers with it (they also exit when the control
        // connection closes).
        .kill_on_drop(true);
    let mut child =
        cmd.spawn().map_err(|e| LauncherError::Spawn(format!("starting {}: {e}", spec.exe.display())))?;
    let pid = child.id().unwrap_or(0);
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let log_path = spec.log_dir.join(format!("rank-{rank}.log"));
    let out = child.stdout.take();
    let err = child.stderr.take();
    let writer = Arc::new(tokio::sync::Mutex::new(None::<tokio::fs::File>));
    for stream in [
        out.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        err.map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(pump(stream, log_path.clone(), writer.clone(), tail.clone()));
    }
    Ok(Spawned { child, pid, tail })
}

/// Copy a worker's output into its log file and the in-memory tail.
async fn pump(
    stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    log_path: PathBuf,
    file: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut f = file.lock().await;
            if f.is_none() {
                *f = open_log(&log_path).await;
            }
            if let Some(f) = f.as_mut() {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

async fn open_log(path: &Path) -> Option<tokio::fs::File> {
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await.ok()
}

/// The tail as one block of text.
pub fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}
