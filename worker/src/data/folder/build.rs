//! Building a cache from a scanned folder, in two passes over the files (both parallel on the
//! rayon pool):
//!
//! 1. probe: every file's header (format, size, bands, depth) without decoding pixels; the
//!    majority (bands, depth) becomes the dataset's, the other files are skipped and listed;
//! 2. cache: each remaining file is read once, checked against the scan (a file whose size or
//!    modification time changed meanwhile is skipped: the cache never lists bytes other than
//!    those read), hashed, decoded, resized and streamed into the cache file in file order.
//!
//! Then the per-band statistics are computed over the stored tiles, the header and report are
//! written, and the file is renamed to its content key.

use super::cache::{CacheHeader, CacheWriter, CachedFile, Keys, EXTENSION, FORMAT_VERSION};
use super::decode::{decode, probe_file, Probe};
use super::options::{BandChoice, FolderOptions};
use super::report::{full_listing, DatasetReport, SkipKind, Skipped, Upscaled};
use super::resize::store_tile;
use super::scan::{mtime_ns, Scan, ScannedFile};
use crate::data::dataset::BandStats;
use crate::data::tile::PixelDepth;
use crate::error::{Result, WorkerError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Files decoded per parallel round; bounds the decoded images held at once.
const ROUND: usize = 32;

/// A stored tile and what the header records about its file.
struct Done {
    stored: Vec<u8>,
    file: CachedFile,
    upscaled: bool,
}

/// Build the cache of `scan` into `dir`; returns the path of the sealed file.
pub fn build(root: &Path, scan: &Scan, opts: &FolderOptions, dir: &Path, keys: Keys) -> Result<PathBuf> {
    let mut report = DatasetReport {
        folder: root.display().to_string(),
        image_files: scan.files.len(),
        stored_size: opts.stored_size,
        crop: opts.crop,
        skipped: scan.skipped.clone(),
        ignored: scan.ignored.clone(),
        ..DatasetReport::default()
    };
    // Pass 1: probe.
    let probes: Vec<std::result::Result<Probe, (SkipKind, String)>> =
        scan.files.par_iter().map(|f| probe_file(&f.path)).collect();
    let mut kinds: BTreeMap<(usize, u8), usize> = BTreeMap::new();
    for p in probes.iter().flatten() {
        *kinds.entry((p.bands, bits(p.depth))).or_default() += 1;
    }
    // Most files wins; ties go to more bands, then more bits (deterministic).
    let Some((&(source_bands, depth_bits), &majority)) = kinds.iter().max_by_key(|(k, n)| (**n, **k)) else {
        for (f, p) in scan.files.iter().zip(&probes) {
            if let Err((kind, why)) = p {
                report.skipped.push(Skipped::new(&f.rel, *kind, why));
            }
        }
        return Err(nothing_usable(&report));
    };
    band_tie(&kinds, majority, source_bands, &opts.bands)?;
    let (bands, note) = opts.bands.resolve(source_bands)?;
    report.notes.extend(note);
    if source_bands > 4 && bands.len() == source_bands {
        report
            .notes
            .push(format!("{source_bands}-band tiles: the model's stem takes all {source_bands} bands"));
    }
    if kinds.len() > 1 {
        let all: Vec<String> = kinds.iter().map(|((b, d), n)| format!("{n} x {b}-band {d}-bit")).collect();
        report.notes.push(format!("mixed images ({}); kept the majority kind", all.join(", ")));
    }
    let depth = if depth_bits == 16 { PixelDepth::U16 } else { PixelDepth::U8 };
    let mut todo: Vec<&ScannedFile> = Vec::new();
    for (f, p) in scan.files.iter().zip(&probes) {
        match p {
            Err((kind, why)) => report.skipped.push(Skipped::new(&f.rel, *kind, why)),
            Ok(p) => match mismatch(p, source_bands, depth_bits, majority) {
                Some(s) => report.skipped.push(Skipped::new(&f.rel, s.0, s.1)),
                None => todo.push(f),
            },
        }
    }

    // Pass 2: read, check, decode, store.
    let mut writer = CacheWriter::create(dir)?;
    let mut files: Vec<CachedFile> = Vec::new();
    let mut progress = Progress::new(todo.len(), opts.verbose, root);
    let mut sizes: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for round in todo.chunks(ROUND) {
        let results: Vec<std::result::Result<Done, (SkipKind, String)>> =
            round.par_iter().map(|f| cache_one(f, opts, &bands, source_bands, depth)).collect();
        for (f, r) in round.iter().zip(results) {
            match r {
                Ok(d) => {
                    writer.push(&d.stored)?;
                    *sizes.entry((d.file.height, d.file.width)).or_default() += 1;
                    if d.upscaled {
                        let (height, width) = (d.file.height, d.file.width);
                        report.upscaled.push(Upscaled { path: f.rel.clone(), height, width });
                    }
                    files.push(d.file);
                }
                Err((kind, why)) => report.skipped.push(Skipped::new(&f.rel, kind, why)),
            }
        }
        progress.advance(round.len());
    }
    progress.finish();
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    if opts.strict && (!report.skipped.is_empty() || !report.upscaled.is_empty()) {
        return Err(strict_error(&report));
    }
    if files.is_empty() {
        return Err(nothing_usable(&report));
    }

    let s = opts.stored_size as u32;
    let crop = opts.crop as u32;
    let enlarged: usize =
        sizes.iter().filter(|((h, w), _)| (crop..s).contains(&(*h).min(*w))).map(|(_, n)| n).sum();
    if enlarged > 0 {
        report.notes.push(format!(
            "{enlarged} tile(s) between the {}-px crop and the {s}-px stored size were enlarged to it",
            opts.crop
        ));
    }
    let mut sizes: Vec<(u32, u32, usize)> = sizes.into_iter().map(|((h, w), n)| (h, w, n)).collect();
    sizes.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    let (labels, class_names) = labels_of(&files);
    let stats = BandStats::compute(&writer.view(opts.stored_size, bands.len(), depth)?, usize::MAX)?;
    let content = content_key(&files, opts, &bands, depth_bits);
    let dest = dir.join(format!("{content:032x}.{EXTENSION}"));
    report.cached = files.len();
    report.source_bands = source_bands;
    report.bands = bands.clone();
    report.depth_bits = depth_bits;
    report.sizes = sizes;
    report.classes = class_names.clone();
    report.mean = stats.mean.clone();
    report.std = stats.std.clone();
    report.cache_file = dest.display().to_string();
    report.data_bytes =
        writer.count() * (opts.stored_size * opts.stored_size * bands.len()) as u64 * (depth_bits as u64 / 8);
    let mut header = CacheHeader {
        count: 0,
        size: opts.stored_size as u32,
        bands: bands.len() as u32,
        depth_bits,
        data_hash: 0,
        mean: stats.mean,
        std: stats.std,
        labels,
        class_names,
        files,
        report,
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    writer.seal(&mut header, keys, &dest)?;
    // The full listing next to the cache, for reports too long for the terminal; best effort.
    let _ = std::fs::write(dest.with_extension(format!("{EXTENSION}.txt")), full_listing(&header.report));
    Ok(dest)
}

fn bits(d: PixelDepth) -> u8 {
    match d {
        PixelDepth::U8 => 8,
        PixelDepth::U16 => 16,
    }
}

fn mismatch(p: &Probe, bands: usize, depth_bits: u8, majority: usize) -> Option<(SkipKind, String)> {
    if p.bands != bands {
        Some((SkipKind::BandMismatch, format!("{} band(s); most images ({majority}) have {bands}", p.bands)))
    } else if bits(p.depth) != depth_bits {
        Some((
            SkipKind::DepthMismatch,
            format!("{}-bit; most images ({majority}) are {depth_bits}-bit", bits(p.depth)),
        ))
    } else {
        None
    }
}

/// Read, verify, decode and store one file.
fn cache_one(
    f: &ScannedFile,
    opts: &FolderOptions,
    bands: &[usize],
    source_bands: usize,
    depth: PixelDepth,
) -> std::result::Result<Done, (SkipKind, String)> {
    if let Some(hook) = &opts.before_read {
        hook(&f.path);
    }
    let bytes = std::fs::read(&f.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => (SkipKind::Changed, "deleted while the cache was built".to_string()),
        _ => (SkipKind::Unreadable, format!("cannot read: {e}")),
    })?;
    let now = std::fs::metadata(&f.path)
        .map_err(|e| (SkipKind::Changed, format!("vanished while caching: {e}")))?;
    if bytes.len() as u64 != f.size || now.len() != f.size || mtime_ns(&now) != f.mtime_ns {
        return Err((
            SkipKind::Changed,
            format!(
                "changed while the cache was built ({} bytes when scanned, {} read); it is read again next run",
                f.size,
                bytes.len()
            ),
        ));
    }
    let hash = xxh3_64(&bytes);
    let tile = decode(&bytes)?;
    drop(bytes);
    if tile.bands() != source_bands || tile.depth() != depth {
        return Err((
            SkipKind::Corrupt,
            format!("decodes to {} band(s), {}-bit, unlike its header", tile.bands(), bits(tile.depth())),
        ));
    }
    let (h, w) = (tile.height(), tile.width());
    let upscaled = h.min(w) < opts.crop;
    if upscaled && opts.strict {
        return Err((
            SkipKind::TooSmall,
            format!("{w}x{h} is smaller than the {}-px training crop", opts.crop),
        ));
    }
    let mut stored = Vec::with_capacity(opts.stored_size * opts.stored_size * bands.len() * 2);
    store_tile(&tile, bands, opts.stored_size, &mut stored);
    let file = CachedFile {
        rel: f.rel.clone(),
        bytes: f.size,
        mtime_ns: f.mtime_ns,
        hash,
        height: h as u32,
        width: w as u32,
    };
    Ok(Done { stored, file, upscaled })
}

/// Labels from first-level sub-folders, when every tile is in one.
fn labels_of(files: &[CachedFile]) -> (Option<Vec<u32>>, Vec<String>) {
    let class = |f: &CachedFile| f.rel.split_once('/').map(|(c, _)| c.to_string());
    if files.iter().any(|f| class(f).is_none()) {
        return (None, Vec::new());
    }
    let names: Vec<String> = files.iter().filter_map(class).collect::<BTreeSet<_>>().into_iter().collect();
    let labels = files
        .iter()
        .filter_map(|f| class(f).and_then(|c| names.iter().position(|n| *n == c)).map(|i| i as u32))
        .collect();
    (Some(labels), names)
}

/// The name of a cache: what it holds (the files' paths and content, stored size, bands,
/// depth, format version), so the same content always lands in the same file.
fn content_key(files: &[CachedFile], opts: &FolderOptions, bands: &[usize], depth_bits: u8) -> u128 {
    let mut h = Xxh3::new();
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(&(opts.stored_size as u64).to_le_bytes());
    h.update(&(opts.crop as u64).to_le_bytes());
    h.update(&[depth_bits]);
    for b in bands {
        h.update(&(*b as u64).to_le_bytes());
    }
    for f in files {
        h.update(f.rel.as_bytes());
        h.update(&[0]);
        h.update(&f.bytes.to_le_bytes());
        h.update(&f.hash.to_le_bytes());
    }
    h.digest128()
}

fn list(skipped: &[Skipped], max: usize) -> String {
    let mut s: Vec<String> =
        skipped.iter().take(max).map(|k| format!("  {}: {}", k.path, k.reason)).collect();
    if skipped.len() > max {
        s.push(format!("  ... and {} more", skipped.len() - max));
    }
    s.join("\n")
}

fn nothing_usable(r: &DatasetReport) -> WorkerError {
    WorkerError::Data(format!(
        "{}: none of the {} image file(s) is usable:\n{}",
        r.folder,
        r.image_files,
        list(&r.skipped, 20)
    ))
}

/// The error of `--strict-data` when files were skipped or upscaled (at build or at reuse).
pub fn strict_error(r: &DatasetReport) -> WorkerError {
    let mut all = r.skipped.clone();
    all.extend(r.upscaled.iter().map(|u| {
        Skipped::new(
            &u.path,
            SkipKind::TooSmall,
            format!("{}x{} is smaller than the {}-px training crop", u.width, u.height, r.crop),
        )
    }));
    WorkerError::Data(format!(
        "{}: --strict-data and {} file(s) cannot be used as they are (drop --strict-data to skip them):\n{}",
        r.folder,
        all.len(),
        list(&all, 20)
    ))
}

/// The progress of pass 2: an indicatif bar on a terminal, a line per quarter otherwise (logs).
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    lines: bool,
    next_line: usize,
    start: std::time::Instant,
}

