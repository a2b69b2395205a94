//! Dynamic loss scaling (MOCO.md, "Mixed precision"): start at 2^16, double after 2000 clean
//! steps, halve and skip the step on inf/NaN. The verdict it is given must already be the same
//! on every rank.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    pub scale: f32,
    /// Consecutive clean steps since the last change.
    pub clean_steps: u32,
    pub growth_interval: u32,
    pub enabled: bool,
}

/// What the scaler decided for one optimiser step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleVerdict {
    /// Gradients are finite: apply the step.
    Apply,
    /// Gradients overflowed: skip the step; the scale was halved.
    Skip,
}

impl LossScaler {
    pub const INIT: f32 = 65536.0;

    pub fn new(enabled: bool) -> Self {
        LossScaler {
            scale: if enabled { Self::INIT } else { 1.0 },
            clean_steps: 0,
            growth_interval: 2000,
            enabled,
        }
    }

    /// The factor the loss (its gradient) is multiplied by.
    pub fn scale(&self) -> f32 {
        if self.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// Record the global inf/NaN verdict of a step and update the scale.
    pub fn update(&mut self, found_nonfinite: bool) -> ScaleVerdict {
        if !self.enabled {
            return if found_nonfinite { ScaleVerdict::Skip } else { ScaleVerdict::Apply };
        }
        if found_nonfinite {
            self.scale = (self.scale * 0.5).max(f32::MIN_POSITIVE);
            self.clean_steps = 0;
            ScaleVerdict::Skip
        } else {
            self.clean_steps += 1;
            if self.clean_steps >= self.growth_interval {
                // Stay finite in fp32 (PyTorch's GradScaler does the same implicitly).
                if self.scale * 2.0 < f32::MAX {
                    self.scale *= 2.0;
                }
                self.clean_steps = 0;
            }
            ScaleVerdict::Apply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_backoff_and_growth() {
        let mut s = LossScaler::new(true);
        assert_eq!(s.scale(), 65536.0);
        assert_eq!(s.update(true), ScaleVerdict::Skip);
        assert_eq!(s.scale(), 32768.0);
        for _ in 0..1999 {
            assert_eq!(s.update(false), ScaleVerdict::Apply);
        }
        assert_eq!(s.scale(), 32768.0);
        s.update(false);
        assert_eq!(s.scale(), 65536.0);
        // An overflow resets the clean-step count.
        for _ in 0..1000 {
            s.update(false);
        }
        s.update(true);
        for _ in 0..1999 {
            s.update(false);
        }
        assert_eq!(s.scale(), 32768.0);
    }

    #[test]
    fn disabled_scaler_is_identity_but_still_skips_nonfinite() {
        let mut s = LossScaler::new(false);
        assert_eq!(s.scale(), 1.0);
        assert_eq!(s.update(true), ScaleVerdict::Skip);
        assert_eq!(s.scale(), 1.0);
    }
}
