//! The linear probe: multinomial logistic regression on frozen features, fitted with L-BFGS
//! (what scikit-learn's `LogisticRegression` does by default) on standardised features with an
//! L2 penalty on the weights. Full batch, deterministic: the same features give the same
//! classifier on every run.
//!
//! Objective: mean over samples of cross-entropy(softmax(W x + b), y) + lambda/2 * |W|^2.

use moco_kernels::cpu::linear::{linear_bwd_weight, linear_fwd};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOptions {
    /// L2 penalty on the weights (features are standardised, so one value suits most sizes).
    pub l2: f64,
    pub max_iters: usize,
    /// Stop when the largest gradient component falls below this.
    pub tol: f64,
    /// L-BFGS history length.
    pub memory: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { l2: 1e-3, max_iters: 300, tol: 1e-5, memory: 10 }
    }
}

/// A fitted probe: standardisation, weights `[classes, d]` and biases.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub d: usize,
    pub classes: usize,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    /// Iterations L-BFGS ran and the final objective.
    pub iters: usize,
    pub loss: f64,
}

fn standardise(x: &[f32], d: usize, mean: &[f32], inv_std: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    for r in y.chunks_exact_mut(d) {
        for ((v, m), s) in r.iter_mut().zip(mean).zip(inv_std) {
            *v = (*v - m) * s;
        }
    }
    y
}

/// Objective and gradient at `theta` = (W flat, b).
struct Problem<'a> {
    x: &'a [f32],
    y: &'a [u32],
    n: usize,
    d: usize,
    c: usize,
    l2: f64,
}

