//! Test helpers: reading the PyTorch fixtures (scripts/make_fixtures.py), comparing tensors, and
//! the small config the CPU step tests start from.
#![allow(dead_code)]

use moco_proto::config::{AugConfig, BnMode, Optimizer, QueuePrecision, TrainConfig};
use moco_worker::model::params::oihw_to_ohwi;
use moco_worker::model::topology::{ParamKind, Topology};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

pub struct Fixture {
    pub path: PathBuf,
    bytes: Vec<u8>,
    /// name -> (dtype, shape, data), parsed once (files hold ~1,300 tensors).
    tensors: std::collections::HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Fixture {
    /// Load `worker/tests/fixtures/<name>` and check its header (format and version).
    pub fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with scripts/make_fixtures.py", path.display()));
        let tensors = SafeTensors::deserialize(&bytes)
            .expect("valid safetensors")
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
            .collect();
        let fx = Fixture { path, bytes, tensors };
        assert_eq!(fx.meta("format"), "moco-rs-fixture", "{}: not a moco-rs fixture", fx.path.display());
        assert_eq!(fx.meta("version"), "1", "{}: fixture version", fx.path.display());
        fx
    }

    pub fn meta(&self, key: &str) -> String {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).expect("safetensors header");
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_else(|| panic!("{}: metadata key {key} missing", self.path.display()))
    }

    pub fn meta_f32(&self, key: &str) -> f32 {
        self.meta(key).parse().unwrap_or_else(|_| panic!("metadata {key} not a number"))
    }

    pub fn meta_usize(&self, key: &str) -> usize {
        let v = self.meta(key);
        v.parse()
            .or_else(|_| v.parse::<f64>().map(|f| f as usize))
            .unwrap_or_else(|_| panic!("metadata {key}: {v}"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn raw(&self, name: &str) -> &(Dtype, Vec<usize>, Vec<u8>) {
        self.tensors.get(name).unwrap_or_else(|| panic!("{}: tensor {name} missing", self.path.display()))
    }

    /// (shape, values) of an f32 (or f64/i64, converted) tensor.
    pub fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (dtype, shape, data) = self.raw(name);
        let shape = shape.clone();
        let vals = match dtype {
            Dtype::F32 => {
                data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::F64 => {
                data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
            }
            Dtype::I64 => {
                data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
            }
            d => panic!("{name}: unsupported dtype {d:?}"),
        };
        (shape, vals)
    }

    pub fn tensor_i64(&self, name: &str) -> Vec<i64> {
        let (dtype, _, data) = self.raw(name);
        assert_eq!(*dtype, Dtype::I64, "{name} should be int64");
        data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    pub fn scalar(&self, name: &str) -> f32 {
        let (_, v) = self.tensor(name);
        assert_eq!(v.len(), 1, "{name} should be a scalar");
        v[0]
    }

    /// An NCHW tensor converted to NHWC, with its (n, c, h, w).
    pub fn nhwc(&self, name: &str) -> (Vec<f32>, [usize; 4]) {
        let (shape, v) = self.tensor(name);
        assert_eq!(shape.len(), 4, "{name} is not 4-D");
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        (nchw_to_nhwc(&v, n, c, h, w), [n, c, h, w])
    }

    /// Flat parameters in our layout from tensors named `<prefix><param name>`, for the first
    /// `len` elements of the topology's layout (the whole query encoder, or the key prefix).
    pub fn flat_params(&self, topo: &Topology, prefix: &str, len: usize) -> Vec<f32> {
        let mut flat = vec![0.0f32; len];
        for p in topo.params.iter().filter(|p| p.offset < len) {
            let name = format!("{prefix}{}", p.name);
            let (shape, v) = self.tensor(&name);
            assert_eq!(shape, p.kind.torch_shape(), "{name}: shape");
            let v = match p.kind {
                ParamKind::ConvWeight { c_out, c_in, k } => oihw_to_ohwi(&v, c_out, c_in, k),
                _ => v,
            };
            flat[p.range()].copy_from_slice(&v);
        }
        flat
    }

    /// Flat running statistics from tensors named `<prefix><bn>.running_mean/var`; BN layers the
    /// fixture lacks (e.g. the predictor on the key side) keep `default`'s values.
    pub fn flat_stats(&self, topo: &Topology, prefix: &str, default: &[f32]) -> Vec<f32> {
        let mut flat = default.to_vec();
        for (name, off, len) in &topo.buffers {
            let full = format!("{prefix}{name}");
            if self.has(&full) {
                let (_, v) = self.tensor(&full);
                assert_eq!(v.len(), *len, "{full}");
                flat[*off..off + len].copy_from_slice(&v);
            }
        }
        flat
    }
}

pub fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    y[((ni * h + hi) * w + wi) * c + ci] = x[((ni * c + ci) * h + hi) * w + wi];
                }
            }
        }
    }
    y
}

/// Per-tensor comparison: |got - want| <= atol + rtol * max|want| for every element.
/// Returns the worst error relative to max|want| for reporting.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    let mut worst_i = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        assert!(e.is_finite() || g == w, "{name}[{i}]: got {g}, want {w}");
        if e > worst {
            worst = e;
            worst_i = i;
        }
    }
    assert!(
        worst <= atol + rtol * scale,
        "{name}: max error {worst} at [{worst_i}] (got {}, want {}) exceeds {atol} + {rtol} * {scale}",
        got[worst_i],
        want[worst_i]
    );
    if scale > 0.0 {
        worst / scale
    } else {
        worst
    }
}

/// The small MoCo config the CPU step tests start from: ResNet-50 at 1/16 width, 32 px, small
/// heads, LARS, local BN, fp32, a queue of `queue` rows.
pub fn small_cfg(batch: usize, queue: usize) -> TrainConfig {
    TrainConfig {
        width: 0.0625,
        image_size: 32,
        proj_hidden: 64,
        dim: 32,
        pred_hidden: 64,
        batch,
        global_batch: 0,
        accumulation: 1,
        effective_negatives: false,
        queue_size: queue,
        temperature: 0.2,
        momentum: 0.99,
        momentum_cosine: false,
        mask_own: true,
        bn_mode: BnMode::Local,
        shuffle_groups: 2,
        optimizer: Optimizer::Lars,
        base_lr: 0.5,
        weight_decay: 1e-4,
        warmup_epochs: 0.0,
        epochs: 1,
        amp: false,
        recompute: false,
        queue_precision: QueuePrecision::Fp32,
        aug: AugConfig::default(),
        seed: 11,
    }
}