impl Progress {
    fn new(total: usize, verbose: bool, root: &Path) -> Progress {
        let tty = verbose && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("caching {msg} {bar:30} {pos}/{len} tiles, {per_sec}, eta {eta}")
            {
                b.set_style(style);
            }
            b.set_message(root.display().to_string());
            b
        });
        if verbose && !tty {
            eprintln!("caching {}: {total} tiles to decode", root.display());
        }
        Progress {
            bar,
            total,
            done: 0,
            lines: verbose && !tty,
            next_line: total / 4,
            start: std::time::Instant::now(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        while self.lines && self.done >= self.next_line.max(1) && self.done < self.total {
            eprintln!(
                "caching: {}/{} tiles ({:.0} s)",
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
            self.next_line += (self.total / 4).max(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.bar.is_some() || self.lines {
            eprintln!("cached {} tiles in {:.1} s", self.total, self.start.elapsed().as_secs_f64());
        }
    }
}

/// As many images of another band count as of the majority's: keeping "the majority" would drop
/// half the data on a coin toss. The kind with more bands is kept only when `--bands` asks for
/// a band the other kind lacks (`all`, or an index past its last band); otherwise this is an
/// error that says how to choose.
fn band_tie(
    kinds: &BTreeMap<(usize, u8), usize>,
    majority: usize,
    bands: usize,
    choice: &BandChoice,
) -> Result<()> {
    let rival = kinds.iter().filter(|((b, _), n)| **n == majority && *b != bands).map(|((b, _), _)| *b).max();
    let Some(fewer) = rival else { return Ok(()) };
    let asks_more = match choice {
        BandChoice::All => true,
        BandChoice::List(l) => l.iter().any(|&i| i >= fewer),
        BandChoice::Default => false,
    };
    if asks_more {
        return Ok(());
    }
    Err(WorkerError::Data(format!(
        "the folder holds as many {fewer}-band as {bands}-band images ({majority} each); training on one \
         kind drops the other, and which is not clear.\nfix: `--bands all` keeps the {bands}-band images \
         (the {majority} {fewer}-band ones are skipped and listed), or move the {bands}-band images out of \
         the folder to train on the {fewer}-band ones"
    )))
}
