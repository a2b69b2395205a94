//! One builder per cache: several workers on a machine (or nodes sharing a file system) opening
//! the same folder must not all decode it. The first creates `<quick key>.lock` atomically
//! (`O_EXCL`) and builds; the others wait for the finished cache, then open it.
//!
//! A builder that died leaves its lock behind: the holder refreshes the lock's modification
//! time every `HEARTBEAT`, and a lock not refreshed for `STALE` is removed by the next waiter.
//! (Two waiters removing the same stale lock at once can both end up building; each writes its
//! own temporary file and renames it over the same name, so the result is still one whole
//! cache, only built twice.)

use crate::error::{Result, WorkerError};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const STALE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// Held while building; dropping it removes the lock.
pub struct BuildLock {
    path: PathBuf,
    stop: Option<Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What waiting for the lock ended with.
pub enum Acquired<T> {
    /// This process builds.
    Build(BuildLock),
    /// Another process finished; `ready` found its result.
    Ready(T),
}

/// Take the build lock `name` in `dir`, or wait until `ready` returns something (checked while
/// another process holds the lock), for at most `timeout`.
pub fn acquire<T>(
    dir: &Path,
    name: &str,
    timeout: Duration,
    verbose: bool,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<Acquired<T>> {
    let path = dir.join(format!("{name}.lock"));
    let start = Instant::now();
    let mut told = false;
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                let _ = writeln!(f, "pid {} on {}", std::process::id(), host());
                return Ok(Acquired::Build(hold(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(WorkerError::io(format!("creating the cache lock {}", path.display()), e)),
        }
        if let Some(t) = ready() {
            return Ok(Acquired::Ready(t));
        }
        let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > STALE) {
            if verbose {
                eprintln!("cache: removing the stale lock {} (its builder stopped)", path.display());
            }
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if start.elapsed() > timeout {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(WorkerError::Data(format!(
                "waited {:.0} s for another process ({}) to finish building the cache in {}; if no such \
                 process is running, delete {}",
                timeout.as_secs_f64(),
                holder.trim(),
                dir.display(),
                path.display()
            )));
        }
        if verbose && !told {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("cache: another process ({}) is building this cache; waiting for it", holder.trim());
            told = true;
        }
        std::thread::sleep(POLL);
    }
}

fn hold(path: PathBuf) -> BuildLock {
    let (tx, rx) = channel::<()>();
    let p = path.clone();
    let heartbeat = std::thread::Builder::new()
        .name("cache-lock".into())
        .spawn(move || loop {
            match rx.recv_timeout(HEARTBEAT) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                        let _ = f.set_modified(SystemTime::now());
                    }
                }
                _ => return,
            }
        })
        .ok();
    BuildLock { path, stop: Some(tx), heartbeat }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "this machine".into())
}
