//! The cache file: every tile of a folder decoded once, stored square at one size and depth,
//! memory-mapped for training.
//!
//! Layout (integers little-endian):
//! ```text
//! 0      8  magic "MOCOTILE"
//! 8      4  format version (FORMAT_VERSION)
//! 12     4  byte-order mark 0x01020304
//! 16     8  data offset (4096: page-aligned, so u16 tiles are aligned in the map)
//! 24     8  header offset (right after the data)
//! 32     8  header length
//! 40     8  xxh3-64 of the header bytes
//! 48    16  quick key (file list, sizes, mtimes, parameters): how a later run finds it
//! 64    16  parameter key (folder, sizes, bands asked for): stale versions share it
//! 80..4096  zero
//! 4096      tiles: count x stride bytes, stride = size * size * bands * (1 or 2), HWC
//! header    bincode `CacheHeader`: shape, statistics, labels, file list with content hashes,
//!           the dataset report, and the xxh3-64 of the tile bytes
//! ```
//! The header goes after the data so tiles stream to disk while the folder is decoded. A cache
//! is written to a temporary file, synced and renamed into place, so a reader sees a whole
//! file or none. `open` checks magic, version, byte order, lengths, both checksums (the tile
//! checksum only up to `VERIFY_DATA_MAX` bytes, beyond which reading it all at every start costs
//! more than it protects), so a truncated, damaged or foreign file is reported and rebuilt.

use super::report::DatasetReport;
use crate::data::dataset::{BandStats, Dataset};
use crate::data::tile::{PixelDepth, Tile};
use crate::error::{Result, WorkerError};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub const MAGIC: &[u8; 8] = b"MOCOTILE";
/// Bumped whenever the layout or the decoding/resizing rules change: older caches then rebuild.
pub const FORMAT_VERSION: u32 = 1;
const BYTE_ORDER: u32 = 0x0102_0304;
pub const DATA_OFFSET: u64 = 4096;
const PREAMBLE: usize = 80;
/// Extension of cache files.
pub const EXTENSION: &str = "tiles";
/// Tile data up to this size is checksummed at every open (~0.1 s for the user's 2,000 tiles).
pub const VERIFY_DATA_MAX: u64 = 4 << 30;

/// One cached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    pub rel: String,
    pub bytes: u64,
    pub mtime_ns: i128,
    /// xxh3-64 of the file's bytes as read for decoding.
    pub hash: u64,
    pub height: u32,
    pub width: u32,
}

/// Everything about a cache except its tiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHeader {
    pub count: u64,
    pub size: u32,
    pub bands: u32,
    pub depth_bits: u8,
    pub data_hash: u64,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    pub class_names: Vec<String>,
    /// In tile order.
    pub files: Vec<CachedFile>,
    pub report: DatasetReport,
    pub created_unix_s: u64,
}

impl CacheHeader {
    pub fn depth(&self) -> PixelDepth {
        if self.depth_bits == 16 {
            PixelDepth::U16
        } else {
            PixelDepth::U8
        }
    }

    pub fn stride(&self) -> u64 {
        self.size as u64 * self.size as u64 * self.bands as u64 * (self.depth_bits as u64 / 8)
    }
}

/// The keys a cache is found and named by (xxh3-128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub params: u128,
    pub quick: u128,
}

fn bincode_opts() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding()
}

/// Streams tiles into a temporary file in the cache folder, then seals it.
pub struct CacheWriter {
    file: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    hasher: Xxh3,
    count: u64,
    bytes: u64,
    sealed: bool,
}

