//! Learning-rate and momentum schedules per iteration, with a fractional epoch (MoCo v3's
//! `adjust_learning_rate` and `adjust_moco_momentum`).

use std::f64::consts::PI;

/// lr at fractional epoch `e`: linear warmup from 0 over `warmup` epochs, then a half-cosine to 0
/// at `epochs`. `lr` is the already-scaled peak (base_lr * effective_batch / 256).
pub fn lr_at(lr: f64, e: f64, warmup: f64, epochs: f64) -> f64 {
    if e < warmup {
        lr * e / warmup
    } else if epochs <= warmup {
        lr
    } else {
        lr * 0.5 * (1.0 + (PI * (e - warmup) / (epochs - warmup)).cos())
    }
}

/// Momentum at fractional epoch `e`: m0 when `cosine` is off; otherwise
/// m(e) = 1 - 0.5 * (1 + cos(pi * e / epochs)) * (1 - m0), rising from m0 to 1.
pub fn momentum_at(m0: f64, e: f64, epochs: f64, cosine: bool) -> f64 {
    if !cosine {
        return m0;
    }
    1.0 - 0.5 * (1.0 + (PI * e / epochs).cos()) * (1.0 - m0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_boundaries() {
        assert_eq!(lr_at(1.0, 0.0, 10.0, 100.0), 0.0);
        assert!((lr_at(1.0, 5.0, 10.0, 100.0) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 10.0, 10.0, 100.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55.0, 10.0, 100.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 100.0, 10.0, 100.0).abs() < 1e-12);
        // No warmup: starts at the peak.
        assert!((lr_at(2.0, 0.0, 0.0, 10.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn momentum_boundaries() {
        assert!((momentum_at(0.99, 0.0, 100.0, true) - 0.99).abs() < 1e-12);
        assert!((momentum_at(0.99, 50.0, 100.0, true) - 0.995).abs() < 1e-12);
        assert!((momentum_at(0.99, 100.0, 100.0, true) - 1.0).abs() < 1e-12);
        assert_eq!(momentum_at(0.99, 50.0, 100.0, false), 0.99);
    }
}
