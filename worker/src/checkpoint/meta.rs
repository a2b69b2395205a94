//! `meta.json`: what a checkpoint is (format, version, run, step, config, scaler, data position,
//! topology, per-rank files with length and checksum). Written last: its presence marks the
//! checkpoint complete. Also the checks that compare a checkpoint with the run that wants it.

use crate::data::{BandStats, SamplerPos};
use crate::error::{Result, WorkerError};
use crate::moco::scaler::LossScaler;
use crate::model::Topology;
use moco_proto::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `format` of every moco-rs checkpoint (meta.json and the rank files' metadata).
pub const FORMAT: &str = "moco-rs-checkpoint";
/// Bumped when the layout changes; a reader refuses versions it does not know.
pub const VERSION: u32 = 1;
/// How conv weights are laid out inside rank files (export converts to torchvision's OIHW).
pub const LAYOUT: &str =
    "conv weights OHWI [c_out, kh, kw, c_in]; linear [out, in]; optimiser state flat in parameter order";

/// The sizes that define the network (ModelDims) plus the lengths derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopologySummary {
    pub width: f32,
    pub in_channels: usize,
    pub proj_hidden: usize,
    pub dim: usize,
    pub pred_hidden: usize,
    pub param_len: usize,
    pub key_len: usize,
    pub stats_len: usize,
}

impl TopologySummary {
    pub fn of(t: &Topology) -> TopologySummary {
        TopologySummary {
            width: t.dims.width,
            in_channels: t.dims.in_channels,
            proj_hidden: t.dims.proj_hidden,
            dim: t.dims.dim,
            pred_hidden: t.dims.pred_hidden,
            param_len: t.param_len(),
            key_len: t.key_len(),
            stats_len: t.stats_len,
        }
    }

    pub fn dims(&self) -> crate::model::ModelDims {
        crate::model::ModelDims {
            width: self.width,
            in_channels: self.in_channels,
            proj_hidden: self.proj_hidden,
            dim: self.dim,
            pred_hidden: self.pred_hidden,
        }
    }

    /// Differences that make the checkpoint's backbone unusable for `now`, in words.
    pub fn backbone_mismatch(&self, now: &TopologySummary) -> Vec<String> {
        let mut v = Vec::new();
        if self.width != now.width {
            v.push(format!("width {} (this run: {})", self.width, now.width));
        }
        if self.in_channels != now.in_channels {
            v.push(format!("{} input bands (this run: {})", self.in_channels, now.in_channels));
        }
        v
    }

    /// Differences of the heads (projector, predictor, embedding dim), in words.
    pub fn head_mismatch(&self, now: &TopologySummary) -> Vec<String> {
        let mut v = Vec::new();
        for (what, a, b) in [
            ("projector hidden width", self.proj_hidden, now.proj_hidden),
            ("embedding dim", self.dim, now.dim),
            ("predictor hidden width", self.pred_hidden, now.pred_hidden),
        ] {
            if a != b {
                v.push(format!("{what} {a} (this run: {b})"));
            }
        }
        v
    }
}

/// One rank's file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankFile {
    pub rank: usize,
    /// File name inside the step folder.
    pub file: String,
    pub bytes: u64,
    /// xxh3-64 of the whole file, hex.
    pub xxh3: String,
}

/// Per-band normalisation statistics of the training data (eval/embed normalise with them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandStatsJson {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl From<&BandStats> for BandStatsJson {
    fn from(s: &BandStats) -> Self {
        BandStatsJson { mean: s.mean.clone(), std: s.std.clone() }
    }
}

impl BandStatsJson {
    pub fn to_stats(&self) -> Result<BandStats> {
        BandStats::new(self.mean.clone(), self.std.clone())
    }
}

/// The content of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub version: u32,
    pub run_id: String,
    pub world: usize,
    /// Optimiser steps done (attempted, skipped ones included).
    pub step: u64,
    /// Fractional epoch at `step`.
    pub epoch: f64,
    /// Micro-batches done: seeds the key-side shuffle (all other randomness is keyed by the
    /// config's seed, the epoch and the dataset index, so nothing else needs saving).
    pub micro_total: u64,
    /// Where the data order stands: the next micro-batch to run.
    pub data_position: SamplerPos,
    pub scaler: LossScaler,
    /// The resolved config of the run (per-rank batch already derived).
    pub config: TrainConfig,
    pub topology: TopologySummary,
    /// Normalisation statistics of the training data, when the trainer gave them.
    pub band_stats: Option<BandStatsJson>,
    pub files: Vec<RankFile>,
    /// Seconds since the Unix epoch when the checkpoint was committed.
    pub created_unix_s: u64,
    /// moco-rs version that wrote it.
    pub writer: String,
}

