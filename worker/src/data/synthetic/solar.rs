//! Solar: rows of photovoltaic tables in a regular grid, either ground-mounted on grass or
//! gravel (with service tracks and row shadows) or on a large flat commercial roof (with a
//! parapet and rooftop units). Modules are dark blue-grey with thin light gaps.

use super::noise::{cell, ffloor, ifloor, wrap};
use super::render::{mix, pick, scale, vary, Ctx, Ground, Rgb, Scene};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const PANELS: [Rgb; 3] = [[0.11, 0.14, 0.24], [0.15, 0.17, 0.24], [0.09, 0.12, 0.19]];

pub struct Solar {
    pitch: f32,
    table: f32,
    across: f32,
    module: f32,
    gap: f32,
    block: f32,
    aisle: f32,
    v0: f32,
    u0: f32,
    panel: Rgb,
    frame: Rgb,
    between: Rgb,
    /// Half-plane (normal, offset) beyond which the array (or the roof) ends.
    edge: Option<([f32; 2], f32)>,
    roof: Option<Rgb>,
    roof_h: f32,
    ground: Ground,
    seed: u32,
}

impl Solar {
    pub fn new(rng: &mut ChaCha8Rng, ctx: &Ctx) -> Solar {
        let on_roof = rng.gen_bool(0.35);
        let module = rng.gen_range(1.0..1.15);
        let rows_across = rng.gen_range(if on_roof { 1..3 } else { 2..5 }) as f32;
        let across = rng.gen_range(1.0..1.7);
        let table = rows_across * across;
        let pitch = table + rng.gen_range(if on_roof { 0.8..1.8 } else { 1.5..5.0 });
        let edge = rng.gen_bool(0.5).then(|| {
            let a = rng.gen_range(0.0..std::f32::consts::TAU);
            ([a.cos(), a.sin()], ctx.half_extent * rng.gen_range(0.3..0.8))
        });
        let grass = Ground::new(rng, ctx.noise.derive(1));
        Solar {
            pitch,
            table,
            across,
            module,
            gap: rng.gen_range(0.08..0.16),
            block: module * rng.gen_range(12..40) as f32,
            aisle: rng.gen_range(2.5..6.0),
            v0: rng.gen_range(0.0..pitch),
            u0: rng.gen_range(0.0..20.0),
            panel: pick(rng, &PANELS, 0.12),
            frame: vary(rng, [0.62, 0.64, 0.67], 0.08),
            between: if rng.gen_bool(0.3) { vary(rng, [0.55, 0.53, 0.48], 0.08) } else { [0.0; 3] },
            edge,
            roof: on_roof.then(|| vary(rng, [0.70, 0.70, 0.68], 0.1)),
            roof_h: rng.gen_range(6.0..12.0),
            ground: grass,
            seed: rng.gen(),
        }
    }

    /// Signed distance past the array's (or roof's) edge; negative inside.
    fn outside(&self, u: f32, v: f32) -> f32 {
        self.edge.map_or(-1e9, |(n, c)| u * n[0] + v * n[1] - c)
    }

    /// Table-local coordinates if (u, v) is on a table: (along, across, row, block).
    fn table_at(&self, u: f32, v: f32) -> Option<(f32, f32, i32, i32)> {
        let margin = if self.roof.is_some() { 2.0 } else { 0.0 };
        if self.outside(u, v) > -margin {
            return None;
        }
        let t = v - self.v0;
        let row = ffloor(t / self.pitch);
        let w = t - row * self.pitch;
        let period = self.block + self.aisle;
        let bu = wrap(u - self.u0, period);
        let block = ifloor((u - self.u0) / period);
        if w >= self.table || bu >= self.block {
            return None;
        }
        // Rooftop units displace panels on some roof cells.
        if self.roof.is_some() && cell(ifloor(u / 8.0), ifloor(v / 8.0), self.seed, 3) < 0.12 {
            return None;
        }
        Some((bu, w, row as i32, block))
    }

    fn hvac(&self, u: f32, v: f32) -> bool {
        let (cx, cy) = (ffloor(u / 8.0), ffloor(v / 8.0));
        let (ix, iy) = (cx as i32, cy as i32);
        if self.roof.is_none() || self.outside(u, v) > -2.0 || cell(ix, iy, self.seed, 3) >= 0.12 {
            return false;
        }
        let (lu, lv) = (u - cx * 8.0, v - cy * 8.0);
        (2.0..5.0 + 1.5 * cell(ix, iy, self.seed, 4)).contains(&lu) && (2.5..5.5).contains(&lv)
    }
}

impl Scene for Solar {
    fn shade(&self, u: f32, v: f32, ctx: &Ctx) -> Rgb {
        if let Some((a, w, row, block)) = self.table_at(u, v) {
            let gap = wrap(a, self.module) < self.gap || wrap(w, self.across) < self.gap;
            if gap {
                return self.frame;
            }
            // Tilted modules catch the light unevenly along the slope; tables differ slightly.
            let tilt = 0.9 + 0.2 * (w / self.table);
            let table = 0.94 + 0.12 * cell(row, block, self.seed, 5);
            let fine = 0.96 + 0.08 * ctx.noise.value(u * 3.0, v * 3.0);
            return scale(self.panel, tilt * table * fine);
        }
        if self.hvac(u, v) {
            return scale([0.78, 0.79, 0.80], 0.95 + 0.05 * ctx.noise.value(u * 2.0, v * 2.0));
        }
        let out = self.outside(u, v);
        let base = match self.roof {
            Some(roof) if out < 0.0 => {
                let stain = ctx.noise.fbm(u / 6.0, v / 6.0, 3);
                let c = scale(roof, 0.88 + 0.2 * stain);
                if out > -0.6 {
                    scale(c, 1.12)
                } else {
                    c
                }
            }
            _ => {
                let g = self.ground.shade(u, v);
                if self.between[0] > 0.0 && out < 0.0 {
                    mix(g, self.between, 0.8)
                } else if self.edge.is_some() && (out - 3.5).abs() < 1.8 {
                    scale([0.6, 0.55, 0.47], 0.9 + 0.2 * ctx.noise.value(u, v))
                } else {
                    g
                }
            }
        };
        // Shadows: tables (about 1.5 m high), rooftop units, and the building itself.
        let by_table = [0.5, 1.0].iter().any(|&f| {
            let (su, sv) = ctx.towards_sun(u, v, 1.4 * f);
            self.table_at(su, sv).is_some() || self.hvac(su, sv)
        });
        let by_roof = self.roof.is_some() && out >= 0.0 && {
            let (su, sv) = ctx.towards_sun(u, v, self.roof_h);
            self.outside(su, sv) < 0.0
        };
        if by_table || by_roof {
            ctx.shadowed(base)
        } else {
            base
        }
    }
}
