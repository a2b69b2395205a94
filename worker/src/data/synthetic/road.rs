//! Road: a straight or gently curved asphalt band with lane markings, shoulders and cars,
//! sometimes crossed by a second road, through grass with roadside trees.

use super::noise::{cell, ffloor, wrap};
use super::render::{mix, scale, vary, Ctx, Ground, Rgb, Scene};
use super::trees::{Grid, Trees};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::TAU;

const CARS: [Rgb; 6] = [
    [0.85, 0.85, 0.85],
    [0.12, 0.12, 0.13],
    [0.6, 0.61, 0.63],
    [0.6, 0.12, 0.1],
    [0.15, 0.22, 0.45],
    [0.9, 0.9, 0.88],
];
const ROADSIDE_TREES: [Rgb; 3] = [[0.18, 0.30, 0.12], [0.23, 0.33, 0.14], [0.15, 0.25, 0.11]];

pub struct Road {
    half_w: f32,
    lanes: i32,
    amp: f32,
    freq: f32,
    phase: f32,
    shoulder: f32,
    asphalt: Rgb,
    gravel: Rgb,
    centre: Rgb,
    dash: f32,
    gap: f32,
    car_p: f32,
    /// A crossing road: unit normal, offset and half width.
    cross: Option<([f32; 2], f32, f32)>,
    ground: Ground,
    trees: Trees,
    seed: u32,
}

impl Road {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Road {
        let mut s = Road::layout(rng, ctx);
        s.trees.grid = s.trees.plant(ctx, |x, y| s.tree_mask(x, y));
        s
    }

    /// Trees keep clear of both roads and their shoulders.
    fn tree_mask(&self, x: f32, y: f32) -> f32 {
        let (d, _) = self.frame(x, y);
        let off_cross = self.cross.is_none_or(|(n, c, hw)| (x * n[0] + y * n[1] - c).abs() > hw + 6.0);
        if d.abs() > self.half_w + self.shoulder + 2.5 && off_cross {
            1.0
        } else {
            0.0
        }
    }

