//! What every case uses: the two backends, seeded inputs, the comparison that makes a row.

use super::report::Row;
use crate::backend::Backend;
use half::f16;

/// A tolerance on `max_rel` (see [`Row`]) for each activation precision of the candidate.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub fp32: f64,
    pub fp16: f64,
}

impl Tol {
    pub const fn new(fp32: f64, fp16: f64) -> Self {
        Tol { fp32, fp16 }
    }
    /// The same tolerance in both precisions (outputs in fp32 computed from identical inputs).
    pub const fn both(t: f64) -> Self {
        Tol { fp32: t, fp16: t }
    }
}

/// Bit-exact (selections, copies, single IEEE operations on identical inputs).
pub const EXACT: Tol = Tol::both(0.0);

/// Deterministic inputs: SplitMix64 with Box-Muller normals (no dependency, same on every
/// machine, so a failure is reproducible from the seed).
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `len` values from N(mean, std^2), full fp32 precision (master weights, statistics).
    pub fn normals(&mut self, len: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..len).map(|_| mean + std * self.normal()).collect()
    }

    /// As [`Gen::normals`], rounded to fp16: inputs that become activation buffers, so both
    /// backends start from the same values whatever their activation precision.
    pub fn acts(&mut self, len: usize, mean: f32, std: f32) -> Vec<f32> {
        round_f16(&self.normals(len, mean, std))
    }
}

/// Each value rounded to the nearest fp16 and back.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// The metric of [`Row`] over reference `r` and candidate `c`: (max_abs, max_rel, note).
pub fn errors(r: &[f64], c: &[f64]) -> (f64, f64, String) {
    if r.len() != c.len() {
        return (f64::INFINITY, f64::INFINITY, format!("length {} vs reference {}", c.len(), r.len()));
    }
    let finite: Vec<f64> = r.iter().copied().filter(|v| v.is_finite()).collect();
    let rms = if finite.is_empty() {
        0.0
    } else {
        (finite.iter().map(|v| v * v).sum::<f64>() / finite.len() as f64).sqrt()
    };
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let mut note = String::new();
    for (i, (&rv, &cv)) in r.iter().zip(c).enumerate() {
        if !rv.is_finite() || !cv.is_finite() {
            let same = (rv.is_nan() && cv.is_nan()) || rv == cv;
            if !same {
                max_abs = f64::INFINITY;
                max_rel = f64::INFINITY;
                if note.is_empty() {
                    note = format!("element {i}: {cv} vs reference {rv}");
                }
            }
            continue;
        }
        let d = (cv - rv).abs();
        let den = rv.abs().max(rms);
        let rel = if d == 0.0 {
            0.0
        } else if den > 0.0 {
            d / den
        } else {
            f64::INFINITY
        };
        if rel > max_rel && note.is_empty() && rel.is_infinite() {
            note = format!("element {i}: {cv} vs reference 0 in an all-zero output");
        }
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(rel);
    }
    (max_abs, max_rel, note)
}

/// The two backends under comparison and the rows so far.
pub struct Cx<'r, A: Backend, B: Backend> {
    pub a: &'r A,
    pub b: &'r B,
    /// The candidate keeps activations in fp16 (AMP): pick the `fp16` tolerances.
    pub fp16: bool,
    /// ResNet-sized shapes (GPU self-test) instead of small ones (CPU tests).
    pub full: bool,
    pub gen: Gen,
    pub rows: Vec<Row>,
}

impl<'r, A: Backend, B: Backend> Cx<'r, A, B> {
    pub fn new(a: &'r A, b: &'r B, fp16: bool, full: bool, seed: u64) -> Self {
        Cx { a, b, fp16, full, gen: Gen::new(seed), rows: Vec::new() }
    }

    pub fn precision(&self) -> &'static str {
        if self.fp16 {
            "fp16"
        } else {
            "fp32"
        }
    }

    /// Small (CPU test) or full (GPU self-test) size.
    pub fn size(&self, small: usize, full: usize) -> usize {
        if self.full {
            full
        } else {
            small
        }
    }

    /// Compares f32 outputs and records the row.
    pub fn compare(&mut self, op: impl Into<String>, tol: Tol, reference: &[f32], candidate: &[f32]) {
        let r: Vec<f64> = reference.iter().map(|&v| v as f64).collect();
        let c: Vec<f64> = candidate.iter().map(|&v| v as f64).collect();
        self.compare64(op, tol, &r, &c);
    }

    /// Compares f64 values (host results: sums of squares, flags) and records the row.
    pub fn compare64(&mut self, op: impl Into<String>, tol: Tol, reference: &[f64], candidate: &[f64]) {
        let tol = if self.fp16 { tol.fp16 } else { tol.fp32 };
        let (max_abs, max_rel, note) = errors(reference, candidate);
        let pass = max_rel <= tol;
        self.rows.push(Row { precision: self.precision(), op: op.into(), max_abs, max_rel, tol, pass, note });
    }
}

/// A view of the whole buffer.
pub fn full<X: Backend>(b: &X::Buf) -> X::View<'_> {
    X::view(b, 0..X::buf_len(b))
}

/// A writable view of the whole buffer.
pub fn full_mut<X: Backend>(b: &mut X::Buf) -> X::ViewMut<'_> {
    let len = X::buf_len(b);
    X::view_mut(b, 0..len)
}

/// Runs the generic function `$f(backend, args...)` on both backends:
/// `let (r, c) = both!(cx, f(&x, &w));`, each result `?`-propagated.
macro_rules! both {
    ($cx:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        ($f($cx.a, $($arg),*)?, $f($cx.b, $($arg),*)?)
    };
}
pub(crate) use both;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_scales_by_the_larger_of_element_and_rms() {
        let (abs, rel, note) = errors(&[100.0, 0.0, -100.0], &[100.0, 1.0, -100.0]);
        assert_eq!(abs, 1.0);
        // rms = sqrt(20000 / 3) = 81.6: the error at the zero element counts as 1 / 81.6.
        assert!((rel - 1.0 / (20000.0f64 / 3.0).sqrt()).abs() < 1e-12, "{rel}");
        assert!(note.is_empty());
    }

    #[test]
    fn non_finite_values_must_match_exactly() {
        let inf = f64::INFINITY;
        assert_eq!(errors(&[inf, f64::NAN, -inf], &[inf, f64::NAN, -inf]).1, 0.0);
        let (_, rel, note) = errors(&[inf, 1.0], &[1.0, 1.0]);
        assert!(rel.is_infinite() && note.contains("element 0"), "{note}");
        assert!(errors(&[-inf], &[inf]).1.is_infinite());
        assert!(errors(&[1.0], &[1.0, 2.0]).1.is_infinite(), "a length mismatch fails");
    }

    #[test]
    fn the_generator_is_seeded_and_roughly_standard_normal() {
        let a = Gen::new(7).normals(20_000, 0.0, 1.0);
        assert_eq!(a, Gen::new(7).normals(20_000, 0.0, 1.0));
        assert_ne!(a, Gen::new(8).normals(20_000, 0.0, 1.0));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let r = Gen::new(1).acts(100, 0.0, 3.0);
        assert_eq!(r, round_f16(&r), "acts are fp16-representable");
    }
}
