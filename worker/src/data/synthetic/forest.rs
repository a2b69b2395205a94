//! Forest: a dense canopy of lit, blobby crowns (deciduous domes and darker conifer cones) over
//! a dark understorey, with clearings and sometimes a track through it.

use super::noise::Noise;
use super::render::{pick, scale, Ctx, Ground, Rgb, Scene};
use super::trees::{Grid, Trees};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const CANOPY: [Rgb; 8] = [
    [0.30, 0.40, 0.18], // sunlit deciduous
    [0.24, 0.36, 0.16],
    [0.14, 0.26, 0.10],
    [0.18, 0.30, 0.12],
    [0.12, 0.21, 0.09],
    [0.22, 0.31, 0.13],
    [0.16, 0.24, 0.12],
    [0.26, 0.33, 0.15],
];

pub struct Forest {
    trees: Trees,
    under: Rgb,
    clearing: f32,
    track: Option<([f32; 2], f32, f32)>,
    ground: Ground,
    noise: Noise,
}

impl Forest {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Forest {
        let mut s = Forest::layout(rng, ctx);
        s.trees.grid = s.trees.plant(ctx, |x, y| s.open(x, y));
        s
    }

    fn layout(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Forest {
        let spacing = rng.gen_range(4.0..8.0);
        let mut colours: Vec<Rgb> = (0..3).map(|_| pick(rng, &CANOPY, 0.12)).collect();
        if rng.gen_bool(0.25) {
            colours.push(pick(rng, &[[0.35, 0.36, 0.16], [0.40, 0.30, 0.14]], 0.1));
            // autumn or dry
        }
        let track = rng.gen_bool(0.2).then(|| {
            let a = rng.gen_range(0.0..std::f32::consts::TAU);
            ([a.cos(), a.sin()], ctx.half_extent * rng.gen_range(-0.5..0.5), rng.gen_range(1.5..3.0))
        });
        Forest {
            trees: Trees {
                spacing,
                density: rng.gen_range(0.85..1.0),
                radius: (spacing * 0.5, spacing * 0.85),
                height: (10.0, 25.0),
                colours,
                conifer: rng.gen_range(0.0..0.8),
                seed: rng.gen(),
                noise: ctx.noise.derive(2),
                grid: Grid::default(),
            },
            under: pick(rng, &[[0.07, 0.11, 0.05], [0.09, 0.10, 0.06]], 0.1),
            clearing: rng.gen_range(0.62..0.85),
            track,
            ground: Ground::new(rng, ctx.noise.derive(1)),
            noise: ctx.noise.derive(3),
        }
    }

    fn open(&self, u: f32, v: f32) -> f32 {
        let on_track = self.track.is_some_and(|(n, c, w)| (u * n[0] + v * n[1] - c).abs() < w + 2.0);
        if on_track {
            return 0.0;
        }
        1.0 - 0.9 * ((self.noise.fbm(u / 25.0, v / 25.0, 3) - self.clearing) * 10.0).clamp(0.0, 1.0)
    }
}

impl Scene for Forest {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        if let Some(c) = self.trees.crown(u, v, ctx) {
            return c;
        }
        let open = self.open(u, v);
        let base = if self.track.is_some_and(|(n, c, w)| (u * n[0] + v * n[1] - c).abs() < w) {
            scale([0.55, 0.48, 0.37], 0.9 + 0.2 * self.noise.value(u, v))
        } else if open < 0.5 {
            self.ground.shade(u, v)
        } else {
            scale(self.under, 0.8 + 0.4 * self.noise.value(u * 1.2, v * 1.2))
        };
        if self.trees.shadow(u, v, ctx) {
            ctx.shadowed(base)
        } else {
            base
        }
    }
}