    fn layout(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Road {
        let lanes = if rng.gen_bool(0.35) { 4 } else { 2 };
        let lane_w = rng.gen_range(3.0..3.8);
        let curved = rng.gen_bool(0.5);
        let cross = rng.gen_bool(0.3).then(|| {
            let a: f32 = rng.gen_range(60f32..120.0).to_radians();
            ([a.cos(), a.sin()], rng.gen_range(-15.0..15.0), rng.gen_range(3.0..4.5))
        });
        Road {
            half_w: lanes as f32 * lane_w * 0.5,
            lanes,
            amp: if curved { rng.gen_range(2.0..8.0) } else { 0.0 },
            freq: TAU / rng.gen_range(90.0..200.0),
            phase: rng.gen_range(0.0..TAU),
            shoulder: rng.gen_range(0.8..3.0),
            asphalt: vary(rng, [0.38, 0.39, 0.41], 0.15),
            gravel: vary(rng, [0.58, 0.55, 0.49], 0.08),
            centre: if rng.gen_bool(0.3) { [0.85, 0.75, 0.3] } else { [0.9, 0.9, 0.88] },
            dash: rng.gen_range(3.0..6.0),
            gap: rng.gen_range(5.0..10.0),
            car_p: rng.gen_range(0.0..0.35),
            cross,
            ground: Ground::new(rng, ctx.noise.derive(1)),
            trees: Trees {
                spacing: rng.gen_range(7.0..12.0),
                density: rng.gen_range(0.1..0.6),
                radius: (2.0, 4.5),
                height: (6.0, 14.0),
                colours: ROADSIDE_TREES.to_vec(),
                conifer: rng.gen_range(0.0..0.5),
                seed: rng.gen(),
                noise: ctx.noise.derive(2),
                grid: Grid::default(),
            },
            seed: rng.gen(),
        }
    }

    /// Signed distance across the main road and distance along it.
    #[inline]
    fn frame(&self, u: f32, v: f32) -> (f32, f32) {
        let a = self.freq * u + self.phase;
        let f = self.amp * a.sin();
        let fp = self.amp * self.freq * a.cos();
        ((v - f) / (1.0 + fp * fp).sqrt(), u)
    }

    fn on_cross(&self, u: f32, v: f32) -> Option<f32> {
        let (n, c, hw) = self.cross?;
        let d = u * n[0] + v * n[1] - c;
        (d.abs() < hw).then_some(d)
    }

    fn car(&self, d: f32, s: f32) -> Option<Rgb> {
        let lane_w = 2.0 * self.half_w / self.lanes as f32;
        let lane = ffloor((d + self.half_w) / lane_w);
        if lane < 0.0 || lane >= self.lanes as f32 {
            return None;
        }
        let dl = d + self.half_w - (lane + 0.5) * lane_w;
        let j = ffloor(s / 16.0);
        let (li, ji) = (lane as i32, j as i32);
        if cell(ji, li, self.seed, 0) >= self.car_p {
            return None;
        }
        let sc = j * 16.0 + 3.0 + 10.0 * cell(ji, li, self.seed, 1);
        let ds = s - sc;
        if ds.abs() > 2.3 || dl.abs() > 0.95 {
            return None;
        }
        let body = CARS[((cell(ji, li, self.seed, 2) * 6.0) as usize).min(5)];
        // Windscreen towards the direction of travel (lanes on the right side travel +s).
        let fwd = if d > 0.0 { ds } else { -ds };
        Some(if (0.5..1.3).contains(&fwd) && dl.abs() < 0.8 { [0.12, 0.13, 0.15] } else { body })
    }
}

impl Scene for Road {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        let (d, s) = self.frame(u, v);
        let cross = self.on_cross(u, v);
        if let Some(c) = self.trees.crown(u, v, ctx) {
            return c;
        }
        let on_main = d.abs() < self.half_w;
        let base = if on_main || cross.is_some() {
            let tex = 0.9 + 0.2 * ctx.noise.fbm(u * 0.35, v * 0.35, 3);
            let lane_w = 2.0 * self.half_w / self.lanes as f32;
            let in_lane = wrap(d + self.half_w, lane_w) - 0.5 * lane_w;
            let track = ((in_lane.abs() - 0.9).abs() < 0.35 && on_main) as i32 as f32;
            let mut c = scale(self.asphalt, tex * (1.0 - 0.06 * track));
            if on_main {
                if let Some(car) = self.car(d, s) {
                    return car;
                }
                let dashed = wrap(s, self.dash + self.gap) < self.dash;
                let centre =
                    if self.lanes == 4 { (d.abs() - 0.3).abs() < 0.18 } else { d.abs() < 0.22 && dashed };
                let lane_line = self.lanes == 4 && (d.abs() - self.half_w * 0.5).abs() < 0.2 && dashed;
                let edge = (d.abs() - (self.half_w - 0.5)).abs() < 0.2;
                if cross.is_none() && (centre || lane_line || edge) {
                    let paint = if centre { self.centre } else { [0.9, 0.9, 0.88] };
                    c = mix(c, paint, 0.85);
                }
            }
            c
        } else if d.abs() < self.half_w + self.shoulder {
            scale(self.gravel, 0.85 + 0.3 * ctx.noise.value(u * 1.5, v * 1.5))
        } else {
            let verge = smooth_verge(d.abs() - self.half_w - self.shoulder);
            mix(scale(self.gravel, 0.9), self.ground.shade(u, v), verge)
        };
        let car_shadow = {
            let (su, sv) = ctx.towards_sun(u, v, 1.5);
            let (sd, ss) = self.frame(su, sv);
            sd.abs() < self.half_w && self.car(sd, ss).is_some()
        };
        if car_shadow || self.trees.shadow(u, v, ctx) {
            ctx.shadowed(base)
        } else {
            base
        }
    }
}

fn smooth_verge(x: f32) -> f32 {
    (x / 1.5).clamp(0.0, 1.0)
}
