//! Residential: streets along one axis, lots on both sides, houses with gable or hip roofs lit
//! by the sun and casting shadows, driveways, hedges, garden trees and the odd pool.

use super::noise::{cell, ffloor, hash3};
use super::render::{pick, scale, vary, Ctx, Ground, Rgb, Scene};
use super::trees::{Grid, Trees};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const ROOFS: [Rgb; 7] = [
    [0.62, 0.33, 0.25], // terracotta
    [0.55, 0.22, 0.17], // red tile
    [0.42, 0.31, 0.26], // brown
    [0.50, 0.50, 0.52], // grey
    [0.28, 0.29, 0.32], // slate
    [0.70, 0.68, 0.64], // light
    [0.35, 0.38, 0.42], // blue-grey metal
];
const GARDEN_TREES: [Rgb; 3] = [[0.20, 0.32, 0.13], [0.25, 0.36, 0.15], [0.17, 0.27, 0.12]];

pub struct Residential {
    street_w: f32,
    walk: f32,
    depth: f32,
    lot_w: f32,
    period: f32,
    v0: f32,
    roofs: [Rgb; 3],
    asphalt: Rgb,
    concrete: Rgb,
    hedge: Rgb,
    house_h: f32,
    pool_p: f32,
    hedge_p: f32,
    ground: Ground,
    trees: Trees,
    houses: Houses,
    seed: u32,
}

/// Where a point falls in the block layout.
enum Place {
    Street,
    Walk,
    /// Lot (block, side, index) at (along the street, from the front).
    Lot {
        id: (i32, i32, i32),
        lu: f32,
        lv: f32,
    },
}

/// Houses of lots (block b0.., side 0..2, lot j0..), precomputed per tile.
#[derive(Default)]
struct Houses {
    b0: i32,
    j0: i32,
    nb: i32,
    nj: i32,
    cells: Vec<Option<House>>,
}

/// A house footprint in lot coordinates.
#[derive(Clone, Copy)]
struct House {
    a0: f32,
    a1: f32,
    b0: f32,
    b1: f32,
    ridge_u: bool,
    hip: bool,
    colour: Rgb,
}

impl Residential {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Residential {
        let mut s = Residential::layout(rng, ctx);
        s.houses = s.build_houses(ctx);
        s.trees.grid = s.trees.plant(ctx, |x, y| s.tree_mask(x, y));
        s
    }

    /// Every lot the tile can see directly or through a shadow, so that shading reads houses
    /// from a table instead of re-hashing them several times per sample.
    fn build_houses(&self, ctx: &Ctx) -> Houses {
        let reach = ctx.half_extent * std::f32::consts::SQRT_2 + self.house_h * ctx.shadow_k + 2.0;
        let b0 = ffloor((-reach - self.v0) / self.period) as i32 - 1;
        let b1 = ffloor((reach - self.v0) / self.period) as i32 + 1;
        let j0 = ffloor(-reach / self.lot_w) as i32 - 2;
        let j1 = ffloor(reach / self.lot_w) as i32 + 2;
        let (nb, nj) = (b1 - b0 + 1, j1 - j0 + 1);
        let mut cells = Vec::with_capacity((nb * 2 * nj) as usize);
        for b in b0..=b1 {
            for side in 0..2 {
                for j in j0..=j1 {
                    cells.push(self.make_house((b, side, j)));
                }
            }
        }
        Houses { b0, j0, nb, nj, cells }
    }

    /// Trees grow in gardens, not on streets or within 3 m of a house.
    fn tree_mask(&self, x: f32, y: f32) -> f32 {
        match self.place(x, y) {
            Place::Lot { id, lu, lv } => match self.house(id) {
                Some(h) if lu > h.a0 - 3.0 && lu < h.a1 + 3.0 && lv > h.b0 - 3.0 && lv < h.b1 + 3.0 => 0.0,
                _ => 1.0,
            },
            _ => 0.0,
        }
    }

