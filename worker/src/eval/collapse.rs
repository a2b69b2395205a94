//! The label-free collapse monitor: from a set of L2-normalised embeddings (the negative queue's
//! keys, or a batch's), two numbers that fall when representations collapse:
//!
//! - `std`: the per-dimension standard deviation of the embeddings, averaged over dimensions.
//!   Unit vectors spread over d dimensions give about 1/sqrt(d); a collapse to one point gives 0
//!   (SimSiam, Chen & He 2021, Fig. 2 tracks exactly this).
//! - `effective_rank`: exp of the entropy of the normalised singular values of the centred
//!   embedding matrix (Roy & Vetterli 2007): d for isotropic embeddings, ~r when they span r
//!   directions evenly, 1 for a line, and it detects dimensional collapse (Jing et al. 2022) that
//!   the std alone misses.
//!
//! Warning rule: std < 0.2 / sqrt(d) or effective rank < 10% of min(n, d).

use serde::{Deserialize, Serialize};

/// The monitor's numbers for one set of embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CollapseStats {
    pub std: f32,
    pub effective_rank: f32,
    /// Embedding dimension and number of samples they were computed from.
    pub dim: usize,
    pub samples: usize,
}

/// std below this fraction of 1/sqrt(d) counts as collapsed.
pub const STD_WARN_FRACTION: f32 = 0.2;
/// effective rank below this fraction of min(n, d) counts as collapsed.
pub const RANK_WARN_FRACTION: f32 = 0.1;

