//! Rendering one synthetic tile: a camera looks straight down on a procedural scene laid out in
//! metres. The layout is rotated by an arbitrary angle and scaled (ground sampling distance),
//! the sun comes from a random direction (shading and shadows), and the "sensor" adds a gain,
//! tint, haze, optical blur and noise before quantising to 8 bits.

use super::field::Field;
use super::forest::Forest;
use super::noise::Noise;
use super::residential::Residential;
use super::road::Road;
use super::solar::Solar;
use super::water::Water;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::TAU;

pub type Rgb = [f32; 3];

/// The dominant scene type of a tile: its label for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SceneClass {
    Residential = 0,
    Road = 1,
    Field = 2,
    Water = 3,
    Forest = 4,
    Solar = 5,
}

pub const NUM_CLASSES: usize = 6;
pub const CLASS_NAMES: [&str; NUM_CLASSES] = ["residential", "road", "field", "water", "forest", "solar"];

impl SceneClass {
    pub const ALL: [SceneClass; NUM_CLASSES] = [
        SceneClass::Residential,
        SceneClass::Road,
        SceneClass::Field,
        SceneClass::Water,
        SceneClass::Forest,
        SceneClass::Solar,
    ];

    pub fn name(self) -> &'static str {
        CLASS_NAMES[self as usize]
    }
}

/// A scene: colour of the ground at a point (u, v) in metres.
pub trait Scene: Sync {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb;
}

/// What every scene may use: noise, the sun, and the tile's extent.
pub struct Ctx {
    pub noise: Noise,
    /// Horizontal unit vector towards the sun, in scene coordinates.
    pub sun: [f32; 2],
    /// 3-D unit vector towards the sun (z up).
    pub sun3: [f32; 3],
    /// Horizontal shadow length per metre of object height.
    pub shadow_k: f32,
    /// Half the tile's side, metres.
    pub half_extent: f32,
    /// Shadow colour multiplier (skylight is bluish).
    pub shade_tint: Rgb,
}

impl Ctx {
    /// The point that shades `p` if an object of `height` stands there.
    #[inline]
    pub fn towards_sun(&self, u: f32, v: f32, height: f32) -> (f32, f32) {
        let d = height * self.shadow_k;
        (u + self.sun[0] * d, v + self.sun[1] * d)
    }

    /// Diffuse light on a surface with unit normal n: ambient plus sun.
    #[inline]
    pub fn light(&self, n: [f32; 3]) -> f32 {
        let d = n[0] * self.sun3[0] + n[1] * self.sun3[1] + n[2] * self.sun3[2];
        0.45 + 0.75 * d.max(0.0)
    }

    /// Darken a colour as a cast shadow does.
    #[inline]
    pub fn shadowed(&self, c: Rgb) -> Rgb {
        [c[0] * self.shade_tint[0], c[1] * self.shade_tint[1], c[2] * self.shade_tint[2]]
    }
}

#[inline]
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

#[inline]
pub fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

#[inline]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A colour drawn around `base`: brightness x(1 +- amount) and a hue wobble of amount/2.
pub fn vary(rng: &mut ChaCha8Rng, base: Rgb, amount: f32) -> Rgb {
    let k = 1.0 + rng.gen_range(-amount..=amount);
    let mut c = scale(base, k);
    for ch in &mut c {
        *ch *= 1.0 + rng.gen_range(-amount..=amount) * 0.5;
    }
    c
}

/// Pick one of a palette and vary it.
pub fn pick(rng: &mut ChaCha8Rng, palette: &[Rgb], amount: f32) -> Rgb {
    let c = palette[rng.gen_range(0..palette.len())];
    vary(rng, c, amount)
}

/// Grass and bare soil: the ground between objects.
pub struct Ground {
    grass: Rgb,
    dry: Rgb,
    dryness: f32,
    patch: f32,
    noise: Noise,
}

impl Ground {
    pub fn new(rng: &mut ChaCha8Rng, noise: Noise) -> Ground {
        const GRASS: [Rgb; 3] = [[0.33, 0.42, 0.22], [0.38, 0.46, 0.25], [0.29, 0.37, 0.20]];
        const DRY: [Rgb; 3] = [[0.52, 0.48, 0.34], [0.47, 0.42, 0.31], [0.55, 0.52, 0.40]];
        Ground {
            grass: pick(rng, &GRASS, 0.1),
            dry: pick(rng, &DRY, 0.08),
            dryness: rng.gen_range(0.0..0.7),
            patch: rng.gen_range(10.0..30.0),
            noise,
        }
    }

    #[inline]
    pub fn shade(&self, u: f32, v: f32) -> Rgb {
        let t = self.noise.fbm(u / self.patch, v / self.patch, 3);
        let dry = smoothstep(0.75 - self.dryness * 0.6, 0.95 - self.dryness * 0.5, t);
        let fine = self.noise.value(u * 1.4 + 31.0, v * 1.4);
        scale(mix(self.grass, self.dry, dry), 0.9 + 0.2 * fine)
    }
}

