//! Flips and quarter turns of a square HWC image, and the final pass that applies them while
//! normalising and adding noise (they commute with every earlier op, so the pipeline does them
//! for free as an index remap when writing the output).
//!
//! Composition order: horizontal flip, then vertical flip, then `rot90` counter-clockwise
//! quarter turns (as seen on screen, y down).

use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// An element of the dihedral group of the square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dihedral {
    pub hflip: bool,
    pub vflip: bool,
    /// Counter-clockwise quarter turns, 0..4.
    pub rot90: u8,
}

impl Dihedral {
    /// Source pixel (y, x) that lands at output (y, x) of an s x s image.
    #[inline]
    pub fn source(&self, y: usize, x: usize, s: usize) -> (usize, usize) {
        let (mut y, mut x) = (y, x);
        for _ in 0..self.rot90 % 4 {
            // Inverse of one CCW turn: out(y, x) = in(x, s-1-y).
            (y, x) = (x, s - 1 - y);
        }
        if self.vflip {
            y = s - 1 - y;
        }
        if self.hflip {
            x = s - 1 - x;
        }
        (y, x)
    }

    /// The map as src = (y0 + a*y + b*x, x0 + c*y + d*x), exact because it is affine.
    fn affine(&self, s: usize) -> [isize; 6] {
        let o = self.source(0, 0, s);
        let py = self.source(1, 0, s);
        let px = self.source(0, 1, s);
        let d =
            |p: (usize, usize), q: (usize, usize)| (p.0 as isize - q.0 as isize, p.1 as isize - q.1 as isize);
        let (ay, cy) = d(py, o);
        let (bx, dx) = d(px, o);
        [o.0 as isize, ay, bx, o.1 as isize, cy, dx]
    }
}

/// Apply `t` to an s x s x bands image (a reference implementation for tests and previews).
pub fn transform(img: &[f32], s: usize, bands: usize, t: Dihedral) -> Vec<f32> {
    let mut out = vec![0.0; img.len()];
    for y in 0..s {
        for x in 0..s {
            let (sy, sx) = t.source(y, x, s);
            let (o, i) = ((y * s + x) * bands, (sy * s + sx) * bands);
            out[o..o + bands].copy_from_slice(&img[i..i + bands]);
        }
    }
    out
}

/// Per-band normalisation and additive noise of the final pass.
pub struct Normalise<'a> {
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub noise_std: f32,
}

/// Write `out[y, x] = (img[t.source(y, x)] - mean) * inv_std + noise_std * n`, n ~ N(0, 1)
/// approximately (see `NoiseGen`), drawn in output order from `rng`.
pub fn finish(
    img: &[f32],
    s: usize,
    bands: usize,
    t: Dihedral,
    norm: &Normalise,
    rng: &mut ChaCha8Rng,
    out: &mut [f32],
) {
    // The source pixel index is affine in (y, x): p0 + y * row_step + x * col_step.
    let [y0, a, b, x0, c, d] = t.affine(s);
    let si = s as isize;
    let (p0, row_step, col_step) = (y0 * si + x0, a * si + c, b * si + d);
    match bands {
        1 => remap::<1>(img, s, p0, row_step, col_step, norm, out),
        3 => remap::<3>(img, s, p0, row_step, col_step, norm, out),
        4 => remap::<4>(img, s, p0, row_step, col_step, norm, out),
        _ => remap_any(img, s, bands, p0, row_step, col_step, norm, out),
    }
    if norm.noise_std > 0.0 {
        let mut noise = NoiseGen::new(rng);
        let mut pairs = out[..s * s * bands].chunks_exact_mut(2);
        for p in &mut pairs {
            let (a, b) = noise.pair();
            p[0] += norm.noise_std * a;
            p[1] += norm.noise_std * b;
        }
        for v in pairs.into_remainder() {
            *v += norm.noise_std * noise.sample();
        }
    }
}

