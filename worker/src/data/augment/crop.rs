//! Random resized crop: torchvision's `RandomResizedCrop.get_params` (10 attempts, then a
//! centre crop clamped to the ratio range) and an antialiased bilinear resize of the box to
//! S x S (PIL's / torchvision `antialias=True` triangle filter: plain bilinear when enlarging,
//! a triangle widened by the scale factor when shrinking, so downscaling does not alias).

use super::uniform;
use crate::data::tile::Sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A box in tile pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Aspect-ratio range of the crop (width / height), as in torchvision.
pub const RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);

/// torchvision's algorithm: up to 10 draws of (area fraction in `scale`, log-uniform aspect
/// ratio in `RATIO`); the first box that fits is placed uniformly. If none fits, a centre crop
/// of the whole tile clamped to the ratio range.
pub fn random_crop(rng: &mut ChaCha8Rng, height: usize, width: usize, scale: (f32, f32)) -> CropBox {
    let area = (height * width) as f32;
    let (lr0, lr1) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < RATIO.0 {
        (width, ((width as f32 / RATIO.0).round() as usize).clamp(1, height))
    } else if in_ratio > RATIO.1 {
        (((height as f32 * RATIO.1).round() as usize).clamp(1, width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// Resampling taps of one axis: output i reads inputs start[i] .. start[i] + count[i].
pub struct Taps {
    start: Vec<usize>,
    count: Vec<usize>,
    /// `k` weights per output, zero-padded.
    weights: Vec<f32>,
    k: usize,
}

impl Taps {
    /// Triangle-filter taps mapping `n_in` samples onto `n_out` (pixel centres aligned, as
    /// `align_corners=False`), support widened by the scale when shrinking; edges clamp by
    /// renormalising the weights that fall inside.
    pub fn new(n_in: usize, n_out: usize) -> Taps {
        let scale = n_in as f32 / n_out as f32;
        let fs = scale.max(1.0);
        let support = fs;
        let k = support.ceil() as usize * 2 + 1;
        let mut t = Taps { start: vec![0; n_out], count: vec![0; n_out], weights: vec![0.0; n_out * k], k };
        for i in 0..n_out {
            let centre = (i as f32 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0) as usize).min(n_in - 1);
            let hi = ((centre + support + 0.5).floor() as usize).clamp(lo + 1, n_in);
            let n = (hi - lo).min(k);
            let w = &mut t.weights[i * k..i * k + n];
            let mut sum = 0.0;
            for (j, wj) in w.iter_mut().enumerate() {
                let x = ((lo + j) as f32 + 0.5 - centre) / fs;
                *wj = (1.0 - x.abs()).max(0.0);
                sum += *wj;
            }
            if sum > 0.0 {
                w.iter_mut().for_each(|wj| *wj /= sum);
            } else {
                w[0] = 1.0;
            }
            t.start[i] = lo;
            t.count[i] = n;
        }
        t
    }
}

/// Resize `crop` of an HWC tile (`tile_w` wide, `bands` deep) to `size x size` into `out`
/// (HWC f32 in 0..1). `tmp` is scratch space, resized as needed.
pub fn resize_crop<T: Sample>(
    src: &[T],
    tile_w: usize,
    bands: usize,
    crop: CropBox,
    size: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let tx = Taps::new(crop.width, size);
    let ty = Taps::new(crop.height, size);
    let row_len = size * bands;
    tmp.clear();
    tmp.resize(crop.height * row_len, 0.0);
    // Horizontal pass: every source row of the box to `size` samples.
    for (r, dst) in tmp.chunks_exact_mut(row_len).enumerate() {
        let row = &src[((crop.top + r) * tile_w + crop.left) * bands..];
        for x in 0..size {
            let (s, n) = (tx.start[x], tx.count[x]);
            let w = &tx.weights[x * tx.k..x * tx.k + n];
            for b in 0..bands {
                let mut acc = 0.0;
                for (j, &wj) in w.iter().enumerate() {
                    acc += wj * row[(s + j) * bands + b].to_unit();
                }
                dst[x * bands + b] = acc;
            }
        }
    }
    // Vertical pass: weighted sums of whole rows (contiguous, vectorises).
    for (y, dst) in out[..size * row_len].chunks_exact_mut(row_len).enumerate() {
        let (s, n) = (ty.start[y], ty.count[y]);
        dst.fill(0.0);
        for j in 0..n {
            let wj = ty.weights[y * ty.k + j];
            let srow = &tmp[(s + j) * row_len..(s + j + 1) * row_len];
            for (d, &v) in dst.iter_mut().zip(srow) {
                *d += wj * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::{stream, Domain};

    #[test]
    fn crops_respect_scale_and_ratio_over_many_draws() {
        let mut rng = stream(3, Domain::Augment, 0, 0);
        let (h, w) = (96, 96);
        let mut fallback = 0;
        for _ in 0..20_000 {
            let c = random_crop(&mut rng, h, w, (0.2, 1.0));
            assert!(c.top + c.height <= h && c.left + c.width <= w && c.height > 0 && c.width > 0);
            let area = (c.height * c.width) as f32 / (h * w) as f32;
            let ratio = c.width as f32 / c.height as f32;
            if c.height == h && c.width == w {
                fallback += 1;
                continue;
            }
            // Rounding to whole pixels moves area and ratio by at most about one pixel's worth.
            let tol = 2.5 / c.height.min(c.width) as f32;
            assert!(area >= 0.2 * (1.0 - tol) && area <= 1.0, "area {area} of {c:?}");
            assert!(
                ratio >= RATIO.0 * (1.0 - tol) && ratio <= RATIO.1 * (1.0 + tol),
                "ratio {ratio} of {c:?}"
            );
        }
        // Full-tile crops only happen when area ~1 and ratio ~1 are drawn or all 10 tries fail.
        assert!(fallback < 200, "{fallback} full-tile crops");
    }

    #[test]
    fn fallback_is_a_centre_crop_within_the_ratio_range() {
        // A 10 x 100 strip: no box with ratio <= 4/3 and area >= 90 % fits, so all tries fail.
        let mut rng = stream(1, Domain::Augment, 0, 0);
        let c = random_crop(&mut rng, 10, 100, (0.9, 1.0));
        assert_eq!(c, CropBox { top: 0, left: 43, height: 10, width: 13 });
    }

    #[test]
    fn taps_sum_to_one_and_identity_resize_is_exact() {
        for (n_in, n_out) in [(96, 224), (224, 64), (7, 7), (1, 32), (300, 31)] {
            let t = Taps::new(n_in, n_out);
            for i in 0..n_out {
                let s: f32 = t.weights[i * t.k..i * t.k + t.count[i]].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{n_in}->{n_out} tap {i} sums to {s}");
                assert!(t.start[i] + t.count[i] <= n_in);
            }
        }
        let src: Vec<u8> = (0..5 * 5 * 2).map(|i| (i * 5) as u8).collect();
        let mut out = vec![0.0; 5 * 5 * 2];
        let crop = CropBox { top: 0, left: 0, height: 5, width: 5 };
        resize_crop(&src, 5, 2, crop, 5, &mut out, &mut Vec::new());
        for (o, s) in out.iter().zip(&src) {
            assert!((o - *s as f32 / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn downscaling_averages_instead_of_aliasing() {
        // A 1-pixel checkerboard shrunk 4x must come out flat grey, not black or white.
        let src: Vec<u8> = (0..64 * 64).map(|i| if (i % 64 + i / 64) % 2 == 0 { 255 } else { 0 }).collect();
        let mut out = vec![0.0; 16 * 16];
        resize_crop(
            &src,
            64,
            1,
            CropBox { top: 0, left: 0, height: 64, width: 64 },
            16,
            &mut out,
            &mut Vec::new(),
        );
        for v in out {
            assert!((v - 0.5).abs() < 0.05, "{v}");
        }
    }
}
