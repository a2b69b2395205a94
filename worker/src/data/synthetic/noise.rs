//! Hash-based value noise: stateless, so any pixel of a scene can be shaded independently.

/// Integer hash of a lattice point and a seed (a lowbias32-style mixer).
#[inline(always)]
pub fn hash3(x: i32, y: i32, z: u32) -> u32 {
    let mut h = z ^ (x as u32).wrapping_mul(0x27d4_eb2d) ^ (y as u32).wrapping_mul(0x1656_67b1);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// A uniform number in [0, 1) from a hash.
#[inline(always)]
pub fn unit(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The k-th uniform in [0, 1) attached to a lattice cell: per-object random properties.
#[inline(always)]
pub fn cell(x: i32, y: i32, seed: u32, k: u32) -> f32 {
    unit(hash3(x, y, seed.wrapping_add(k.wrapping_mul(0x9e37_79b9))))
}

/// floor() as an integer without a libm call (`f32::floor` is not inlined on baseline x86-64,
/// and it dominated the renderer's profile). Valid for |x| < 2^31.
#[inline(always)]
pub fn ifloor(x: f32) -> i32 {
    let i = x as i32;
    i - ((i as f32) > x) as i32
}

/// floor() as f32, through `ifloor`.
#[inline(always)]
pub fn ffloor(x: f32) -> f32 {
    ifloor(x) as f32
}

/// x modulo p in [0, p) (`rem_euclid` calls libm's fmodf).
#[inline(always)]
pub fn wrap(x: f32, p: f32) -> f32 {
    x - ffloor(x / p) * p
}

/// Smooth value noise and its fractal sum.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    pub seed: u32,
}

impl Noise {
    /// Value noise in [0, 1) with lattice spacing 1.
    #[inline]
    pub fn value(&self, x: f32, y: f32) -> f32 {
        let (ix, iy) = (ifloor(x), ifloor(y));
        let (fx, fy) = (ix as f32, iy as f32);
        let (tx, ty) = (x - fx, y - fy);
        let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let v = |dx: i32, dy: i32| unit(hash3(ix + dx, iy + dy, self.seed));
        let a = v(0, 0) + (v(1, 0) - v(0, 0)) * sx;
        let b = v(0, 1) + (v(1, 1) - v(0, 1)) * sx;
        a + (b - a) * sy
    }

    /// Fractal sum of `octaves` octaves (gain 0.5, lacunarity ~2), normalised to about [0, 1).
    #[inline]
    pub fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
        for o in 0..octaves {
            let n = Noise { seed: self.seed.wrapping_add(o.wrapping_mul(0x6a09_e667)) };
            // An irrational-ish lacunarity and an offset per octave hide the lattice.
            sum += amp * n.value(x * f + o as f32 * 17.3, y * f - o as f32 * 9.1);
            norm += amp;
            amp *= 0.5;
            f *= 2.03;
        }
        sum / norm
    }

    /// The same noise with a different seed (for a second, independent field).
    pub fn derive(&self, k: u32) -> Noise {
        Noise { seed: hash3(k as i32, 0x55, self.seed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_is_continuous_and_bounded() {
        let n = Noise { seed: 7 };
        let mut prev = n.value(0.0, 0.3);
        for i in 1..1000 {
            let v = n.value(i as f32 * 0.01, 0.3);
            assert!((0.0..1.0).contains(&v));
            assert!((v - prev).abs() < 0.05, "jump at {i}: {prev} -> {v}");
            prev = v;
        }
    }
}
