//! Tree crowns on a jittered lattice: forests (dense), gardens and roadsides (sparse).
//! Every lattice cell holds at most one tree whose properties come from hashing the cell. A
//! scene "plants" its trees once per tile (`Trees::plant`, applying its placement mask) into a
//! grid that covers the tile and its shadow reach, so shading a pixel reads 3x3 cells instead
//! of re-evaluating the mask (noise, layout) for each of them.

use super::noise::{cell, ifloor, wrap, Noise};
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
    /// Planted trees; empty until `plant`.
    pub grid: Grid,
}

#[derive(Clone, Copy)]
pub struct Tree {
    cx: f32,
    cy: f32,
    r: f32,
    pick: f32,
    conifer: bool,
    h: f32,
}

/// Lattice cells [ix0, ix0 + w) x [iy0, iy0 + h); cells outside hold no tree.
#[derive(Default)]
pub struct Grid {
    ix0: i32,
    iy0: i32,
    w: i32,
    h: i32,
    cells: Vec<Option<Tree>>,
}

impl Trees {
    /// The trees of every cell the tile can see, directly or through a shadow, thinned by
    /// `mask(x, y)` in 0..1 at each tree's position. Store the result in `self.grid`.
    pub fn plant(&self, ctx: &Ctx, mask: impl Fn(f32, f32) -> f32) -> Grid {
        let reach =
            ctx.half_extent * std::f32::consts::SQRT_2 + self.height.1 * ctx.shadow_k + 2.0 * self.spacing;
        let (lo, hi) = (((-reach) / self.spacing).floor() as i32, (reach / self.spacing).ceil() as i32);
        let n = hi - lo + 1;
        let mut cells = Vec::with_capacity((n * n) as usize);
        for iy in lo..=hi {
            for ix in lo..=hi {
                cells.push(self.tree(ix, iy, &mask));
            }
        }
        Grid { ix0: lo, iy0: lo, w: n, h: n, cells }
    }

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

    #[inline]
    fn at(&self, ix: i32, iy: i32) -> Option<&Tree> {
        let g = &self.grid;
        let (x, y) = (ix - g.ix0, iy - g.iy0);
        if x < 0 || y < 0 || x >= g.w || y >= g.h {
            return None;
        }
        g.cells[(y * g.w + x) as usize].as_ref()
    }

    /// The highest crown over (u, v): its lit colour.
    #[inline]
    pub fn crown(&self, u: f32, v: f32, ctx: &Ctx) -> Option<Rgb> {
        let (ix, iy) = (ifloor(u / self.spacing), ifloor(v / self.spacing));
        let mut best: Option<(f32, &Tree, f32, f32)> = None;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let Some(t) = self.at(ix + dx, iy + dy) else { continue };
                let (ex, ey) = (u - t.cx, v - t.cy);
                let d2 = (ex * ex + ey * ey) / (t.r * t.r);
                if d2 >= 1.0 {
                    continue;
                }
                let z = if t.conifer { t.h * (1.0 - d2.sqrt()) } else { t.h - t.r + t.r * (1.0 - d2).sqrt() };
                if best.is_none_or(|b| z > b.0) {
                    best = Some((z, t, ex, ey));
                }
            }
        }
        let (_, t, ex, ey) = best?;
        let (nx, ny) = (ex / t.r, ey / t.r);
        let n = if t.conifer {
            let l = (nx * nx + ny * ny + 0.5).sqrt();
            [nx / l, ny / l, 0.7 / l]
        } else {
            [nx, ny, (1.0 - nx * nx - ny * ny).max(0.0).sqrt()]
        };
        let k = ((t.pick * self.colours.len() as f32) as usize).min(self.colours.len() - 1);
        let mut c = scale(self.colours[k], 0.85 + 0.3 * wrap(t.pick * 7.0, 1.0));
        if t.conifer {
            c = scale(mix(c, [0.08, 0.16, 0.10], 0.4), 0.85);
        }
        // Leaf clumps.
        let clump = self.noise.value(u * 1.8, v * 1.8);
        Some(scale(c, ctx.light(n) * (0.75 + 0.5 * clump)))
    }

    /// Whether (u, v) lies in a tree's shadow (sampled at two points towards the sun).
    #[inline]
    pub fn shadow(&self, u: f32, v: f32, ctx: &Ctx) -> bool {
        if self.grid.cells.is_empty() {
            return false;
        }
        let h = 0.5 * (self.height.0 + self.height.1);
        [0.45, 0.8].iter().any(|&f| {
            let (su, sv) = ctx.towards_sun(u, v, h * f);
            self.covers(su, sv)
        })
    }

    #[inline]
    fn covers(&self, u: f32, v: f32) -> bool {
        let (ix, iy) = (ifloor(u / self.spacing), ifloor(v / self.spacing));
        for dy in -1..=1 {
            for dx in -1..=1 {
                if let Some(t) = self.at(ix + dx, iy + dy) {
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
