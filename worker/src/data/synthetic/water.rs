//! Water: a lake, river or sea surface with depth variation, ripples and sun glints, and in
//! some tiles a shoreline with a beach and vegetation covering a minority of the tile.

use super::noise::Noise;
use super::render::{mix, pick, scale, smoothstep, Ctx, Ground, Rgb, Scene};
use super::trees::{Grid, Trees};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::TAU;

const DEEP: [Rgb; 7] = [
    [0.08, 0.16, 0.28], // deep blue
    [0.10, 0.24, 0.30], // teal
    [0.12, 0.22, 0.20], // green lake
    [0.17, 0.22, 0.24], // grey
    [0.16, 0.20, 0.12], // murky green
    [0.26, 0.26, 0.20], // silty brown
    [0.20, 0.35, 0.38], // turquoise
];
const SHORE_TREES: [Rgb; 2] = [[0.17, 0.28, 0.12], [0.22, 0.32, 0.14]];

struct Shore {
    n: [f32; 2],
    c: f32,
    wobble: f32,
    beach: f32,
}

pub struct Water {
    deep: Rgb,
    shallow: Rgb,
    waves: [([f32; 2], f32); 2],
    amp: f32,
    warp: f32,
    glint: f32,
    shore: Option<Shore>,
    sand: Rgb,
    ground: Ground,
    trees: Trees,
    noise: Noise,
}

impl Water {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Water {
        let mut s = Water::layout(rng, ctx);
        let beach = s.shore.as_ref().map_or(0.0, |s| s.beach);
        s.trees.grid = s.trees.plant(ctx, |x, y| if s.inland(x, y) > beach + 3.0 { 1.0 } else { 0.0 });
        s
    }

    fn layout(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Water {
        let deep = pick(rng, &DEEP, 0.15);
        let shallow = mix(deep, [0.35, 0.45, 0.42], rng.gen_range(0.2..0.5));
        let a = rng.gen_range(0.0..TAU);
        let b = a + rng.gen_range(-0.6..0.6);
        let shore = rng.gen_bool(0.5).then(|| {
            let t = rng.gen_range(0.0..TAU);
            Shore {
                n: [t.cos(), t.sin()],
                c: ctx.half_extent * rng.gen_range(0.25..0.7),
                wobble: rng.gen_range(2.0..8.0),
                beach: if rng.gen_bool(0.6) { rng.gen_range(1.0..5.0) } else { 0.0 },
            }
        });
        Water {
            deep,
            shallow,
            waves: [
                ([a.cos(), a.sin()], TAU / rng.gen_range(2.0..6.0)),
                ([b.cos(), b.sin()], TAU / rng.gen_range(3.0..9.0)),
            ],
            amp: rng.gen_range(0.03..0.12),
            warp: rng.gen_range(1.0..4.0),
            glint: rng.gen_range(0.0..0.5),
            shore,
            sand: pick(rng, &[[0.76, 0.70, 0.55], [0.62, 0.56, 0.45]], 0.08),
            ground: Ground::new(rng, ctx.noise.derive(1)),
            trees: Trees {
                spacing: rng.gen_range(5.0..9.0),
                density: rng.gen_range(0.3..0.9),
                radius: (2.0, 4.5),
                height: (6.0, 15.0),
                colours: SHORE_TREES.to_vec(),
                conifer: rng.gen_range(0.0..0.4),
                seed: rng.gen(),
                noise: ctx.noise.derive(2),
                grid: Grid::default(),
            },
            noise: ctx.noise.derive(3),
        }
    }

    /// Signed distance inland from the waterline (negative on water).
    fn inland(&self, u: f32, v: f32) -> f32 {
        match &self.shore {
            Some(s) => {
                let wob = (self.noise.fbm(u / 15.0, v / 15.0, 3) - 0.5) * 2.0 * s.wobble;
                u * s.n[0] + v * s.n[1] - s.c + wob
            }
            None => -1e9,
        }
    }
}

impl Scene for Water {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        let d = self.inland(u, v);
        let beach = self.shore.as_ref().map_or(0.0, |s| s.beach);
        if d >= 0.0 {
            if let Some(c) = self.trees.crown(u, v, ctx) {
                return c;
            }
            let c = if d < beach {
                // Wet sand is darker at the waterline.
                scale(
                    self.sand,
                    (0.8 + 0.2 * smoothstep(0.0, 1.5, d)) * (0.95 + 0.1 * self.noise.value(u * 2.0, v * 2.0)),
                )
            } else {
                self.ground.shade(u, v)
            };
            return if self.trees.shadow(u, v, ctx) { ctx.shadowed(c) } else { c };
        }
        let depth = self.noise.fbm(u / 35.0, v / 35.0, 3);
        let shoal = 1.0 - smoothstep(0.0, 8.0, -d);
        let mut c = mix(self.deep, self.shallow, (0.4 * depth + 0.8 * shoal).min(1.0));
        let warp = self.warp * self.noise.fbm(u / 6.0, v / 6.0, 2);
        let [(d1, k1), (d2, k2)] = self.waves;
        let w = 0.6 * (k1 * (u * d1[0] + v * d1[1]) + warp).sin()
            + 0.4 * (k2 * (u * d2[0] + v * d2[1]) - warp).sin();
        c = scale(c, 1.0 + self.amp * w);
        if w > 0.8 && self.noise.value(u * 3.0, v * 3.0) > 0.75 {
            c = mix(c, [0.95, 0.95, 0.92], self.glint);
        }
        if self.trees.shadow(u, v, ctx) {
            ctx.shadowed(c)
        } else {
            c
        }
    }
}
