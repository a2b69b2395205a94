//! Crash-safe file writes: a temporary file in the destination's folder, written, flushed and
//! fsynced, then renamed over the destination, then the folder fsynced. A reader therefore sees
//! either the old file or the complete new one, never a prefix, whatever kills the writer
//! (SIGKILL, power loss, a full disk).
//!
//! Temporary names are `.<name>.tmp-<pid>-<n>`: hidden, never matched by a loader, and removed by
//! `clean_temps` once no save can be running (the commit of the next checkpoint).

use crate::error::{Result, WorkerError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks temporary files (see the module doc).
pub const TMP_MARK: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary path `path` is written through.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}{TMP_MARK}{}-{n}", std::process::id()))
}

/// True for a file name `temp_path` produced.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TMP_MARK)
}

/// An I/O error with what was being done, the path, and what the user can do about it.
pub fn io_error(what: &str, path: &Path, e: std::io::Error) -> WorkerError {
    let hint = match e.raw_os_error() {
        // ENOSPC, EDQUOT: the common way a long run's save fails.
        Some(28) | Some(122) => {
            ": the disk is full (or over quota). Free space there, or point the run folder at \
             another disk with --out; the previous checkpoint is untouched"
        }
        Some(30) => ": the file system is read-only; write the run elsewhere with --out",
        Some(13) => ": permission denied; write the run to a folder you own with --out",
        _ => "",
    };
    WorkerError::io(format!("{what} {}{hint}", path.display()), e)
}

/// Write `path` atomically with `fill`, which writes the content into a buffered file and may
/// return a value (a checksum). On any error the temporary file is removed and `path` is left
/// as it was.
pub fn write_atomic<T>(
    path: &Path,
    what: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let value = fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        Ok(value)
    })();
    match result {
        Ok(v) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_error(&format!("writing {what}"), path, e))
        }
    }
}

/// fsync a folder so that renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(d).and_then(|f| f.sync_all()).map_err(|e| io_error("syncing folder", d, e))
}

/// Remove every temporary file (`is_temp_name`) directly inside `dir`; returns what it removed.
/// Only call it when no save into `dir` can be running.
pub fn clean_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return removed };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}

/// Write a small text file atomically.
pub fn write_text_atomic(path: &Path, what: &str, text: &str) -> Result<()> {
    write_atomic(path, what, |w| w.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moco-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let d = dir("fail");
        let p = d.join("a.txt");
        write_text_atomic(&p, "test file", "old").unwrap();
        let err = write_atomic(&p, "test file", |w| {
            w.write_all(b"new, half")?;
            Err::<(), _>(std::io::Error::from_raw_os_error(28))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("disk is full") && err.contains("--out") && err.contains("a.txt"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn temps_are_recognised_and_cleaned() {
        let d = dir("clean");
        let t = temp_path(&d.join("rank-0.safetensors"));
        assert!(is_temp_name(&t.file_name().unwrap().to_string_lossy()));
        std::fs::write(&t, b"partial").unwrap();
        std::fs::write(d.join("meta.json"), b"{}").unwrap();
        assert_eq!(clean_temps(&d), vec![t]);
        assert!(d.join("meta.json").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
