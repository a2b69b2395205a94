//! `launcher embed`: backbone features of every tile of a dataset, written as safetensors:
//! `features` F32 `[N, D]`, `indices` I64 `[N]` (dataset index), `labels` I64 `[N]` (class,
//! -1 when unlabelled), with the class names and the checkpoint in the metadata.

use super::features::{extract, EvalTransform};
use crate::checkpoint::atomic::{io_error, write_atomic};
use crate::checkpoint::tensors::{write_safetensors, Entry, TensorFile};
use crate::checkpoint::Weights;
use crate::data::Dataset;
use crate::error::{Result, WorkerError};
use moco_kernels::Backend;
use std::collections::BTreeMap;
use std::path::Path;

/// Features of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub features: Vec<f32>,
    pub dim: usize,
    pub indices: Vec<i64>,
    pub labels: Vec<i64>,
    pub class_names: Vec<String>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Features of every tile of `ds` with the network `w`.
pub fn embed<B: Backend>(
    be: &B,
    w: &Weights,
    ds: &dyn Dataset,
    tf: &EvalTransform,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Embeddings> {
    let indices: Vec<usize> = (0..ds.len()).collect();
    let features = extract(be, w, ds, &indices, tf, batch, progress)?;
    Ok(Embeddings {
        features,
        dim: w.topo.backbone.feat_dim,
        indices: indices.iter().map(|&i| i as i64).collect(),
        labels: indices.iter().map(|&i| ds.label(i).map(|l| l as i64).unwrap_or(-1)).collect(),
        class_names: ds.class_names(),
    })
}

/// Write `e` to `path` atomically; `source` (the checkpoint) goes into the metadata.
pub fn write_embeddings(e: &Embeddings, path: &Path, source: &str) -> Result<()> {
    let n = e.len();
    let entries = [
        Entry::f32("features", vec![n, e.dim], &e.features),
        Entry::i64("indices", vec![n], &e.indices),
        Entry::i64("labels", vec![n], &e.labels),
    ];
    let mut meta = BTreeMap::new();
    meta.insert("producer".to_string(), format!("moco-rs {}", env!("CARGO_PKG_VERSION")));
    meta.insert("source".to_string(), source.to_string());
    meta.insert("class_names".to_string(), serde_json::to_string(&e.class_names).unwrap_or_default());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| io_error("creating folder", dir, err))?;
    }
    write_atomic(path, "features", |w| write_safetensors(w, &entries, &meta))?;
    Ok(())
}

/// Read a file written by `write_embeddings`.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    let f = TensorFile::open(path)?;
    let shape = f.shape("features").filter(|s| s.len() == 2).ok_or_else(|| WorkerError::BadFile {
        path: path.to_path_buf(),
        problem: "no [N, D] features tensor".into(),
    })?;
    let n = shape[0];
    let class_names =
        f.metadata().get("class_names").and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    Ok(Embeddings {
        features: f.f32("features", None)?,
        dim: shape[1],
        indices: f.i64("indices", Some(&[n]))?,
        labels: f.i64("labels", Some(&[n]))?,
        class_names,
    })
}
