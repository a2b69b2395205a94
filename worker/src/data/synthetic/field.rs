//! Field: parcels of crops in parallel rows (greens, yellows, browns), split by straight
//! boundaries that carry hedgerows or dirt tracks, with tramlines and patchy growth.

use super::noise::wrap;
use super::render::{mix, pick, scale, Ctx, Rgb, Scene};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

const CROPS: [Rgb; 8] = [
    [0.20, 0.32, 0.12], // dense dark crop
    [0.30, 0.44, 0.17], // green crop
    [0.44, 0.54, 0.26], // young green
    [0.72, 0.64, 0.40], // ripe wheat
    [0.66, 0.60, 0.45], // stubble
    [0.44, 0.35, 0.26], // ploughed soil
    [0.34, 0.28, 0.21], // dark soil
    [0.78, 0.74, 0.32], // rapeseed
];

struct Parcel {
    /// Unit vector across the rows.
    dir: [f32; 2],
    period: f32,
    colour: Rgb,
    furrow: Rgb,
    tram: f32,
}

pub struct Field {
    lines: Vec<([f32; 2], f32)>,
    parcels: Vec<Parcel>,
    /// Boundary: 0 none, 1 hedgerow, 2 dirt track.
    border: u8,
    border_w: f32,
}

impl Field {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Field {
        let n_lines = rng.gen_range(0..3);
        let base = rng.gen_range(0.0..PI);
        let mut lines = Vec::new();
        for i in 0..n_lines {
            // Field boundaries tend to be near-perpendicular to each other.
            let a = base + i as f32 * PI * 0.5 + rng.gen_range(-0.3..0.3);
            lines.push(([a.cos(), a.sin()], ctx.half_extent * rng.gen_range(-0.6..0.6)));
        }
        let parcels = (0..1 << n_lines)
            .map(|_| {
                let a = if rng.gen_bool(0.7) {
                    base + rng.gen_range(0..2) as f32 * PI * 0.5
                } else {
                    rng.gen_range(0.0..TAU)
                };
                let colour = pick(rng, &CROPS, 0.08);
                let furrow = mix(scale(colour, 0.7), [0.38, 0.31, 0.24], rng.gen_range(0.0..0.6));
                Parcel {
                    dir: [a.cos(), a.sin()],
                    period: rng.gen_range(1.2..4.0),
                    colour,
                    furrow,
                    tram: if rng.gen_bool(0.5) { rng.gen_range(12.0..24.0) } else { 0.0 },
                }
            })
            .collect();
        Field { lines, parcels, border: rng.gen_range(0..3), border_w: rng.gen_range(1.5..4.0) }
    }
}

impl Scene for Field {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        let mut id = 0;
        let mut near = f32::MAX;
        for (i, (n, c)) in self.lines.iter().enumerate() {
            let d = u * n[0] + v * n[1] - c;
            if d > 0.0 {
                id |= 1 << i;
            }
            near = near.min(d.abs());
        }
        if self.border > 0 && near < self.border_w * 0.5 {
            let t = ctx.noise.value(u * 1.5, v * 1.5);
            return if self.border == 1 {
                scale([0.16, 0.25, 0.11], 0.6 + 0.7 * t)
            } else {
                let rut = ((near - self.border_w * 0.25).abs() < 0.3) as i32 as f32;
                scale([0.62, 0.55, 0.44], (0.9 + 0.15 * t) * (1.0 - 0.12 * rut))
            };
        }
        let p = &self.parcels[id];
        let across = u * p.dir[0] + v * p.dir[1];
        let t = 0.5 + 0.5 * (TAU * across / p.period).sin();
        let mut c = mix(p.colour, p.furrow, t * t);
        if p.tram > 0.0 {
            let q = wrap(across, p.tram);
            if q < 0.45 || (q - 1.9).abs() < 0.22 {
                c = mix(c, [0.55, 0.47, 0.36], 0.6);
            }
        }
        let patch = ctx.noise.fbm(u / 25.0 + 3.0, v / 25.0, 3);
        let grain = ctx.noise.value(u * 1.3 + 11.0, v * 1.3);
        scale(c, (0.8 + 0.35 * patch) * (0.94 + 0.12 * grain))
    }
}
