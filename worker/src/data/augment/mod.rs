//! The two-view augmentation pipeline (MOCO.md, "Augmentations": BYOL's recipe as MoCo v3 uses
//! it, plus the satellite additions), driven by `AugConfig`:
//!
//! 1. random resized crop to S x S, area in (crop_min, 1), ratio in (3/4, 4/3), antialiased
//!    bilinear (`crop`);
//! 2. colour jitter with probability `jitter_p`, its four ops in random order (`colour`);
//! 3. grayscale with probability `grayscale_p`;
//! 4. Gaussian blur with probability `blur_p[view]`, sigma ~ U(blur_sigma) * S / 224 (`blur`);
//! 5. solarize at 0.5 with probability `solarize_p[view]`;
//! 6. horizontal flip, vertical flip, rot90 by a uniform multiple of 90 degrees (`dihedral`);
//! 7. per-band normalisation with the dataset's statistics, then additive noise `noise_std`.
//!
//! Multi-band tiles: geometric ops (crop, flips, rotations) and blur act on every band; colour
//! ops follow the rule in `colour` (saturation, hue, grayscale only on bands 0..3 as RGB, and
//! only when there are at least three bands). Inputs are u8 or u16 tiles (scaled to 0..1 by
//! their type's maximum); the output is f32 HWC.
//!
//! Reproducibility: every random choice of a view comes from one stream keyed by
//! (seed, epoch, dataset index, view) (`rng::Domain::Augment`), drawn in a fixed order, so a
//! view is identical whichever thread makes it and in whatever order. Because the key is the
//! dataset index and not the rank or position in the batch, a sample gets the same views at
//! any world size or batch size.

pub mod blur;
pub mod colour;
pub mod crop;
pub mod dihedral;

use super::dataset::BandStats;
use super::rng::{stream, Domain};
use super::tile::{Pixels, Tile};
use crate::error::{Result, WorkerError};
use colour::Jitter;
use crop::CropBox;
use dihedral::{Dihedral, Normalise};
use moco_proto::config::AugConfig;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The crop size at which `blur_sigma` is stated (MOCO.md: sigma in pixels of a 224-px image).
pub const BLUR_REFERENCE_SIZE: f32 = 224.0;
/// Solarize threshold in 0..1 units (PIL's 128 of 255).
pub const SOLARIZE_THRESHOLD: f32 = 0.5;

/// `a + (b - a) * U[0, 1)`; unlike `gen_range` it accepts a == b.
#[inline]
pub(crate) fn uniform(rng: &mut ChaCha8Rng, a: f32, b: f32) -> f32 {
    a + (b - a) * rng.gen::<f32>()
}

/// Every random choice of one view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    pub crop: CropBox,
    pub jitter: Option<Jitter>,
    pub grayscale: bool,
    /// Blur sigma in output pixels (already scaled by S / 224), if blurred.
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
    pub dihedral: Dihedral,
}

/// Scratch buffers of one worker thread (reused across views to avoid allocation).
#[derive(Default)]
pub struct Scratch {
    img: Vec<f32>,
    tmp: Vec<f32>,
    row: Vec<f32>,
}

