//! Photometric ops on an HWC f32 image in 0..1, following torchvision's tensor functional ops
//! (each result clamped to 0..1), extended to any band count by one rule:
//!
//! - brightness scales every band (illumination affects all of them);
//! - contrast blends the first three bands towards their mean luminance when there are at
//!   least three, and every other band towards its own mean;
//! - saturation, hue and grayscale act on the first three bands treated as RGB, only when
//!   bands >= 3, and leave other bands untouched;
//! - solarize inverts every band at or above the threshold.

use super::uniform;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// ITU-R 601 luma weights, as torchvision's `rgb_to_grayscale`.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

#[inline(always)]
fn luma(p: &[f32]) -> f32 {
    LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2]
}

/// One of the four colour-jitter operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

/// Drawn colour-jitter parameters: factors and the random order they apply in.
#[derive(Debug, Clone, PartialEq)]
pub struct Jitter {
    pub order: [JitterOp; 4],
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Hue shift in turns, in [-0.5, 0.5].
    pub hue: f32,
}

impl Jitter {
    /// Factors uniform in [max(0, 1 - s), 1 + s] (hue in [-s, s]) for strengths `s`, order a
    /// uniform permutation, as torchvision's `ColorJitter.get_params`.
    pub fn draw(rng: &mut ChaCha8Rng, strength: [f32; 4]) -> Jitter {
        let mut order = [JitterOp::Brightness, JitterOp::Contrast, JitterOp::Saturation, JitterOp::Hue];
        order.shuffle(rng);
        let factor = |rng: &mut ChaCha8Rng, s: f32| uniform(rng, (1.0 - s).max(0.0), 1.0 + s);
        Jitter {
            order,
            brightness: factor(rng, strength[0]),
            contrast: factor(rng, strength[1]),
            saturation: factor(rng, strength[2]),
            hue: uniform(rng, -strength[3], strength[3]),
        }
    }

    pub fn apply(&self, img: &mut [f32], bands: usize) {
        for op in self.order {
            match op {
                JitterOp::Brightness if self.brightness != 1.0 => brightness(img, self.brightness),
                JitterOp::Contrast if self.contrast != 1.0 => contrast(img, bands, self.contrast),
                JitterOp::Saturation if self.saturation != 1.0 => saturation(img, bands, self.saturation),
                JitterOp::Hue if self.hue != 0.0 => hue(img, bands, self.hue),
                _ => {}
            }
        }
    }
}

/// Call `f(r, g, b)` on the first three bands of every pixel (only when bands >= 3). The
/// bands == 3 case gets its own loop so the chunk length is a compile-time constant.
#[inline(always)]
fn each_rgb(img: &mut [f32], bands: usize, mut f: impl FnMut(&mut f32, &mut f32, &mut f32)) {
    if bands == 3 {
        for p in img.chunks_exact_mut(3) {
            if let [r, g, b] = p {
                f(r, g, b)
            }
        }
    } else if bands > 3 {
        for p in img.chunks_exact_mut(bands) {
            if let [r, g, b, ..] = p {
                f(r, g, b)
            }
        }
    }
}

pub fn brightness(img: &mut [f32], factor: f32) {
    img.iter_mut().for_each(|v| *v = (*v * factor).clamp(0.0, 1.0));
}

pub fn contrast(img: &mut [f32], bands: usize, factor: f32) {
    let pixels = (img.len() / bands) as f64;
    let blend = |v: &mut f32, m: f32| *v = (factor * *v + (1.0 - factor) * m).clamp(0.0, 1.0);
    // Bands outside the RGB triple: each towards its own mean.
    let first_own = if bands >= 3 { 3 } else { 0 };
    for band in first_own..bands {
        let mean = img.iter().skip(band).step_by(bands).map(|&v| v as f64).sum::<f64>() / pixels;
        img.iter_mut().skip(band).step_by(bands).for_each(|v| blend(v, mean as f32));
    }
    if bands >= 3 {
        // f32 partial sums per block of pixels, f64 across blocks: fast and accurate.
        let mut lum = 0f64;
        for chunk in img.chunks(bands * 256) {
            let mut part = 0f32;
            for p in chunk.chunks_exact(bands) {
                part += luma(p);
            }
            lum += part as f64;
        }
        let m = (lum / pixels) as f32;
        each_rgb(img, bands, |r, g, b| {
            blend(r, m);
            blend(g, m);
            blend(b, m);
        });
    }
}

pub fn saturation(img: &mut [f32], bands: usize, factor: f32) {
    each_rgb(img, bands, |r, g, b| {
        let gray = LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b;
        for v in [r, g, b] {
            *v = (factor * *v + (1.0 - factor) * gray).clamp(0.0, 1.0);
        }
    });
}

/// Rotate hue by `shift` turns through HSV (torchvision's `_rgb2hsv` / `_hsv2rgb`).
/// Pixels are processed in blocks copied into separate r, g, b arrays, with select-only maths,
/// so the compiler vectorises the loop (which channel is largest is random per pixel: as
/// branches it mispredicts). HSV -> RGB uses channel(n) = v - v*s*clamp(min(k, 4 - k), 0, 1)
/// with k = (n + 6h) mod 6 (n = 5, 3, 1 for r, g, b), which equals the six-case table.
pub fn hue(img: &mut [f32], bands: usize, shift: f32) {
    if bands < 3 {
        return;
    }
    const BLOCK: usize = 64;
    let (mut r, mut g, mut b) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
    for chunk in img.chunks_mut(BLOCK * bands) {
        let n = chunk.len() / bands;
        for (i, p) in chunk.chunks_exact(bands).enumerate() {
            (r[i], g[i], b[i]) = (p[0], p[1], p[2]);
        }
        for i in 0..BLOCK {
            (r[i], g[i], b[i]) = hue_pixel(r[i], g[i], b[i], shift);
        }
        for (i, p) in chunk.chunks_exact_mut(bands).enumerate().take(n) {
            (p[0], p[1], p[2]) = (r[i], g[i], b[i]);
        }
    }
}

