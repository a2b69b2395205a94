//! safetensors files, written by streaming (no second copy of a half-gigabyte state in memory,
//! checksum computed on the way) and read through a memory map with every tensor's presence,
//! dtype and shape checked.
//!
//! Format (https://github.com/huggingface/safetensors): u64 LE header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}` padded with
//! spaces to a multiple of 8 bytes, then the tensors' bytes back to back, little-endian.

use crate::error::{Result, WorkerError};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// Borrowed tensor data.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }
    fn elem_size(&self) -> usize {
        match self {
            Data::F32(_) => 4,
            Data::I64(_) => 8,
        }
    }
    fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "F32",
            Data::I64(_) => "I64",
        }
    }
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Data<'a>,
}

impl<'a> Entry<'a> {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: &'a [f32]) -> Entry<'a> {
        Entry { name: name.into(), shape, data: Data::F32(data) }
    }
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: &'a [i64]) -> Entry<'a> {
        Entry { name: name.into(), shape, data: Data::I64(data) }
    }
}

/// Bytes written and their xxh3-64 checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub xxh3: u64,
}

struct Hashing<W> {
    out: W,
    hash: Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Write `entries` (in order) and `metadata` as a safetensors stream into `out`.
pub fn write_safetensors<W: Write>(
    out: W,
    entries: &[Entry<'_>],
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<Written> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(std::io::Error::other)?);
    let mut offset = 0usize;
    for e in entries {
        let want: usize = e.shape.iter().product();
        if want != e.data.len() {
            return Err(std::io::Error::other(format!(
                "tensor {}: shape {:?} holds {want} values, data has {}",
                e.name,
                e.shape,
                e.data.len()
            )));
        }
        let end = offset + e.data.elem_size() * e.data.len();
        header.insert(
            e.name.clone(),
            serde_json::json!({ "dtype": e.data.dtype(), "shape": e.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&header).map_err(std::io::Error::other)?;
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut w = Hashing { out, hash: Xxh3::new(), bytes: 0 };
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(text.as_bytes())?;
    let mut buf = Vec::with_capacity(1 << 16);
    for e in entries {
        match e.data {
            Data::F32(v) => {
                for chunk in v.chunks(1 << 14) {
                    buf.clear();
                    chunk.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    w.write_all(&buf)?;
                }
            }
            Data::I64(v) => {
                for chunk in v.chunks(1 << 13) {
                    buf.clear();
                    chunk.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    w.write_all(&buf)?;
                }
            }
        }
    }
    w.flush()?;
    Ok(Written { bytes: w.bytes, xxh3: w.hash.digest() })
}

/// A safetensors file opened through a memory map, header parsed once.
pub struct TensorFile {
    pub path: PathBuf,
    map: Mmap,
    header_len: usize,
    meta: Metadata,
}

fn bad(path: &Path, problem: impl Into<String>) -> WorkerError {
    WorkerError::BadFile { path: path.to_path_buf(), problem: problem.into() }
}

impl TensorFile {
    /// Map and parse `path`. A truncated or non-safetensors file gives an error that says so.
    pub fn open(path: &Path) -> Result<TensorFile> {
        let file = std::fs::File::open(path)
            .map_err(|e| WorkerError::io(format!("opening {}", path.display()), e))?;
        // SAFETY: the map is read-only and checkpoint files are replaced by rename, never
        // modified in place, so the mapped bytes do not change while the map lives.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| WorkerError::io(format!("mapping {}", path.display()), e))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
            use safetensors::SafeTensorError as E;
            let why = match e {
                E::HeaderTooSmall | E::InvalidHeaderLength | E::MetadataIncompleteBuffer => format!(
                    "the file is truncated or incomplete ({} bytes; its header promises more or it \
                     was cut off while being written)",
                    map.len()
                ),
                E::HeaderTooLarge | E::InvalidHeader | E::InvalidHeaderDeserialization => {
                    "not a safetensors file (no valid header)".to_string()
                }
                other => format!("malformed safetensors file: {other:?}"),
            };
            bad(path, why)
        })?;
        Ok(TensorFile { path: path.to_path_buf(), map, header_len, meta })
    }

    pub fn len_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// xxh3-64 of the whole file.
    pub fn xxh3(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.map)
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.meta.metadata().clone().unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// Names of every tensor.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.meta.tensors().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.meta.info(name).map(|i| i.shape.clone())
    }

    fn get(&self, name: &str, dtype: Dtype, shape: Option<&[usize]>) -> Result<(&TensorInfo, &[u8])> {
        let info =
            self.meta.info(name).ok_or_else(|| bad(&self.path, format!("tensor {name} is missing")))?;
        if info.dtype != dtype {
            return Err(bad(&self.path, format!("tensor {name} is {:?}, expected {dtype:?}", info.dtype)));
        }
        if let Some(s) = shape {
            if info.shape != s {
                return Err(bad(
                    &self.path,
                    format!("tensor {name} has shape {:?}, expected {s:?}", info.shape),
                ));
            }
        }
        let (b, e) = info.data_offsets;
        let start = 8 + self.header_len;
        Ok((info, &self.map[start + b..start + e]))
    }

    /// An F32 tensor with exactly `shape` (None: any shape).
    pub fn f32(&self, name: &str, shape: Option<&[usize]>) -> Result<Vec<f32>> {
        let (_, bytes) = self.get(name, Dtype::F32, shape)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// An I64 tensor with exactly `shape` (None: any shape).
    pub fn i64(&self, name: &str, shape: Option<&[usize]>) -> Result<Vec<i64>> {
        let (_, bytes) = self.get(name, Dtype::I64, shape)?;
        Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
    }

    /// An I64 scalar (shape `[]`).
    pub fn i64_scalar(&self, name: &str) -> Result<i64> {
        Ok(self.i64(name, Some(&[]))?[0])
    }
}