/// `finish`'s remap and normalisation for a band count known at compile time.
fn remap<const B: usize>(
    img: &[f32],
    s: usize,
    p0: isize,
    rs: isize,
    cs: isize,
    norm: &Normalise,
    out: &mut [f32],
) {
    let mut m = [0f32; B];
    let mut k = [0f32; B];
    m.copy_from_slice(&norm.mean[..B]);
    k.copy_from_slice(&norm.inv_std[..B]);
    for (y, row) in out[..s * s * B].chunks_exact_mut(s * B).enumerate() {
        let base = p0 + y as isize * rs;
        for (x, dst) in row.chunks_exact_mut(B).enumerate() {
            let i = (base + x as isize * cs) as usize * B;
            let src: &[f32; B] = img[i..i + B].try_into().expect("B values");
            for c in 0..B {
                dst[c] = (src[c] - m[c]) * k[c];
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn remap_any(
    img: &[f32],
    s: usize,
    bands: usize,
    p0: isize,
    rs: isize,
    cs: isize,
    norm: &Normalise,
    out: &mut [f32],
) {
    for (y, row) in out[..s * s * bands].chunks_exact_mut(s * bands).enumerate() {
        let base = p0 + y as isize * rs;
        for (x, dst) in row.chunks_exact_mut(bands).enumerate() {
            let i = (base + x as isize * cs) as usize * bands;
            for (c, (d, v)) in dst.iter_mut().zip(&img[i..i + bands]).enumerate() {
                *d = (v - norm.mean[c]) * norm.inv_std[c];
            }
        }
    }
}

/// Fast standard-normal-like samples: the sum of four 8-bit uniforms (Irwin-Hall, n = 4),
/// centred and scaled to unit variance. Mean and variance are exact, the resolution is
/// 0.007 sigma, and tails stop at about +-3.46 sigma, which additive augmentation noise does
/// not need. A splitmix64 generator seeded from the view's ChaCha stream gives two samples
/// per 64-bit step (ChaCha8 plus a ziggurat cost as much as all other ops of a 224-px view).
pub struct NoiseGen {
    state: u64,
    spare: Option<f32>,
}

impl NoiseGen {
    pub fn new(rng: &mut ChaCha8Rng) -> NoiseGen {
        NoiseGen { state: rng.next_u64(), spare: None }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        // splitmix64: full period, passes BigCrush; plenty for noise.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Two samples from one 64-bit draw (bytes 0-3 and 4-7).
    #[inline(always)]
    pub fn pair(&mut self) -> (f32, f32) {
        // Sum the bytes of each 32-bit half in-register: one integer-to-float conversion per
        // sample. Four uniform bytes: mean 4 * 127.5, variance 4 * (256^2 - 1) / 12.
        let z = self.next();
        const B: u64 = 0x00ff_00ff_00ff_00ff;
        const H: u64 = 0x0000_ffff_0000_ffff;
        let t = (z & B) + ((z >> 8) & B);
        let t = (t & H) + ((t >> 16) & H);
        const MEAN: f32 = 4.0 * 127.5;
        const INV_STD: f32 = 1.0 / 147.800_54; // sqrt(4 * (256^2 - 1) / 12)
        (((t & 0xffff_ffff) as f32 - MEAN) * INV_STD, ((t >> 32) as f32 - MEAN) * INV_STD)
    }

    /// One sample.
    #[inline(always)]
    pub fn sample(&mut self) -> f32 {
        match self.spare.take() {
            Some(v) => v,
            None => {
                let (a, b) = self.pair();
                self.spare = Some(b);
                a
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::{stream, Domain};

    fn img(s: usize, bands: usize) -> Vec<f32> {
        (0..s * s * bands).map(|i| i as f32).collect()
    }

    #[test]
    fn flips_twice_and_four_quarter_turns_are_identity() {
        let (s, b) = (7, 3);
        let a = img(s, b);
        let h = Dihedral { hflip: true, ..Default::default() };
        let v = Dihedral { vflip: true, ..Default::default() };
        let r = Dihedral { rot90: 1, ..Default::default() };
        assert_ne!(transform(&a, s, b, h), a);
        assert_eq!(transform(&transform(&a, s, b, h), s, b, h), a);
        assert_eq!(transform(&transform(&a, s, b, v), s, b, v), a);
        let mut x = a.clone();
        for turn in 0..4 {
            if turn > 0 {
                assert_ne!(x, a);
            }
            x = transform(&x, s, b, r);
        }
        assert_eq!(x, a);
    }

    #[test]
    fn rot90_is_counter_clockwise_on_screen() {
        // Top-right pixel moves to top-left.
        let (s, b) = (4, 1);
        let a = img(s, b);
        let out = transform(&a, s, b, Dihedral { rot90: 1, ..Default::default() });
        assert_eq!(out[0], a[s - 1]);
    }

    #[test]
    fn combined_element_equals_the_ops_in_sequence() {
        let (s, b) = (5, 2);
        let a = img(s, b);
        for bits in 0..16u8 {
            let t = Dihedral { hflip: bits & 1 != 0, vflip: bits & 2 != 0, rot90: bits >> 2 };
            let mut seq = a.clone();
            if t.hflip {
                seq = transform(&seq, s, b, Dihedral { hflip: true, ..Default::default() });
            }
            if t.vflip {
                seq = transform(&seq, s, b, Dihedral { vflip: true, ..Default::default() });
            }
            for _ in 0..t.rot90 {
                seq = transform(&seq, s, b, Dihedral { rot90: 1, ..Default::default() });
            }
            assert_eq!(transform(&a, s, b, t), seq, "{t:?}");
            // The fused final pass remaps identically (mean 0, std 1, no noise).
            let mut out = vec![0.0; a.len()];
            let mut rng = stream(0, Domain::Augment, 0, 0);
            let norm = Normalise { mean: &[0.0; 2], inv_std: &[1.0; 2], noise_std: 0.0 };
            finish(&a, s, b, t, &norm, &mut rng, &mut out);
            assert_eq!(out, seq, "{t:?}");
        }
    }

    #[test]
    fn noise_has_zero_mean_unit_variance_and_bounded_tails() {
        let mut rng = stream(5, Domain::Augment, 0, 0);
        let mut g = NoiseGen::new(&mut rng);
        let n = 200_000;
        let xs: Vec<f32> = (0..n).map(|_| g.sample()).collect();
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: mean 1/sqrt(n) ~ 0.0022, variance ~ sqrt(2/n) ~ 0.003.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        assert!(xs.iter().all(|x| x.abs() <= 3.46));
        // Mass beyond one sigma: 33.17 % for the sum of four uniform bytes (exact, by
        // convolving the four distributions), a Gaussian's is 31.73 %. Standard error ~0.1 %.
        let beyond = xs.iter().filter(|x| x.abs() > 1.0).count() as f64 / n as f64;
        assert!((beyond - 0.3317).abs() < 0.005, "{beyond}");
    }
}