impl CollapseStats {
    /// Compute from `x` = `[n, d]` embeddings (normalised here, as the loss sees them).
    pub fn of(x: &[f32], d: usize) -> CollapseStats {
        let n = x.len().checked_div(d).unwrap_or(0);
        if n < 2 || d == 0 {
            return CollapseStats { std: 0.0, effective_rank: 0.0, dim: d, samples: n };
        }
        let z: Vec<f64> = x
            .chunks_exact(d)
            .flat_map(|r| {
                let norm = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
                r.iter().map(move |v| *v as f64 / norm)
            })
            .collect();
        let mut mean = vec![0.0f64; d];
        for r in z.chunks_exact(d) {
            mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n as f64);
        }
        // Covariance-like Gram of the centred matrix, on its smaller side: the nonzero
        // eigenvalues of Z^T Z and Z Z^T are the squared singular values of Z.
        let centred: Vec<f64> =
            z.chunks_exact(d).flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m)).collect();
        let std = (0..d)
            .map(|j| (centred.iter().skip(j).step_by(d).map(|v| v * v).sum::<f64>() / n as f64).sqrt())
            .sum::<f64>()
            / d as f64;
        let gram = if d <= n {
            let mut g = vec![0.0f64; d * d];
            for r in centred.chunks_exact(d) {
                for a in 0..d {
                    let ra = r[a];
                    for b in a..d {
                        g[a * d + b] += ra * r[b];
                    }
                }
            }
            symmetrise(&mut g, d);
            (g, d)
        } else {
            let mut g = vec![0.0f64; n * n];
            for a in 0..n {
                for b in a..n {
                    g[a * n + b] = dot(&centred[a * d..(a + 1) * d], &centred[b * d..(b + 1) * d]);
                }
            }
            symmetrise(&mut g, n);
            (g, n)
        };
        let eig = symmetric_eigenvalues(gram.0, gram.1);
        let sv: Vec<f64> = eig.iter().map(|e| e.max(0.0).sqrt()).collect();
        let total: f64 = sv.iter().sum();
        let effective_rank = if total > 0.0 {
            let h: f64 = sv.iter().filter(|&&s| s > 0.0).map(|s| s / total).map(|p| -p * p.ln()).sum();
            h.exp()
        } else {
            0.0
        };
        CollapseStats { std: std as f32, effective_rank: effective_rank as f32, dim: d, samples: n }
    }

    /// A sentence for the progress line and the report when the numbers say collapse.
    pub fn warning(&self) -> Option<String> {
        if self.samples < 2 || self.dim == 0 {
            return None;
        }
        let healthy_std = 1.0 / (self.dim as f32).sqrt();
        let max_rank = self.dim.min(self.samples) as f32;
        let low_std = self.std < STD_WARN_FRACTION * healthy_std;
        let low_rank = self.effective_rank < RANK_WARN_FRACTION * max_rank;
        (low_std || low_rank).then(|| {
            format!(
                "possible representation collapse: embedding std {:.4} (healthy ~{:.4}), effective rank \
                 {:.1} of {}; check the learning rate, the temperature and the augmentations",
                self.std, healthy_std, self.effective_rank, max_rank as usize
            )
        })
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn symmetrise(g: &mut [f64], m: usize) {
    for a in 0..m {
        for b in 0..a {
            g[a * m + b] = g[b * m + a];
        }
    }
}

/// Eigenvalues of a symmetric `m x m` matrix (row-major) by cyclic Jacobi rotations: slow for
/// large m (O(m^3) per sweep) but exact to rounding and dependency-free; the monitor calls it
/// on at most a few hundred rows.
pub fn symmetric_eigenvalues(mut a: Vec<f64>, m: usize) -> Vec<f64> {
    let off = |a: &[f64]| -> f64 {
        let mut s = 0.0;
        for p in 0..m {
            for q in p + 1..m {
                s += a[p * m + q] * a[p * m + q];
            }
        }
        s
    };
    let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..60 {
        if off(&a) <= 1e-22 * scale {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let (app, aqq) = (a[p * m + p], a[q * m + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut e: Vec<f64> = (0..m).map(|i| a[i * m + i]).collect();
    e.sort_by(|x, y| y.total_cmp(x));
    e
}

/// Collapse statistics per epoch, and whether the newest one warns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollapseMonitor {
    pub history: Vec<(u64, CollapseStats)>,
}

impl CollapseMonitor {
    /// Record `stats` for `epoch`; returns the warning to show, if any.
    pub fn observe(&mut self, epoch: u64, stats: CollapseStats) -> Option<String> {
        self.history.push((epoch, stats));
        stats.warning().map(|w| format!("epoch {epoch}: {w}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * d).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    #[test]
    fn jacobi_finds_known_eigenvalues() {
        // [[2, 1], [1, 2]] has eigenvalues 3 and 1; a diagonal matrix its diagonal.
        let e = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        assert!((e[0] - 3.0).abs() < 1e-12 && (e[1] - 1.0).abs() < 1e-12, "{e:?}");
        let e = symmetric_eigenvalues(vec![5.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0], 3);
        assert_eq!(e, vec![5.0, 2.0, -1.0]);
    }

    #[test]
    fn random_embeddings_are_healthy() {
        let d = 32;
        let s = CollapseStats::of(&gaussian(512, d, 1), d);
        let healthy = 1.0 / (d as f32).sqrt();
        assert!((s.std / healthy - 1.0).abs() < 0.1, "std {} vs {healthy}", s.std);
        assert!(s.effective_rank > 0.85 * d as f32, "rank {}", s.effective_rank);
        assert_eq!(s.warning(), None);
    }

    #[test]
    fn identical_embeddings_are_collapsed() {
        let d = 16;
        let row = gaussian(1, d, 2);
        let x: Vec<f32> = (0..64).flat_map(|_| row.clone()).collect();
        let s = CollapseStats::of(&x, d);
        assert!(s.std < 1e-6, "std {}", s.std);
        assert!(s.effective_rank < 1.5, "rank {}", s.effective_rank);
        assert!(s.warning().is_some());
    }

    #[test]
    fn rank_two_embeddings_have_effective_rank_two() {
        // Points spread evenly in a 2-D subspace of 24 dimensions (two orthogonal directions
        // with equal variance): rank ~2, under the warning line of 10% of 24 = 2.4.
        let d = 24;
        let g = gaussian(400, 2, 3);
        let x: Vec<f32> = g
            .chunks_exact(2)
            .flat_map(|c| {
                (0..d).map(move |j| {
                    if j == 3 {
                        c[0]
                    } else if j == 10 {
                        c[1]
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let s = CollapseStats::of(&x, d);
        assert!((s.effective_rank - 2.0).abs() < 0.3, "rank {}", s.effective_rank);
        assert!(s.warning().is_some_and(|w| w.contains("effective rank")));
    }

    #[test]
    fn fewer_samples_than_dimensions_use_the_small_gram() {
        let d = 64;
        let s = CollapseStats::of(&gaussian(20, d, 4), d);
        // 20 centred samples span 19 directions.
        assert!(s.effective_rank > 12.0 && s.effective_rank <= 19.5, "rank {}", s.effective_rank);
        assert_eq!(s.warning(), None);
    }
}