impl Problem<'_> {
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d, c) = (self.n, self.d, self.c);
        let w: Vec<f32> = theta[..c * d].iter().map(|&v| v as f32).collect();
        let b = &theta[c * d..];
        let mut logits = vec![0.0f32; n * c];
        linear_fwd(n, d, c, self.x, &w, &mut logits);
        let mut loss = 0.0f64;
        let mut g = vec![0.0f32; n * c];
        let mut gb = vec![0.0f64; c];
        for i in 0..n {
            let row: Vec<f64> = (0..c).map(|k| logits[i * c + k] as f64 + b[k]).collect();
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            let lse = mx + sum.ln();
            let yi = self.y[i] as usize;
            loss += lse - row[yi];
            for k in 0..c {
                let p = (row[k] - lse).exp() - if k == yi { 1.0 } else { 0.0 };
                g[i * c + k] = (p / n as f64) as f32;
                gb[k] += p / n as f64;
            }
        }
        let mut gw = vec![0.0f32; c * d];
        linear_bwd_weight(n, d, c, self.x, &g, &mut gw);
        let mut reg = 0.0;
        for (j, gj) in grad[..c * d].iter_mut().enumerate() {
            reg += theta[j] * theta[j];
            *gj = gw[j] as f64 + self.l2 * theta[j];
        }
        grad[c * d..].copy_from_slice(&gb);
        loss / n as f64 + 0.5 * self.l2 * reg
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fit a probe on `x` (`[n, d]`) with labels `y` in 0..classes.
pub fn fit(x: &[f32], y: &[u32], d: usize, classes: usize, opts: &ProbeOptions) -> Probe {
    let n = y.len();
    assert_eq!(x.len(), n * d, "features must be [n, d]");
    let mut mean = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for r in x.chunks_exact(d) {
        for j in 0..d {
            mean[j] += r[j] as f64;
            sq[j] += (r[j] as f64).powi(2);
        }
    }
    let nf = n.max(1) as f64;
    let inv_std: Vec<f32> = (0..d)
        .map(|j| {
            let var = (sq[j] / nf - (mean[j] / nf).powi(2)).max(0.0);
            if var > 1e-12 {
                (1.0 / var.sqrt()) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mean: Vec<f32> = mean.iter().map(|m| (m / nf) as f32).collect();
    let xs = standardise(x, d, &mean, &inv_std);
    let p = Problem { x: &xs, y, n, d, c: classes, l2: opts.l2 };

    let dim = classes * d + classes;
    let mut theta = vec![0.0f64; dim];
    let mut grad = vec![0.0f64; dim];
    let mut f = p.eval(&theta, &mut grad);
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new(); // (s, y, 1 / y.s)
    let mut iters = 0;
    while iters < opts.max_iters && grad.iter().fold(0.0f64, |m, g| m.max(g.abs())) > opts.tol {
        iters += 1;
        // Two-loop recursion: direction = -H grad.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = hist.last().map(|(s, yv, _)| dot(s, yv) / dot(yv, yv)).unwrap_or(1.0 / (1.0 + f.abs()));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bcoef = rho * dot(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - bcoef) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&grad, &dir);
        if slope >= 0.0 {
            hist.clear(); // not a descent direction: restart from steepest descent
            continue;
        }
        // Backtracking line search (Armijo).
        let mut step = 1.0;
        let mut new_grad = vec![0.0f64; dim];
        let mut accepted = None;
        for _ in 0..30 {
            let cand: Vec<f64> = theta.iter().zip(&dir).map(|(t, dd)| t + step * dd).collect();
            let fc = p.eval(&cand, &mut new_grad);
            if fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc)) = accepted else { break };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if hist.len() == opts.memory {
                hist.remove(0);
            }
            hist.push((s, yv, 1.0 / sy));
        }
        let done = (f - fc).abs() <= 1e-10 * f.abs().max(1.0);
        theta = cand;
        grad.copy_from_slice(&new_grad);
        f = fc;
        if done {
            break;
        }
    }
    Probe {
        d,
        classes,
        mean,
        inv_std,
        w: theta[..classes * d].iter().map(|&v| v as f32).collect(),
        b: theta[classes * d..].iter().map(|&v| v as f32).collect(),
        iters,
        loss: f,
    }
}

impl Probe {
    /// Predicted class of each row of `x` (`[n, d]`).
    pub fn predict(&self, x: &[f32]) -> Vec<u32> {
        let n = x.len() / self.d.max(1);
        let xs = standardise(x, self.d, &self.mean, &self.inv_std);
        let mut logits = vec![0.0f32; n * self.classes];
        linear_fwd(n, self.d, self.classes, &xs, &self.w, &mut logits);
        logits
            .chunks_exact(self.classes)
            .map(|r| {
                (0..self.classes)
                    .fold(0, |best, k| if r[k] + self.b[k] > r[best] + self.b[best] { k } else { best })
                    as u32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn blobs(n: usize, d: usize, classes: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = (i % classes) as u32;
            for j in 0..d {
                let centre = if j % classes == c as usize { 2.0 } else { 0.0 };
                x.push(centre + spread * rng.gen_range(-1.0f32..1.0));
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn separates_blobs_and_converges() {
        let (x, y) = blobs(300, 12, 4, 1.0, 1);
        let p = fit(&x, &y, 12, 4, &ProbeOptions::default());
        let (xt, yt) = blobs(200, 12, 4, 1.0, 2);
        let acc = crate::eval::knn::accuracy(&p.predict(&xt), &yt);
        assert!(acc > 0.97, "held-out accuracy {acc}");
        assert!(p.iters < 300, "L-BFGS should converge well before the cap ({} iters)", p.iters);
        // Deterministic.
        assert_eq!(p, fit(&x, &y, 12, 4, &ProbeOptions::default()));
    }

    #[test]
    fn pure_noise_gives_chance_accuracy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..400 * 8).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let y: Vec<u32> = (0..400).map(|i| (i % 4) as u32).collect();
        let p = fit(&x[..200 * 8], &y[..200], 8, 4, &ProbeOptions::default());
        let acc = crate::eval::knn::accuracy(&p.predict(&x[200 * 8..]), &y[200..]);
        assert!((0.1..0.45).contains(&acc), "noise accuracy {acc} should be near 0.25");
    }
}
