//! Frozen backbone features: the evaluation transform (resize, centre crop, normalise with the
//! training data's statistics) and the backbone forward in eval mode (BN with running
//! statistics, nothing kept for a backward), batch by batch.

use crate::checkpoint::Weights;
use crate::data::augment::crop::{resize_crop, CropBox};
use crate::data::{BandStats, Dataset, Pixels, Tile};
use crate::error::{Result, WorkerError};
use crate::model::backbone::backbone_forward;
use crate::model::bn::BnStats;
use crate::model::{Ctx, Keep};
use moco_kernels::Backend;
use rayon::prelude::*;

/// torchvision's evaluation crop: resize to S / 0.875, centre-crop S (Resize(256) +
/// CenterCrop(224) on ImageNet).
pub const CROP_FRACTION: f32 = 0.875;

/// The evaluation transform of one tile into an `size x size x bands` NHWC f32 view.
#[derive(Debug, Clone)]
pub struct EvalTransform {
    pub size: usize,
    pub crop_fraction: f32,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl EvalTransform {
    /// `size`: the training crop size; `stats`: the training data's band statistics.
    pub fn new(size: usize, stats: &BandStats) -> EvalTransform {
        EvalTransform {
            size,
            crop_fraction: CROP_FRACTION,
            mean: stats.mean.clone(),
            inv_std: stats.std.iter().map(|s| 1.0 / s.max(crate::data::dataset::MIN_STD)).collect(),
        }
    }

    pub fn bands(&self) -> usize {
        self.mean.len()
    }

    /// The centred square box of a `h x w` tile that is resized to the output: the shorter side
    /// times `crop_fraction` (the resize-then-crop of torchvision done as one resampling).
    pub fn crop_box(&self, h: usize, w: usize) -> CropBox {
        let side = ((h.min(w) as f32 * self.crop_fraction).round() as usize).clamp(1, h.min(w));
        CropBox { top: (h - side) / 2, left: (w - side) / 2, height: side, width: side }
    }

    /// Transform `tile` into `out` (`size * size * bands`).
    pub fn apply(&self, tile: &Tile, out: &mut [f32], tmp: &mut Vec<f32>) -> Result<()> {
        let bands = tile.bands();
        if bands != self.bands() || out.len() != self.size * self.size * bands {
            return Err(WorkerError::Data(format!(
                "eval transform: tile has {bands} bands, the statistics {}; output holds {} values",
                self.bands(),
                out.len()
            )));
        }
        let b = self.crop_box(tile.height(), tile.width());
        match tile.pixels() {
            Pixels::U8(px) => resize_crop(px, tile.width(), bands, b, self.size, out, tmp),
            Pixels::U16(px) => resize_crop(px, tile.width(), bands, b, self.size, out, tmp),
        }
        for px in out.chunks_exact_mut(bands) {
            for (c, v) in px.iter_mut().enumerate() {
                *v = (*v - self.mean[c]) * self.inv_std[c];
            }
        }
        Ok(())
    }

    /// Transform dataset tiles `indices` into one NHWC batch, in parallel.
    pub fn batch(&self, ds: &dyn Dataset, indices: &[usize]) -> Result<Vec<f32>> {
        let per = self.size * self.size * self.bands();
        let mut x = vec![0.0f32; indices.len() * per];
        x.par_chunks_mut(per).zip(indices.par_iter()).try_for_each_init(Vec::new, |tmp, (out, &i)| {
            let tile = ds.tile(i)?;
            self.apply(&tile, out, tmp)
        })?;
        Ok(x)
    }
}

/// A backbone on a backend with its weights and running statistics, in eval mode.
pub struct FeatureExtractor<'a, B: Backend> {
    be: &'a B,
    w: &'a Weights,
    weights: B::Buf,
    stats: B::Buf,
}

impl<'a, B: Backend> FeatureExtractor<'a, B> {
    /// The query encoder's backbone of `w` (what MoCo v3's linear probe evaluates).
    pub fn new(be: &'a B, w: &'a Weights) -> Result<Self> {
        Ok(FeatureExtractor { be, w, weights: be.from_host(&w.params)?, stats: be.from_host(&w.q_stats)? })
    }

    pub fn feat_dim(&self) -> usize {
        self.w.topo.backbone.feat_dim
    }

    /// Pooled features `[n, feat_dim]` of an NHWC batch.
    pub fn features(&mut self, x: &[f32], n: usize, size: usize) -> Result<Vec<f32>> {
        let input = self.be.act_from_host(x)?;
        let ctx = Ctx {
            be: self.be,
            params: &self.w.topo.params,
            weights: &self.weights,
            stats: BnStats::Running,
            keep: Keep::Nothing,
        };
        let (feat, _) = backbone_forward(&ctx, &self.w.topo.backbone, Some(&mut self.stats), input, n, size)?;
        Ok(self.be.to_host(&feat)?)
    }
}

/// Features `[indices.len(), feat_dim]` of dataset tiles, `batch` at a time; `progress` sees
/// (done, total) after each batch.
pub fn extract<B: Backend>(
    be: &B,
    w: &Weights,
    ds: &dyn Dataset,
    indices: &[usize],
    tf: &EvalTransform,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    if ds.bands() != w.topo.dims.in_channels {
        return Err(WorkerError::Data(format!(
            "the data has {} bands, the network takes {}",
            ds.bands(),
            w.topo.dims.in_channels
        )));
    }
    let mut fx = FeatureExtractor::new(be, w)?;
    let mut out = Vec::with_capacity(indices.len() * fx.feat_dim());
    for chunk in indices.chunks(batch.max(1)) {
        let x = tf.batch(ds, chunk)?;
        out.extend(fx.features(&x, chunk.len(), tf.size)?);
        progress(out.len() / fx.feat_dim(), indices.len());
    }
    Ok(out)
}