#[inline(always)]
fn hue_pixel(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let cr = maxc - r.min(g).min(b);
    // Grey (cr == 0): cr multiplies the hue term below, so every channel comes out as v.
    let inv = if cr > 0.0 { 1.0 / cr } else { 0.0 };
    let (rc, gc, bc) = ((maxc - r) * inv, (maxc - g) * inv, (maxc - b) * inv);
    let h6 = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    // 6h + n lies in [2, 20) for h6 in [-1, 5], |6 shift| <= 3 and n <= 5: three conditional
    // subtractions reduce it mod 6 (no floor: that is a libm call on baseline x86-64).
    let h = h6 + 6.0 + 6.0 * shift;
    let ch = |n: f32| {
        let mut k = n + h;
        for _ in 0..3 {
            k -= if k >= 6.0 { 6.0 } else { 0.0 };
        }
        (maxc - cr * k.min(4.0 - k).clamp(0.0, 1.0)).clamp(0.0, 1.0)
    };
    (ch(5.0), ch(3.0), ch(1.0))
}

/// Replace the first three bands by their luminance (when bands >= 3).
pub fn grayscale(img: &mut [f32], bands: usize) {
    each_rgb(img, bands, |r, g, b| {
        let y = LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b;
        (*r, *g, *b) = (y, y, y);
    });
}

/// Invert every sample at or above `threshold` (0..1 units), as torchvision's `solarize`.
pub fn solarize(img: &mut [f32], threshold: f32) {
    img.iter_mut().for_each(|v| {
        if *v >= threshold {
            *v = 1.0 - *v
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_ramp(bands: usize) -> Vec<f32> {
        (0..64 * bands).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn grayscale_makes_rgb_equal_and_keeps_extra_bands() {
        let mut img = rgb_ramp(4);
        let before = img.clone();
        grayscale(&mut img, 4);
        for (p, q) in img.chunks_exact(4).zip(before.chunks_exact(4)) {
            assert_eq!(p[0], p[1]);
            assert_eq!(p[1], p[2]);
            assert!((p[0] - luma(q)).abs() < 1e-6);
            assert_eq!(p[3], q[3]);
        }
        let mut two = rgb_ramp(2);
        let keep = two.clone();
        grayscale(&mut two, 2);
        assert_eq!(two, keep);
    }

    #[test]
    fn solarize_inverts_at_and_above_threshold_only() {
        let mut img = vec![0.0, 0.25, 0.4999, 0.5, 0.75, 1.0];
        solarize(&mut img, 0.5);
        assert_eq!(img, vec![0.0, 0.25, 0.4999, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn hue_shift_by_a_full_turn_is_identity_and_a_third_permutes_primaries() {
        let mut img = rgb_ramp(3);
        let before = img.clone();
        hue(&mut img, 3, 0.5);
        hue(&mut img, 3, 0.5);
        for (a, b) in img.iter().zip(&before) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mut red = vec![0.8, 0.1, 0.1];
        hue(&mut red, 3, 1.0 / 3.0);
        for (a, b) in red.iter().zip([0.1, 0.8, 0.1]) {
            assert!((a - b).abs() < 1e-5, "{red:?}");
        }
    }

    /// torchvision's `_rgb2hsv` / `_hsv2rgb` round trip with the six-case table, written the
    /// plain way: the reference for the branchless `hue`.
    fn hue_reference(p: [f32; 3], shift: f32) -> [f32; 3] {
        let [r, g, b] = p;
        let maxc = r.max(g).max(b);
        let cr = maxc - r.min(g).min(b);
        if cr == 0.0 {
            return p;
        }
        let s = cr / maxc;
        let (rc, gc, bc) = ((maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr);
        let h6 = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = ((h6 / 6.0 + 1.0) % 1.0 + shift).rem_euclid(1.0);
        let i = (h * 6.0).floor();
        let f = h * 6.0 - i;
        let v = maxc;
        let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        match i as i32 % 6 {
            0 => [v, t, pp],
            1 => [q, v, pp],
            2 => [pp, v, t],
            3 => [pp, q, v],
            4 => [t, pp, v],
            _ => [v, pp, q],
        }
    }

    #[test]
    fn hue_matches_the_six_case_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for _ in 0..20_000 {
            let p: [f32; 3] = [rng.gen(), rng.gen(), rng.gen()];
            let shift = rng.gen_range(-0.5..=0.5);
            let mut got = p.to_vec();
            hue(&mut got, 3, shift);
            let want = hue_reference(p, shift);
            for k in 0..3 {
                // Both are exact formulas evaluated in f32 in a different order.
                assert!((got[k] - want[k]).abs() < 2e-5, "{p:?} shift {shift}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn contrast_zero_gives_the_mean_and_brightness_scales() {
        let mut img = rgb_ramp(3);
        let mean_luma = img.chunks_exact(3).map(luma).sum::<f32>() / 64.0;
        contrast(&mut img, 3, 0.0);
        assert!(img.iter().all(|v| (v - mean_luma).abs() < 1e-5));
        let mut img = vec![0.2, 0.6, 0.9];
        brightness(&mut img, 1.5);
        for (a, b) in img.iter().zip([0.3, 0.9, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{img:?}");
        }
    }

    #[test]
    fn saturation_zero_equals_grayscale() {
        let mut a = rgb_ramp(3);
        let mut b = a.clone();
        saturation(&mut a, 3, 0.0);
        grayscale(&mut b, 3);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }
}
