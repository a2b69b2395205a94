//! What happened to every file of a data folder: the dataset report printed at the end of
//! caching (and again, shorter, when a cache is reused), stored in the cache's header.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a file or folder was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipKind {
    /// A zero-byte file.
    Empty,
    /// The file or folder could not be read (permissions, I/O error, vanished).
    Unreadable,
    /// Size or modification time changed between the scan and the read.
    Changed,
    /// The content is not PNG, JPEG or TIFF, whatever the extension says.
    NotAnImage,
    /// A PNG/JPEG/TIFF the decoder rejects (truncated, corrupt bytes).
    Corrupt,
    /// A valid image in a form the pipeline does not take (float or signed samples, palette...).
    Unsupported,
    /// Band count differs from the dataset's majority.
    BandMismatch,
    /// Bit depth differs from the dataset's majority.
    DepthMismatch,
    /// Smaller than the training crop, with `--strict-data` (otherwise upscaled).
    TooSmall,
    /// A symbolic link that leads back into a folder already walked, or a link to itself.
    SymlinkLoop,
    /// A symbolic link whose target does not exist.
    BrokenLink,
    /// The same file (device and inode) reached under another name.
    Duplicate,
}

impl SkipKind {
    pub fn label(self) -> &'static str {
        match self {
            SkipKind::Empty => "empty",
            SkipKind::Unreadable => "unreadable",
            SkipKind::Changed => "changed while caching",
            SkipKind::NotAnImage => "not an image",
            SkipKind::Corrupt => "corrupt",
            SkipKind::Unsupported => "unsupported",
            SkipKind::BandMismatch => "band count",
            SkipKind::DepthMismatch => "bit depth",
            SkipKind::TooSmall => "smaller than the crop",
            SkipKind::SymlinkLoop => "symlink loop",
            SkipKind::BrokenLink => "broken link",
            SkipKind::Duplicate => "duplicate",
        }
    }
}

/// A file (or folder) left out, with a reason a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Path relative to the data folder, `/`-separated.
    pub path: String,
    pub kind: SkipKind,
    pub reason: String,
}

impl Skipped {
    pub fn new(path: impl Into<String>, kind: SkipKind, reason: impl Into<String>) -> Skipped {
        Skipped { path: path.into(), kind, reason: reason.into() }
    }
}

/// An image smaller than the training crop, kept by upscaling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upscaled {
    pub path: String,
    pub height: u32,
    pub width: u32,
}

/// The dataset report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    /// The data folder as given.
    pub folder: String,
    /// Files with an image extension (png, jpg, jpeg, tif, tiff) found by the scan.
    pub image_files: usize,
    /// Tiles in the cache.
    pub cached: usize,
    /// Side of the stored square tiles, pixels.
    pub stored_size: usize,
    /// The training crop the folder was cached for.
    pub crop: usize,
    /// Bands of the source images (the majority).
    pub source_bands: usize,
    /// Source bands kept, in cache order.
    pub bands: Vec<usize>,
    /// 8 or 16.
    pub depth_bits: u8,
    /// Native sizes (height, width, number of files), most frequent first.
    pub sizes: Vec<(u32, u32, usize)>,
    /// Class names (first-level sub-folders) when every tile sits in one; else empty.
    pub classes: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub skipped: Vec<Skipped>,
    pub upscaled: Vec<Upscaled>,
    /// Files without an image extension (README, labels.csv...), not counted as skipped.
    pub ignored: Vec<String>,
    pub notes: Vec<String>,
    /// Where the cache file is.
    pub cache_file: String,
    /// Bytes of tile data in the cache.
    pub data_bytes: u64,
}

/// Lines of a list shown before "... and N more".
const SHOW: usize = 20;

impl DatasetReport {
    pub fn skipped_of(&self, kind: SkipKind) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(move |s| s.kind == kind)
    }

    /// One line: what the cache holds.
    pub fn headline(&self) -> String {
        let bands = self.bands.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",");
        format!(
            "{} of {} image files cached as {s}x{s} tiles, {} band(s) ({bands} of {}), {}-bit, {:.1} MiB",
            self.cached,
            self.image_files,
            self.bands.len(),
            self.source_bands,
            self.depth_bits,
            self.data_bytes as f64 / (1024.0 * 1024.0),
            s = self.stored_size,
        )
    }
}

impl fmt::Display for DatasetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset report for {}", self.folder)?;
        writeln!(f, "  {}", self.headline())?;
        writeln!(f, "  cache: {}", self.cache_file)?;
        let sizes: Vec<String> =
            self.sizes.iter().take(5).map(|(h, w, n)| format!("{w}x{h} ({n})")).collect();
        let more = if self.sizes.len() > 5 {
            format!(", {} other sizes", self.sizes.len() - 5)
        } else {
            String::new()
        };
        writeln!(f, "  native sizes: {}{more}", sizes.join(", "))?;
        if self.classes.is_empty() {
            writeln!(f, "  labels: none (tiles are not all in first-level sub-folders)")?;
        } else {
            writeln!(
                f,
                "  labels: {} classes from sub-folders: {}",
                self.classes.len(),
                self.classes.join(", ")
            )?;
        }
        let fmt_v = |v: &[f32]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
        writeln!(
            f,
            "  band mean {} / std {} (0..1 units of the {}-bit range)",
            fmt_v(&self.mean),
            fmt_v(&self.std),
            self.depth_bits
        )?;
        if !self.upscaled.is_empty() {
            writeln!(
                f,
                "  warning: {} image(s) smaller than the {}-px crop were upscaled (--strict-data skips them):",
                self.upscaled.len(),
                self.crop
            )?;
            for u in self.upscaled.iter().take(SHOW) {
                writeln!(f, "    {} ({}x{})", u.path, u.width, u.height)?;
            }
            if self.upscaled.len() > SHOW {
                writeln!(f, "    ... and {} more", self.upscaled.len() - SHOW)?;
            }
        }
        if self.skipped.is_empty() {
            writeln!(f, "  skipped: none")?;
        } else {
            writeln!(f, "  skipped {} file(s):", self.skipped.len())?;
            for s in self.skipped.iter().take(SHOW) {
                writeln!(f, "    {} [{}]: {}", s.path, s.kind.label(), s.reason)?;
            }
            if self.skipped.len() > SHOW {
                writeln!(
                    f,
                    "    ... and {} more (full list in {}.txt)",
                    self.skipped.len() - SHOW,
                    self.cache_file
                )?;
            }
        }
        if !self.ignored.is_empty() {
            let names: Vec<&str> = self.ignored.iter().take(5).map(String::as_str).collect();
            let more = if self.ignored.len() > 5 { ", ..." } else { "" };
            writeln!(
                f,
                "  ignored {} file(s) without an image extension: {}{more}",
                self.ignored.len(),
                names.join(", ")
            )?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// The full report, every skipped file listed (written next to the cache).
pub fn full_listing(r: &DatasetReport) -> String {
    let mut s = r.to_string();
    if r.skipped.len() > SHOW || r.upscaled.len() > SHOW {
        s.push_str("\nall skipped files:\n");
        for k in &r.skipped {
            s.push_str(&format!("{} [{}]: {}\n", k.path, k.kind.label(), k.reason));
        }
        s.push_str("\nall upscaled files:\n");
        for u in &r.upscaled {
            s.push_str(&format!("{} ({}x{})\n", u.path, u.width, u.height));
        }
    }
    s
}