impl CheckpointMeta {
    /// Parse and check format and version; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<CheckpointMeta> {
        let bad = |problem: String| WorkerError::BadFile { path: path.to_path_buf(), problem };
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("not a moco-rs checkpoint description (invalid JSON: {e})")))?;
        match v.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "not a moco-rs checkpoint (format {:?}, expected {FORMAT:?})",
                    other.unwrap_or("missing")
                )))
            }
        }
        match v.get("version").and_then(|f| f.as_u64()) {
            Some(x) if x == VERSION as u64 => {}
            other => {
                return Err(bad(format!(
                    "checkpoint format version {:?}; this moco-rs reads version {VERSION} (use the \
                     moco-rs version that wrote it)",
                    other
                )))
            }
        }
        serde_json::from_value(v).map_err(|e| bad(format!("checkpoint description is incomplete: {e}")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("checkpoint metadata serialises")
    }

    pub fn file_of(&self, rank: usize) -> Option<&RankFile> {
        self.files.iter().find(|f| f.rank == rank)
    }
}

/// Config fields that must not change when a run resumes: the state's shapes and the data
/// order depend on them.
const RESUME_FIXED: &[(&str, &str)] = &[
    ("width", "the network's shapes"),
    ("proj_hidden", "the network's shapes"),
    ("dim", "the network's and the queue's shapes"),
    ("pred_hidden", "the network's shapes"),
    ("queue_size", "the queue's shape"),
    ("optimizer", "the optimiser state"),
    ("batch", "the data position and the queue pointer"),
    ("seed", "the data order and the augmentations"),
];

/// Compare the checkpoint's config with the resuming run's: an error for a change that cannot
/// work (shapes, data order, world size), one warning per other changed field.
pub fn check_resume_config(
    meta: &CheckpointMeta,
    now: &TrainConfig,
    world: usize,
    ckpt_path: &Path,
) -> Result<Vec<String>> {
    let bad = |problem: String| WorkerError::BadFile { path: ckpt_path.to_path_buf(), problem };
    if meta.world != world {
        return Err(bad(format!(
            "the checkpoint was written by {} ranks, this run has {world}: resume with the same number \
             of GPUs/workers, or start a new run from its weights with --init-from",
            meta.world
        )));
    }
    let saved = serde_json::to_value(&meta.config).map_err(|e| bad(e.to_string()))?;
    let cur = serde_json::to_value(now).map_err(|e| bad(e.to_string()))?;
    let (Some(saved), Some(cur)) = (saved.as_object(), cur.as_object()) else {
        return Err(bad("config is not a JSON object".into()));
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (key, a) in saved {
        let b = cur.get(key).unwrap_or(&serde_json::Value::Null);
        if a == b {
            continue;
        }
        match RESUME_FIXED.iter().find(|(k, _)| k == key) {
            Some((_, why)) => errors.push(format!("{key} {a} -> {b} (changes {why})")),
            // The checkpoint holds the keys as f32 values, exact for either precision; the
            // shard is built in the run's precision (moco/queue.rs).
            None if key == "queue_precision" => warnings.push(format!(
                "resuming with queue_precision changed from {a} to {b}: the checkpoint's queue keys are \
                 converted ({}); training continues, but not as the uninterrupted run would have",
                if b == "fp16" {
                    "rounded to fp16, nearest even"
                } else {
                    "fp16 values kept exactly in fp32"
                }
            )),
            None => warnings.push(format!(
                "resuming with {key} changed from {a} to {b}: training continues, but not as the \
                 uninterrupted run would have"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(bad(format!(
            "cannot resume with a different {}; resume with the checkpoint's settings, or start a new \
             run from its weights with --init-from",
            errors.join(", ")
        )));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_foreign_and_future_descriptions() {
        let p = Path::new("meta.json");
        let e = CheckpointMeta::parse(p, "{\"format\": \"pytorch\"}").unwrap_err().to_string();
        assert!(e.contains("not a moco-rs checkpoint"), "{e}");
        let e = CheckpointMeta::parse(p, &format!("{{\"format\": \"{FORMAT}\", \"version\": 99}}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("version"), "{e}");
        let e = CheckpointMeta::parse(p, "\u{0}\u{1}garbage").unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
    }
}