impl CacheWriter {
    pub fn create(dir: &Path) -> Result<CacheWriter> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!(".building-{}-{nanos}.tmp", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| WorkerError::io(format!("creating the cache file {}", tmp.display()), e))?;
        let ctx = |e| WorkerError::io(format!("writing the cache file {}", tmp.display()), e);
        file.seek(SeekFrom::Start(DATA_OFFSET)).map_err(ctx)?;
        Ok(CacheWriter {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            hasher: Xxh3::new(),
            count: 0,
            bytes: 0,
            sealed: false,
        })
    }

    pub fn push(&mut self, tile: &[u8]) -> Result<()> {
        self.hasher.update(tile);
        self.file
            .write_all(tile)
            .map_err(|e| WorkerError::io(format!("writing the cache file {}", self.tmp.display()), e))?;
        self.count += 1;
        self.bytes += tile.len() as u64;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The tiles written so far, mapped (for statistics before the header is written).
    pub fn view(&mut self, size: usize, bands: usize, depth: PixelDepth) -> Result<CacheDataset> {
        self.file.flush().map_err(|e| WorkerError::io(format!("writing {}", self.tmp.display()), e))?;
        let map = map_file(self.file.get_ref(), &self.tmp)?;
        let stats = BandStats { mean: vec![0.0; bands], std: vec![1.0; bands] };
        CacheDataset::from_parts(
            map,
            self.tmp.clone(),
            self.count as usize,
            size,
            bands,
            depth,
            stats,
            None,
            vec![],
        )
    }

    /// Write the header, sync, and rename to `dest` (atomically replacing any file there).
    pub fn seal(mut self, header: &mut CacheHeader, keys: Keys, dest: &Path) -> Result<()> {
        let ctx = |e| WorkerError::io(format!("writing the cache file {}", self.tmp.display()), e);
        header.count = self.count;
        header.data_hash = self.hasher.digest();
        if header.stride() * self.count != self.bytes {
            return Err(WorkerError::Data(format!(
                "cache writer: {} bytes for {} tiles of {} bytes",
                self.bytes,
                self.count,
                header.stride()
            )));
        }
        let body = bincode::Options::serialize(bincode_opts(), &*header)
            .map_err(|e| WorkerError::Data(format!("encoding the cache header: {e}")))?;
        self.file.write_all(&body).map_err(ctx)?;
        let mut pre = [0u8; PREAMBLE];
        pre[0..8].copy_from_slice(MAGIC);
        pre[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        pre[12..16].copy_from_slice(&BYTE_ORDER.to_le_bytes());
        pre[16..24].copy_from_slice(&DATA_OFFSET.to_le_bytes());
        pre[24..32].copy_from_slice(&(DATA_OFFSET + self.bytes).to_le_bytes());
        pre[32..40].copy_from_slice(&(body.len() as u64).to_le_bytes());
        pre[40..48].copy_from_slice(&xxh3_64(&body).to_le_bytes());
        pre[48..64].copy_from_slice(&keys.quick.to_le_bytes());
        pre[64..80].copy_from_slice(&keys.params.to_le_bytes());
        self.file.flush().map_err(ctx)?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(ctx)?;
        file.write_all(&pre).map_err(ctx)?;
        file.sync_all().map_err(ctx)?;
        std::fs::rename(&self.tmp, dest)
            .map_err(|e| WorkerError::io(format!("renaming the cache into {}", dest.display()), e))?;
        self.sealed = true;
        if let Some(dir) = dest.parent() {
            // Make the rename itself durable; not all platforms can open a folder, hence no error.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn map_file(file: &std::fs::File, path: &Path) -> Result<Mmap> {
    // SAFETY: cache files are written once under a temporary name and renamed into place, never
    // modified afterwards (a rebuild writes a new file and renames over the name, which leaves
    // this inode and the mapping intact). The map is read-only. Only a process truncating the
    // file in place could invalidate it, which nothing in moco-rs does.
    unsafe { Mmap::map(file) }
        .map_err(|e| WorkerError::io(format!("mapping the cache file {}", path.display()), e))
}

/// The preamble's keys of a cache file, if it is one of this format version.
pub fn peek_keys(path: &Path) -> Option<Keys> {
    let mut pre = [0u8; PREAMBLE];
    std::fs::File::open(path).ok()?.read_exact(&mut pre).ok()?;
    if &pre[0..8] != MAGIC || pre[8..12] != FORMAT_VERSION.to_le_bytes() {
        return None;
    }
    let k = |r: std::ops::Range<usize>| u128::from_le_bytes(pre[r].try_into().unwrap_or([0; 16]));
    Some(Keys { quick: k(48..64), params: k(64..80) })
}

/// A cache file, memory-mapped: the `Dataset` training reads.
pub struct CacheDataset {
    map: Mmap,
    path: PathBuf,
    count: usize,
    size: usize,
    bands: usize,
    depth: PixelDepth,
    stride: usize,
    stats: BandStats,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    header: Option<CacheHeader>,
}

impl CacheDataset {
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        map: Mmap,
        path: PathBuf,
        count: usize,
        size: usize,
        bands: usize,
        depth: PixelDepth,
        stats: BandStats,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> Result<CacheDataset> {
        let stride = size * size * bands * if depth == PixelDepth::U16 { 2 } else { 1 };
        if count == 0 || map.len() < DATA_OFFSET as usize + count * stride {
            return Err(WorkerError::Data(format!(
                "{}: holds fewer tiles than its header says",
                path.display()
            )));
        }
        Ok(CacheDataset {
            map,
            path,
            count,
            size,
            bands,
            depth,
            stride,
            stats,
            labels,
            class_names,
            header: None,
        })
    }

    /// Open and check a cache file. The error says what is wrong with it (the caller rebuilds).
    pub fn open(path: &Path) -> std::result::Result<CacheDataset, String> {
        if cfg!(target_endian = "big") {
            return Err("caches are little-endian and this machine is not".into());
        }
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let map = map_file(&file, path).map_err(|e| e.to_string())?;
        let len = map.len() as u64;
        if map.len() < PREAMBLE || &map[0..8] != MAGIC {
            return Err("not a moco-rs tile cache".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap_or([0; 8]));
        if u32_at(8) != FORMAT_VERSION {
            return Err(format!("format version {}, this build reads version {FORMAT_VERSION}", u32_at(8)));
        }
        if u32_at(12) != BYTE_ORDER {
            return Err("byte-order mark wrong (damaged or foreign file)".into());
        }
        let (data, hdr_off, hdr_len) = (u64_at(16), u64_at(24), u64_at(32));
        if data != DATA_OFFSET || hdr_off < data || hdr_off.checked_add(hdr_len) != Some(len) {
            return Err(format!(
                "lengths do not add up (file {len} bytes, header at {hdr_off} + {hdr_len}): truncated?"
            ));
        }
        let body = &map[hdr_off as usize..];
        if xxh3_64(body) != u64_at(40) {
            return Err("header checksum mismatch (damaged file)".into());
        }
        let opts = bincode::Options::with_limit(bincode_opts(), hdr_len);
        let header: CacheHeader =
            bincode::Options::deserialize(opts, body).map_err(|e| format!("header does not decode ({e})"))?;
        let depth = match header.depth_bits {
            8 => PixelDepth::U8,
            16 => PixelDepth::U16,
            b => return Err(format!("{b}-bit tiles in the header")),
        };
        if header.stride() * header.count != hdr_off - data || header.files.len() as u64 != header.count {
            return Err("tile count, size and data length disagree".into());
        }
        if header.count <= VERIFY_DATA_MAX / header.stride().max(1)
            && xxh3_64(&map[data as usize..hdr_off as usize]) != header.data_hash
        {
            return Err("tile data checksum mismatch (damaged file)".into());
        }
        let stats = BandStats::new(header.mean.clone(), header.std.clone()).map_err(|e| e.to_string())?;
        if stats.bands() != header.bands as usize {
            return Err("statistics and band count disagree".into());
        }
        if header.labels.as_ref().is_some_and(|l| {
            l.len() as u64 != header.count || l.iter().any(|&c| c as usize >= header.class_names.len())
        }) {
            return Err("labels do not match the tiles".into());
        }
        let mut ds = CacheDataset::from_parts(
            map,
            path.to_path_buf(),
            header.count as usize,
            header.size as usize,
            header.bands as usize,
            depth,
            stats,
            header.labels.clone(),
            header.class_names.clone(),
        )
        .map_err(|e| e.to_string())?;
        ds.header = Some(header);
        Ok(ds)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header (absent only on the writer's temporary view).
    pub fn header(&self) -> Option<&CacheHeader> {
        self.header.as_ref()
    }

    /// Side of the stored tiles.
    pub fn tile_size(&self) -> usize {
        self.size
    }

    pub fn depth(&self) -> PixelDepth {
        self.depth
    }
}

impl Dataset for CacheDataset {
    fn len(&self) -> usize {
        self.count
    }

    fn bands(&self) -> usize {
        self.bands
    }

    fn tile(&self, index: usize) -> Result<Tile<'_>> {
        if index >= self.count {
            return Err(WorkerError::Data(format!(
                "tile {index} out of range ({} has {})",
                self.path.display(),
                self.count
            )));
        }
        let start = DATA_OFFSET as usize + index * self.stride;
        let bytes = &self.map[start..start + self.stride];
        match self.depth {
            PixelDepth::U8 => Tile::from_u8(self.size, self.size, self.bands, bytes),
            PixelDepth::U16 => {
                // SAFETY: every bit pattern is a valid u16; `align_to` only hands out the aligned
                // middle part, and the map is page-aligned with an even data offset and stride, so
                // the whole slice is that middle part (checked below). Samples are little-endian
                // and `open` refuses big-endian hosts.
                let (pre, mid, post) = unsafe { bytes.align_to::<u16>() };
                if !pre.is_empty() || !post.is_empty() {
                    return Err(WorkerError::Data(format!(
                        "{}: misaligned 16-bit tile {index}",
                        self.path.display()
                    )));
                }
                Tile::from_u16(self.size, self.size, self.bands, mid)
            }
        }
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().and_then(|l| l.get(index).copied())
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn stats(&self) -> &BandStats {
        &self.stats
    }
}