    fn layout(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Residential {
        let depth = rng.gen_range(22.0..32.0);
        let street_w = rng.gen_range(6.5..9.5);
        let walk = rng.gen_range(1.2..2.2);
        let mut roofs = [[0.0; 3]; 3];
        for r in &mut roofs {
            *r = pick(rng, &ROOFS, 0.08);
        }
        let spacing = rng.gen_range(7.0..11.0);
        Residential {
            street_w,
            walk,
            depth,
            lot_w: rng.gen_range(14.0..22.0),
            period: street_w + 2.0 * walk + 2.0 * depth,
            v0: rng.gen_range(-40.0..0.0),
            roofs,
            asphalt: vary(rng, [0.36, 0.37, 0.39], 0.1),
            concrete: vary(rng, [0.66, 0.65, 0.62], 0.06),
            hedge: vary(rng, [0.16, 0.26, 0.11], 0.1),
            house_h: rng.gen_range(5.0..9.0),
            pool_p: rng.gen_range(0.0..0.3),
            hedge_p: rng.gen_range(0.0..0.6),
            ground: Ground::new(rng, ctx.noise.derive(1)),
            trees: Trees {
                spacing,
                density: rng.gen_range(0.2..0.6),
                radius: (2.0, spacing * 0.5),
                height: (5.0, 12.0),
                colours: GARDEN_TREES.to_vec(),
                conifer: rng.gen_range(0.0..0.3),
                seed: rng.gen(),
                noise: ctx.noise.derive(2),
                grid: Grid::default(),
            },
            houses: Houses::default(),
            seed: rng.gen(),
        }
    }

    fn place(&self, u: f32, v: f32) -> Place {
        let t = v - self.v0;
        let block = ffloor(t / self.period);
        let w = t - block * self.period;
        let front = self.street_w + self.walk;
        let (side, lv) = if w < self.street_w {
            return Place::Street;
        } else if w < front {
            return Place::Walk;
        } else if w < front + self.depth {
            (0, w - front)
        } else if w < self.period - self.walk {
            (1, self.period - self.walk - w)
        } else {
            return Place::Walk;
        };
        let b = block as i32;
        let off = cell(b, side, self.seed, 9) * self.lot_w;
        let j = ffloor((u - off) / self.lot_w);
        Place::Lot { id: (b, side, j as i32), lu: u - off - j * self.lot_w, lv }
    }

    fn house(&self, id: (i32, i32, i32)) -> Option<House> {
        let h = &self.houses;
        let (b, j) = (id.0 - h.b0, id.2 - h.j0);
        if b >= 0 && b < h.nb && j >= 0 && j < h.nj {
            h.cells[((b * 2 + id.1) * h.nj + j) as usize]
        } else {
            self.make_house(id)
        }
    }

    fn make_house(&self, id: (i32, i32, i32)) -> Option<House> {
        let s = hash3(id.0, id.1, self.seed);
        let r = |k: u32| cell(id.2, 0, s, k);
        if r(0) > 0.92 {
            return None;
        }
        let hw = self.lot_w * (0.45 + 0.3 * r(1));
        let setback = 3.0 + 4.0 * r(3);
        let hd = (8.0 + 6.0 * r(2)).min(self.depth - setback - 3.0);
        let a0 = (self.lot_w - hw) * (0.15 + 0.7 * r(4));
        let k = ((r(6) * 3.0) as usize).min(2);
        Some(House {
            a0,
            a1: a0 + hw,
            b0: setback,
            b1: setback + hd,
            ridge_u: (hw > hd) ^ (r(5) < 0.2),
            hip: r(7) < 0.35,
            colour: scale(self.roofs[k], 0.9 + 0.2 * r(8)),
        })
    }

    fn roof_at(&self, u: f32, v: f32) -> bool {
        match self.place(u, v) {
            Place::Lot { id, lu, lv } => {
                self.house(id).is_some_and(|h| lu >= h.a0 && lu < h.a1 && lv >= h.b0 && lv < h.b1)
            }
            _ => false,
        }
    }

    fn roof(&self, h: &House, lu: f32, lv: f32, side: i32, ctx: &Ctx) -> Rgb {
        let (cu, cv) = ((h.a0 + h.a1) * 0.5, (h.b0 + h.b1) * 0.5);
        // Along-ridge (a) and across-ridge (b) coordinates and half extents.
        let (a, b, ha, hb) = if h.ridge_u {
            (lu - cu, lv - cv, (h.a1 - h.a0) * 0.5, (h.b1 - h.b0) * 0.5)
        } else {
            (lv - cv, lu - cu, (h.b1 - h.b0) * 0.5, (h.a1 - h.a0) * 0.5)
        };
        let (da, db) = (ha - a.abs(), hb - b.abs());
        let (sa, sb) = (0.55f32, 0.83f32); // sin, cos of a ~33 degree pitch
                                           // Slope direction in (a, b); end facets of a hip roof slope along the ridge.
        let (na, nb) = if h.hip && da < db { (a.signum() * sa, 0.0) } else { (0.0, b.signum() * sa) };
        // Lot coordinates: lv grows away from the street; side 1 lots face the other way.
        let flip = if side == 1 { -1.0 } else { 1.0 };
        let (nu, nv) = if h.ridge_u { (na, nb * flip) } else { (nb, na * flip) };
        let mut c = scale(h.colour, ctx.light([nu, nv, sb]));
        let ridge = if h.hip { (db - da).abs() < 0.3 || (b.abs() < 0.3 && da >= db) } else { b.abs() < 0.35 };
        if ridge {
            c = scale(c, 1.12);
        }
        if da.min(db) < 0.3 {
            c = scale(c, 0.8);
        }
        scale(c, 0.94 + 0.12 * ctx.noise.value(lu * 2.0 + 7.0, lv * 2.0))
    }
}

impl Scene for Residential {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        if let Some(c) = self.trees.crown(u, v, ctx) {
            return c;
        }
        let base = match self.place(u, v) {
            Place::Street => scale(self.asphalt, 0.92 + 0.16 * ctx.noise.fbm(u * 0.4, v * 0.4, 2)),
            Place::Walk => scale(self.concrete, 0.95 + 0.1 * ctx.noise.value(u * 2.0, v * 2.0)),
            Place::Lot { id, lu, lv } => {
                let s = hash3(id.0, id.1, self.seed);
                let r = |k: u32| cell(id.2, 0, s, k);
                if let Some(h) = self.house(id) {
                    if lu >= h.a0 && lu < h.a1 && lv >= h.b0 && lv < h.b1 {
                        return self.roof(&h, lu, lv, id.1, ctx);
                    }
                    let left = h.a0 > self.lot_w - h.a1;
                    let (d0, d1) = if left { (h.a0 - 3.5, h.a0 - 0.5) } else { (h.a1 + 0.5, h.a1 + 3.5) };
                    if lu >= d0 && lu < d1 && lv < h.b0 + 2.0 {
                        return self.shadowed(u, v, ctx, scale(self.concrete, 0.92));
                    }
                    let pc = (h.a0 + h.a1) * 0.5;
                    let (p0, p1) = (h.b1 + 2.5, h.b1 + 6.5);
                    if r(10) < self.pool_p
                        && p1 < self.depth - 1.0
                        && (lu - pc).abs() < 3.5
                        && lv >= p0
                        && lv < p1
                    {
                        let edge = (lu - pc).abs() > 3.0 || lv < p0 + 0.5 || lv > p1 - 0.5;
                        let c = if edge { [0.85, 0.85, 0.82] } else { [0.25, 0.62, 0.72] };
                        return self.shadowed(u, v, ctx, c);
                    }
                }
                if r(11) < self.hedge_p && (lu < 0.7 || lv > self.depth - 0.7) {
                    let c = scale(self.hedge, 0.7 + 0.6 * ctx.noise.value(u * 2.5, v * 2.5));
                    return self.shadowed(u, v, ctx, c);
                }
                scale(self.ground.shade(u, v), 0.92 + 0.16 * r(12))
            }
        };
        self.shadowed(u, v, ctx, base)
    }
}

impl Residential {
    fn shadowed(&self, u: f32, v: f32, ctx: &Ctx, c: Rgb) -> Rgb {
        let by_house = [0.4, 0.8].iter().any(|&f| {
            let (su, sv) = ctx.towards_sun(u, v, self.house_h * f);
            self.roof_at(su, sv)
        });
        if by_house || self.trees.shadow(u, v, ctx) {
            ctx.shadowed(c)
        } else {
            c
        }
    }
}