/// The configured pipeline: config, output size, seed and normalisation.
#[derive(Debug, Clone)]
pub struct Augmenter {
    cfg: AugConfig,
    size: usize,
    seed: u64,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Augmenter {
    /// Validates the config (a clear error instead of a panic deep in a worker thread).
    pub fn new(cfg: &AugConfig, size: usize, seed: u64, stats: &BandStats) -> Result<Augmenter> {
        validate(cfg, size)?;
        if stats.mean.len() != stats.std.len() || stats.mean.is_empty() {
            return Err(WorkerError::Data("band statistics need one mean and std per band".into()));
        }
        Ok(Augmenter {
            cfg: cfg.clone(),
            size,
            seed,
            mean: stats.mean.clone(),
            inv_std: stats.std.iter().map(|s| 1.0 / s.max(super::dataset::MIN_STD)).collect(),
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn bands(&self) -> usize {
        self.mean.len()
    }

    pub fn config(&self) -> &AugConfig {
        &self.cfg
    }

    /// Mean and standard deviation used for normalisation (for de-normalising previews).
    pub fn normalisation(&self) -> (Vec<f32>, Vec<f32>) {
        (self.mean.clone(), self.inv_std.iter().map(|i| 1.0 / i).collect())
    }

    /// Number of f32 values in one view: size * size * bands.
    pub fn view_len(&self) -> usize {
        self.size * self.size * self.bands()
    }

    /// The random stream of (epoch, dataset index, view).
    pub fn view_rng(&self, epoch: u64, index: u32, view: usize) -> ChaCha8Rng {
        stream(self.seed, Domain::Augment, epoch, 2 * index as u64 + (view as u64 & 1))
    }

    /// Draw the parameters of `view` (0 or 1) for a tile of height x width. Every draw
    /// happens whether or not its op is applied, so changing one probability does not shift
    /// the random choices of the others.
    pub fn draw(&self, rng: &mut ChaCha8Rng, height: usize, width: usize, view: usize) -> ViewParams {
        let c = &self.cfg;
        let v = view.min(1);
        let crop = crop::random_crop(rng, height, width, (c.crop_min, 1.0));
        let jitter_on = rng.gen::<f32>() < c.jitter_p;
        let jitter = Jitter::draw(rng, c.jitter);
        let grayscale = rng.gen::<f32>() < c.grayscale_p;
        let blur_on = rng.gen::<f32>() < c.blur_p[v];
        let sigma = uniform(rng, c.blur_sigma[0], c.blur_sigma[1]) * self.size as f32 / BLUR_REFERENCE_SIZE;
        let solarize = rng.gen::<f32>() < c.solarize_p[v];
        let hflip = rng.gen::<f32>() < c.hflip_p;
        let vflip = rng.gen::<f32>() < c.vflip_p;
        let rot = rng.gen_range(0..4u8);
        ViewParams {
            crop,
            jitter: jitter_on.then_some(jitter),
            grayscale,
            blur_sigma: (blur_on && sigma > 0.0).then_some(sigma),
            solarize,
            dihedral: Dihedral { hflip, vflip, rot90: if c.rot90 { rot } else { 0 } },
        }
    }

    /// Make view `view` of `tile` (dataset index `index`) into `out` (size * size * bands).
    pub fn view_into(
        &self,
        tile: &Tile,
        epoch: u64,
        index: u32,
        view: usize,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<ViewParams> {
        let mut rng = self.view_rng(epoch, index, view);
        let params = self.draw(&mut rng, tile.height(), tile.width(), view);
        self.apply(tile, &params, &mut rng, out, scratch)?;
        Ok(params)
    }

    /// Run the pipeline with given parameters; `rng` supplies the additive noise.
    pub fn apply(
        &self,
        tile: &Tile,
        p: &ViewParams,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<()> {
        let (s, bands) = (self.size, tile.bands());
        if bands != self.bands() {
            return Err(WorkerError::Data(format!(
                "tile has {bands} bands but the normalisation statistics have {}",
                self.bands()
            )));
        }
        if out.len() != self.view_len() {
            return Err(WorkerError::Data(format!(
                "view buffer holds {} values, need {}",
                out.len(),
                self.view_len()
            )));
        }
        let c = p.crop;
        if c.height == 0
            || c.width == 0
            || c.top + c.height > tile.height()
            || c.left + c.width > tile.width()
        {
            return Err(WorkerError::Data(format!(
                "crop {c:?} outside a {}x{} tile",
                tile.height(),
                tile.width()
            )));
        }
        let Scratch { img, tmp, row } = scratch;
        img.clear();
        img.resize(s * s * bands, 0.0);
        match tile.pixels() {
            Pixels::U8(px) => crop::resize_crop(px, tile.width(), bands, c, s, img, tmp),
            Pixels::U16(px) => crop::resize_crop(px, tile.width(), bands, c, s, img, tmp),
        }
        if let Some(j) = &p.jitter {
            j.apply(img, bands);
        }
        if p.grayscale {
            colour::grayscale(img, bands);
        }
        if let Some(sigma) = p.blur_sigma {
            blur::gaussian_blur(img, s, s, bands, sigma, tmp, row);
        }
        if p.solarize {
            colour::solarize(img, SOLARIZE_THRESHOLD);
        }
        let norm = Normalise { mean: &self.mean, inv_std: &self.inv_std, noise_std: self.cfg.noise_std };
        dihedral::finish(img, s, bands, p.dihedral, &norm, rng, out);
        Ok(())
    }

    /// Both views of one tile.
    pub fn pair_into(
        &self,
        tile: &Tile,
        epoch: u64,
        index: u32,
        out1: &mut [f32],
        out2: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<()> {
        self.view_into(tile, epoch, index, 0, out1, scratch)?;
        self.view_into(tile, epoch, index, 1, out2, scratch)?;
        Ok(())
    }
}

fn validate(c: &AugConfig, size: usize) -> Result<()> {
    let bad = |what: &str, v: String| Err(WorkerError::Data(format!("aug.{what} {v}")));
    let prob = |p: f32| (0.0..=1.0).contains(&p);
    if size == 0 {
        return bad("output size", "must be at least 1 pixel".into());
    }
    if !(c.crop_min > 0.0 && c.crop_min <= 1.0) {
        return bad("crop_min", format!("must be in (0, 1], got {}", c.crop_min));
    }
    if c.jitter.iter().any(|s| !(s.is_finite() && *s >= 0.0)) || c.jitter[3] > 0.5 {
        return bad("jitter", format!("strengths must be >= 0 with hue <= 0.5, got {:?}", c.jitter));
    }
    let probs = [
        ("jitter_p", c.jitter_p),
        ("grayscale_p", c.grayscale_p),
        ("blur_p[0]", c.blur_p[0]),
        ("blur_p[1]", c.blur_p[1]),
        ("solarize_p[0]", c.solarize_p[0]),
        ("solarize_p[1]", c.solarize_p[1]),
        ("hflip_p", c.hflip_p),
        ("vflip_p", c.vflip_p),
    ];
    for (name, p) in probs {
        if !prob(p) {
            return bad(name, format!("is a probability, must be in [0, 1], got {p}"));
        }
    }
    let [s0, s1] = c.blur_sigma;
    if !(s0.is_finite() && s1.is_finite() && s0 >= 0.0 && s0 <= s1 && s1 <= 50.0) {
        return bad(
            "blur_sigma",
            format!("must be [lo, hi] with 0 <= lo <= hi <= 50, got {:?}", c.blur_sigma),
        );
    }
    if !(c.noise_std.is_finite() && c.noise_std >= 0.0) {
        return bad("noise_std", format!("must be >= 0, got {}", c.noise_std));
    }
    Ok(())
}
