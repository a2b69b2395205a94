//! The recursive walk of a data folder: image files by extension, with sizes and modification
//! times, in a deterministic order.
//!
//! - Symbolic links are followed (data folders are often links), with loop protection: every
//!   folder is identified by (device, inode) and entered once; a link back into a folder already
//!   walked, or a link to itself, is listed as a symlink loop.
//! - Hidden entries (names starting with `.`, which includes the `.moco-cache` folder) are not
//!   walked.
//! - Entries of each folder are visited in name order and the result is sorted by relative path,
//!   so the tile order, the labels and the cache key do not depend on the file system.
//! - The same file reached twice (hard or symbolic links) is kept once; the others are listed.

use super::report::{SkipKind, Skipped};
use crate::error::{Result, WorkerError};
use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// Extensions (lower case) of the files treated as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff"];

/// An image file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// Path relative to the data folder, `/`-separated.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

/// Everything the walk found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Image files, sorted by `rel`.
    pub files: Vec<ScannedFile>,
    pub skipped: Vec<Skipped>,
    /// Files without an image extension (relative paths).
    pub ignored: Vec<String>,
}

/// Whether `path`'s extension names an image format.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Modification time of `m` in nanoseconds since the epoch (0 where the platform has none).
pub fn mtime_ns(m: &Metadata) -> i128 {
    match m.modified() {
        Ok(t) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    }
}

#[cfg(unix)]
fn identity(m: &Metadata, _path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_m: &Metadata, path: &Path) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canon.hash(&mut h);
    (0, h.finish())
}

fn join_rel(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Walk `root`. Errors only when `root` itself is not a readable folder.
pub fn scan(root: &Path) -> Result<Scan> {
    let meta = std::fs::metadata(root).map_err(|e| {
        WorkerError::Data(format!(
            "--data {}: {e} (give a folder of PNG, JPEG or TIFF images)",
            root.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(WorkerError::Data(format!(
            "--data {}: not a folder (give a folder of PNG, JPEG or TIFF images, or `synthetic`)",
            root.display()
        )));
    }
    let mut out = Scan::default();
    let mut dirs_seen: HashMap<(u64, u64), String> = HashMap::new();
    dirs_seen.insert(identity(&meta, root), ".".into());
    let mut found: Vec<(ScannedFile, (u64, u64))> = Vec::new();
    // Depth-first, folders in reverse name order on the stack so they pop in name order. Links
    // to folders wait until every real folder reachable without links has been walked, so a
    // folder is listed under its real path and the link is the one reported.
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let mut linked: Vec<(PathBuf, String, (u64, u64))> = Vec::new();
    loop {
        let Some((dir, prefix)) = stack.pop() else {
            if linked.is_empty() {
                break;
            }
            let mut accepted = Vec::new();
            for (path, rel, id) in std::mem::take(&mut linked) {
                match dirs_seen.get(&id) {
                    Some(first) => out.skipped.push(Skipped::new(
                        rel,
                        SkipKind::SymlinkLoop,
                        format!("link to a folder already walked ({first}); not entered again"),
                    )),
                    None => {
                        dirs_seen.insert(id, rel.clone());
                        accepted.push((path, rel));
                    }
                }
            }
            stack.extend(accepted.into_iter().rev());
            continue;
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if prefix.is_empty() => {
                return Err(WorkerError::io(format!("reading the data folder {}", root.display()), e))
            }
            Err(e) => {
                out.skipped.push(Skipped::new(
                    prefix,
                    SkipKind::Unreadable,
                    format!("folder not readable: {e}"),
                ));
                continue;
            }
        };
        let mut names: Vec<(String, PathBuf, bool)> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => {
                    let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
                    names.push((e.file_name().to_string_lossy().into_owned(), e.path(), is_link))
                }
                Err(e) => out.skipped.push(Skipped::new(
                    prefix.clone(),
                    SkipKind::Unreadable,
                    format!("folder listing failed part-way: {e}"),
                )),
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, path, is_link) in names {
            if name.starts_with('.') {
                continue;
            }
            let rel = join_rel(&prefix, &name);
            // `metadata` follows links: a loop or a dangling link fails here.
            let m = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    out.skipped.push(link_failure(rel, &path, is_link, &e));
                    continue;
                }
            };
            let id = identity(&m, &path);
            if m.is_dir() && is_link {
                linked.push((path, rel, id));
            } else if m.is_dir() {
                if let Some(first) = dirs_seen.get(&id) {
                    let why = format!("the same folder as {first}; not entered again");
                    out.skipped.push(Skipped::new(rel, SkipKind::SymlinkLoop, why));
                } else {
                    dirs_seen.insert(id, rel.clone());
                    subdirs.push((path, rel));
                }
            } else if m.is_file() && is_image_name(&path) {
                found.push((ScannedFile { rel, path, size: m.len(), mtime_ns: mtime_ns(&m) }, id));
            } else {
                out.ignored.push(rel);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    found.sort_by(|a, b| a.0.rel.cmp(&b.0.rel));
    let mut first_of: HashMap<(u64, u64), String> = HashMap::new();
    for (f, id) in found {
        if let Some(first) = first_of.get(&id) {
            out.skipped.push(Skipped::new(f.rel, SkipKind::Duplicate, format!("the same file as {first}")));
        } else {
            first_of.insert(id, f.rel.clone());
            out.files.push(f);
        }
    }
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    out.ignored.sort();
    Ok(out)
}

/// errno of "too many levels of symbolic links".
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

/// Why following `path` failed.
fn link_failure(rel: String, path: &Path, is_link: bool, e: &std::io::Error) -> Skipped {
    if is_link && e.raw_os_error() == Some(ELOOP) {
        Skipped::new(rel, SkipKind::SymlinkLoop, "symbolic link loop (the link resolves to itself)")
    } else if is_link && e.kind() == std::io::ErrorKind::NotFound {
        let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
        Skipped::new(rel, SkipKind::BrokenLink, format!("symbolic link to a missing target {target:?}"))
    } else {
        Skipped::new(rel, SkipKind::Unreadable, format!("cannot read: {e}"))
    }
}

/// Number of image files under `dir` (recursive, the rules above): what the launcher can use to
/// size a run before any worker starts. Skipped and undecodable files are counted too.
pub fn count_images(dir: &Path) -> Result<usize> {
    Ok(scan(dir)?.files.len())
}
