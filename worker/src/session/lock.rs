//! One owner per run folder: two launchers (or a launcher and a hand-started rank 0) training
//! into the same `--out` would interleave checkpoints, metrics and the `latest` pointer.
//!
//! The owner holds an exclusive `flock` on `RUN/.lock` for as long as it runs. The kernel
//! releases it when the process exits in any way (including SIGKILL and crashes), so a lock of
//! a dead process is never in the way; the file's text (pid, host, start time, command) only
//! tells a second owner who holds the folder. Under the launcher, the launcher owns the folder
//! and its workers do not lock; a worker started by hand or by srun locks it as rank 0.

use crate::error::{Result, WorkerError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Held for as long as the run folder is ours; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<File>,
    pub path: PathBuf,
    /// The previous holder's description when it died without clearing it (it is gone now).
    pub previous: Option<String>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

/// "pid 123 on host h since 1700000000 (unix time): launcher --out runs/x ..."
fn describe_self() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let cmd: Vec<String> = std::env::args().collect();
    format!("pid {} on host {} since {now} (unix time): {}", std::process::id(), host_name(), cmd.join(" "))
}

impl RunLock {
    /// Take the run folder `dir` (created if missing) or fail naming its holder. On a file
    /// system without `flock` support the run goes on unlocked, with `previous` saying so.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir)
            .map_err(|e| WorkerError::io(format!("creating the run folder {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let io = |what: &str, e| WorkerError::io(format!("{what} {}", path.display()), e);
        // Not truncated on open: the text belongs to the holder until we have the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        let mut text = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut text);
                let who = text.trim();
                return Err(WorkerError::BadFile {
                    path: dir.to_path_buf(),
                    problem: format!(
                        "this run folder is in use by another run ({}). Wait for it to end or stop it, or give \
                         this run another --out",
                        if who.is_empty() { "its owner did not say who it is" } else { who }
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                return Ok(RunLock {
                    _file: None,
                    path,
                    previous: Some(format!(
                        "the file system of the run folder cannot lock files ({e}); nothing stops a second run from \
                         using it"
                    )),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        let _ = file.read_to_string(&mut text);
        let previous = Some(text.trim().to_string()).filter(|t| !t.is_empty());
        // Rewritten in place, not by rename: a new file would not carry our lock.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", describe_self()))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing", e))?;
        Ok(RunLock { _file: Some(file), path, previous })
    }
}

impl Drop for RunLock {
    /// An owner that ends normally leaves an empty file, so text found by the next owner means
    /// its writer died without cleaning up (worth a note). The kernel drops the lock itself.
    fn drop(&mut self) {
        if let Some(f) = &self._file {
            let _ = f.set_len(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_is_free() {
        let dir = std::env::temp_dir().join(format!("moco-lock-{}", std::process::id()));
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("in use by another run (pid {} on host", std::process::id())), "{err}");
        drop(first);
        let mut again = RunLock::acquire(&dir).unwrap();
        assert_eq!(again.previous, None, "a clean exit leaves no text");
        // What a killed owner leaves: its text, and no lock (the kernel dropped it).
        drop(again._file.take());
        let after_crash = RunLock::acquire(&dir).unwrap();
        assert!(after_crash.previous.as_ref().is_some_and(|p| p.contains("pid ")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
