//! `launcher export`: a checkpoint's weights as a safetensors file PyTorch users load in one line.
//!
//! - `torchvision`: the QUERY encoder's backbone under torchvision's ResNet-50 names, conv
//!   weights OIHW, fp32, BN running statistics and `num_batches_tracked` (int64 scalar), no `fc`:
//!   `resnet50().load_state_dict(load_file(p), strict=False)` loads everything but fc.weight and
//!   fc.bias. (MoCo v3's linear probe evaluates this encoder.)
//! - `moco-v3`: the keys of MoCo v3's `MoCo_ResNet` inside DDP, as its `main_lincls.py` expects
//!   them after `torch.load(...)["state_dict"]`: `module.base_encoder.<backbone>`, the projector
//!   at `module.base_encoder.fc.{0,1,3,4}` (v3 replaces the ResNet's fc by it),
//!   `module.predictor.{0,1,3}`, and the momentum encoder under `module.momentum_encoder.`.
//!
//! A multi-band network exports the same names; `conv1.weight` then has `in_channels` inputs,
//! so torchvision's 3-band `resnet50()` needs its first conv replaced before loading.

use super::atomic::write_atomic;
use super::load::Weights;
use super::tensors::{write_safetensors, Entry};
use crate::error::{Result, WorkerError};
use crate::model::params::ohwi_to_oihw;
use crate::model::topology::{ParamKind, Part, Topology};
use std::collections::BTreeMap;
use std::path::Path;

/// Which key names and which networks the export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Torchvision,
    MocoV3,
}

impl std::str::FromStr for ExportFormat {
    type Err = WorkerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "torchvision" => Ok(ExportFormat::Torchvision),
            "moco-v3" | "mocov3" => Ok(ExportFormat::MocoV3),
            other => Err(WorkerError::Config(moco_proto::ProtoError::Config(format!(
                "--format {other:?}: expected torchvision or moco-v3"
            )))),
        }
    }
}

/// An owned tensor of the export.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: ExportData,
}

/// Our parameter name -> the exported one (`projector.` is MoCo v3's `fc.`).
fn export_name(name: &str, prefix: &str) -> String {
    match name.strip_prefix("projector.") {
        Some(rest) => format!("{prefix}fc.{rest}"),
        None => format!("{prefix}{name}"),
    }
}

/// The tensors of one encoder: parameters (torch layout) and BN buffers of the given parts.
fn encoder_tensors(
    t: &Topology,
    params: &[f32],
    stats: &[f32],
    bn_updates: u64,
    parts: &[Part],
    prefix: &str,
    out: &mut Vec<ExportTensor>,
) {
    for p in t.params.iter().filter(|p| parts.contains(&p.part)) {
        let v = &params[p.range()];
        let data = match p.kind {
            ParamKind::ConvWeight { c_out, c_in, k } => ohwi_to_oihw(v, c_out, c_in, k),
            _ => v.to_vec(),
        };
        out.push(ExportTensor {
            name: export_name(&p.name, prefix),
            shape: p.kind.torch_shape(),
            data: ExportData::F32(data),
        });
    }
    let part_of = |bn: &str| {
        if bn.starts_with("projector.") {
            Part::Projector
        } else if bn.starts_with("predictor.") {
            Part::Predictor
        } else {
            Part::Backbone
        }
    };
    for (name, off, len) in &t.buffers {
        let bn = name.rsplit_once('.').map(|(b, _)| b).unwrap_or(name);
        if !parts.contains(&part_of(bn)) {
            continue;
        }
        out.push(ExportTensor {
            name: export_name(name, prefix),
            shape: vec![*len],
            data: ExportData::F32(stats[*off..off + len].to_vec()),
        });
        if name.ends_with(".running_var") {
            out.push(ExportTensor {
                name: export_name(&format!("{bn}.num_batches_tracked"), prefix),
                shape: vec![],
                data: ExportData::I64(vec![bn_updates as i64]),
            });
        }
    }
}

/// The export's tensors, in state-dict order.
pub fn export_tensors(w: &Weights, format: ExportFormat) -> Vec<ExportTensor> {
    let t = &w.topo;
    let mut out = Vec::new();
    match format {
        ExportFormat::Torchvision => {
            encoder_tensors(t, &w.params, &w.q_stats, w.bn_updates, &[Part::Backbone], "", &mut out)
        }
        ExportFormat::MocoV3 => {
            let enc = [Part::Backbone, Part::Projector];
            encoder_tensors(t, &w.params, &w.q_stats, w.bn_updates, &enc, "module.base_encoder.", &mut out);
            encoder_tensors(t, &w.params, &w.q_stats, w.bn_updates, &[Part::Predictor], "module.", &mut out);
            encoder_tensors(
                t,
                &w.key_params,
                &w.k_stats,
                w.bn_updates,
                &enc,
                "module.momentum_encoder.",
                &mut out,
            );
        }
    }
    out
}

/// Write the export of `w` to `path` atomically; returns the number of tensors.
pub fn write_export(w: &Weights, format: ExportFormat, path: &Path, source: &str) -> Result<usize> {
    let tensors = export_tensors(w, format);
    let entries: Vec<Entry<'_>> = tensors
        .iter()
        .map(|t| match &t.data {
            ExportData::F32(v) => Entry::f32(t.name.clone(), t.shape.clone(), v),
            ExportData::I64(v) => Entry::i64(t.name.clone(), t.shape.clone(), v),
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("producer".to_string(), format!("moco-rs {}", env!("CARGO_PKG_VERSION")));
    meta.insert(
        "layout".to_string(),
        match format {
            ExportFormat::Torchvision => "torchvision resnet50 state_dict without fc (query encoder)",
            ExportFormat::MocoV3 => "moco-v3 MoCo_ResNet state_dict under module.",
        }
        .to_string(),
    );
    meta.insert("source".to_string(), source.to_string());
    meta.insert("width".to_string(), w.topo.dims.width.to_string());
    meta.insert("in_channels".to_string(), w.topo.dims.in_channels.to_string());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| super::atomic::io_error("creating folder", dir, e))?;
    }
    write_atomic(path, "export", |out| write_safetensors(out, &entries, &meta))?;
    Ok(tensors.len())
}