/// Sub-pixel sample positions: a rotated-grid pair anti-aliases edges and thin lines at half
/// the cost of 2x2 supersampling (rendering is the bulk of dataset construction time).
const SAMPLES: [(f32, f32); 2] = [(0.25, 0.75), (0.75, 0.25)];

/// Render tile content of class `class` as `size x size` RGB u8, HWC.
pub fn render(size: usize, class: SceneClass, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let theta = rng.gen::<f32>() * TAU;
    let gsd = 0.5 * rng.gen_range(0.7f32..1.4);
    let (ct, st) = (theta.cos(), theta.sin());
    let sun_az = rng.gen::<f32>() * TAU;
    let elev = rng.gen_range(30f32..65.0).to_radians();
    let (sx, sy) = (sun_az.cos(), sun_az.sin());
    let sun = [ct * sx - st * sy, st * sx + ct * sy];
    let ctx = Ctx {
        noise: Noise { seed: rng.gen() },
        sun,
        sun3: [sun[0] * elev.cos(), sun[1] * elev.cos(), elev.sin()],
        shadow_k: 1.0 / elev.tan(),
        half_extent: size as f32 * gsd * 0.5,
        shade_tint: [rng.gen_range(0.42..0.52), rng.gen_range(0.46..0.56), rng.gen_range(0.55..0.65)],
    };
    let scene: Box<dyn Scene> = match class {
        SceneClass::Residential => Box::new(Residential::new(rng, &ctx)),
        SceneClass::Road => Box::new(Road::new(rng, &ctx)),
        SceneClass::Field => Box::new(Field::new(rng, &ctx)),
        SceneClass::Water => Box::new(Water::new(rng, &ctx)),
        SceneClass::Forest => Box::new(Forest::new(rng, &ctx)),
        SceneClass::Solar => Box::new(Solar::new(rng, &ctx)),
    };
    let half = size as f32 * 0.5;
    let mut img = vec![0f32; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0f32; 3];
            for (sx, sy) in SAMPLES {
                let (px, py) = (x as f32 + sx - half, y as f32 + sy - half);
                let (u, v) = ((ct * px - st * py) * gsd, (st * px + ct * py) * gsd);
                let c = scene.shade(u, v, &ctx);
                for k in 0..3 {
                    acc[k] += c[k];
                }
            }
            let o = (y * size + x) * 3;
            for k in 0..3 {
                img[o + k] = acc[k] / SAMPLES.len() as f32;
            }
        }
    }
    sensor(&mut img, size, rng)
}

/// Camera and atmosphere: gain, tint, haze, a slight optical blur, noise, 8-bit quantisation.
fn sensor(img: &mut [f32], size: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    // Exposure, white balance and haze vary a lot between acquisitions; wide ranges keep the
    // mean colour of a tile from giving its class away.
    let gain = rng.gen_range(0.7f32..1.35);
    let tint: Rgb = [rng.gen_range(0.92..1.08), rng.gen_range(0.95..1.05), rng.gen_range(0.92..1.1)];
    let haze = if rng.gen_bool(0.4) { rng.gen_range(0.0f32..0.25) } else { 0.0 };
    let haze_c: Rgb = [0.62, 0.66, 0.72];
    let blur = rng.gen_range(0.0f32..0.35);
    let sigma = rng.gen_range(0.004f32..0.015);
    blur3(img, size, blur);
    let mut out = Vec::with_capacity(img.len());
    let normal = rand_distr::StandardNormal;
    for (i, v) in img.iter().enumerate() {
        let c = i % 3;
        let lit = v * gain * tint[c];
        let hazy = lit + (haze_c[c] - lit) * haze;
        let n: f32 = rng.sample(normal);
        out.push(((hazy + n * sigma).clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    out
}

/// Separable [w, 1-2w, w] blur with edge clamping (optics and sensor integration).
fn blur3(img: &mut [f32], size: usize, w: f32) {
    if w <= 0.0 {
        return;
    }
    let c = 1.0 - 2.0 * w;
    let mut tmp = img.to_vec();
    let idx = |y: usize, x: usize, k: usize| (y * size + x) * 3 + k;
    for y in 0..size {
        for x in 0..size {
            let (l, r) = (x.saturating_sub(1), (x + 1).min(size - 1));
            for k in 0..3 {
                tmp[idx(y, x, k)] = c * img[idx(y, x, k)] + w * (img[idx(y, l, k)] + img[idx(y, r, k)]);
            }
        }
    }
    for y in 0..size {
        let (t, b) = (y.saturating_sub(1), (y + 1).min(size - 1));
        for x in 0..size {
            for k in 0..3 {
                img[idx(y, x, k)] = c * tmp[idx(y, x, k)] + w * (tmp[idx(t, x, k)] + tmp[idx(b, x, k)]);
            }
        }
    }
}
