//! Tree crowns on a jittered lattice: forests (dense), gardens and roadsides (sparse).
//! Every lattice cell holds at most one tree whose properties come from hashing the cell, so a
//! pixel is shaded by looking at its cell and the eight around it.

use super::noise::{cell, Noise};
use super::render::{mix, scale, Ctx, Rgb};

pub struct Trees {
    /// Lattice spacing, metres.
    pub spacing: f32,
    /// Probability that a cell holds a tree (before the placement mask).
    pub density: f32,
    /// Crown radius range, metres.
    pub radius: (f32, f32),
    /// Tree height range, metres (for shadows).
    pub height: (f32, f32),
    /// Crown colours; each tree picks one and varies it.
    pub colours: Vec<Rgb>,
    /// Fraction of conifers (cone-shaped, darker, smaller crowns).
    pub conifer: f32,
    pub seed: u32,
    pub noise: Noise,
}

struct Tree {
    cx: f32,
    cy: f32,
    r: f32,
    h: f32,
    pick: f32,
    conifer: bool,
}

impl Trees {
    /// The tree of cell (ix, iy), if any; `mask(x, y)` in 0..1 thins trees by position.
    #[inline]
    fn tree(&self, ix: i32, iy: i32, mask: &impl Fn(f32, f32) -> f32) -> Option<Tree> {
        let s = self.seed;
        if cell(ix, iy, s, 0) >= self.density {
            return None;
        }
        let cx = (ix as f32 + 0.15 + 0.7 * cell(ix, iy, s, 1)) * self.spacing;
        let cy = (iy as f32 + 0.15 + 0.7 * cell(ix, iy, s, 2)) * self.spacing;
        if cell(ix, iy, s, 3) >= mask(cx, cy) {
            return None;
        }
        let conifer = cell(ix, iy, s, 4) < self.conifer;
        let mut r = self.radius.0 + (self.radius.1 - self.radius.0) * cell(ix, iy, s, 5);
        if conifer {
            r *= 0.75;
        }
        let h = self.height.0 + (self.height.1 - self.height.0) * cell(ix, iy, s, 6);
        Some(Tree { cx, cy, r, h, pick: cell(ix, iy, s, 7), conifer })
    }

    /// The highest crown over (u, v): (its lit colour, its height at that point).
    #[inline]
    pub fn crown(&self, u: f32, v: f32, ctx: &Ctx, mask: &impl Fn(f32, f32) -> f32) -> Option<(Rgb, f32)> {
        let (ix, iy) = ((u / self.spacing).floor() as i32, (v / self.spacing).floor() as i32);
        let mut best: Option<(f32, Tree, f32, f32)> = None;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let Some(t) = self.tree(ix + dx, iy + dy, mask) else { continue };
                let (ex, ey) = (u - t.cx, v - t.cy);
                let d2 = (ex * ex + ey * ey) / (t.r * t.r);
                if d2 >= 1.0 {
                    continue;
                }
                let z = if t.conifer { t.h * (1.0 - d2.sqrt()) } else { t.h - t.r + t.r * (1.0 - d2).sqrt() };
                if best.as_ref().is_none_or(|b| z > b.0) {
                    best = Some((z, t, ex, ey));
                }
            }
        }
        let (z, t, ex, ey) = best?;
        let (nx, ny) = (ex / t.r, ey / t.r);
        let n = if t.conifer {
            let l = (nx * nx + ny * ny + 0.5).sqrt();
            [nx / l, ny / l, 0.7 / l]
        } else {
            let nz = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
            [nx, ny, nz]
        };
        let k = ((t.pick * self.colours.len() as f32) as usize).min(self.colours.len() - 1);
        let mut c = scale(self.colours[k], 0.85 + 0.3 * (t.pick * 7.0).fract());
        if t.conifer {
            c = scale(mix(c, [0.08, 0.16, 0.10], 0.4), 0.85);
        }
        // Leaf clumps: small-scale noise, stronger towards the crown's edge.
        let clump = self.noise.value(u * 1.8, v * 1.8);
        let light = ctx.light(n) * (0.75 + 0.5 * clump);
        Some((scale(c, light), z))
    }

    /// Whether (u, v) lies in a tree's shadow (sampled at two points towards the sun).
    #[inline]
    pub fn shadow(&self, u: f32, v: f32, ctx: &Ctx, mask: &impl Fn(f32, f32) -> f32) -> bool {
        let h = 0.5 * (self.height.0 + self.height.1);
        [0.45, 0.8].iter().any(|&f| {
            let (su, sv) = ctx.towards_sun(u, v, h * f);
            self.covers(su, sv, mask)
        })
    }

    #[inline]
    fn covers(&self, u: f32, v: f32, mask: &impl Fn(f32, f32) -> f32) -> bool {
        let (ix, iy) = ((u / self.spacing).floor() as i32, (v / self.spacing).floor() as i32);
        for dy in -1..=1 {
            for dx in -1..=1 {
                if let Some(t) = self.tree(ix + dx, iy + dy, mask) {
                    let (ex, ey) = (u - t.cx, v - t.cy);
                    if ex * ex + ey * ey < t.r * t.r * 0.8 {
                        return true;
                    }
                }
            }
        }
        false
    }
}
