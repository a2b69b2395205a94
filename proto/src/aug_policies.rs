//! Named augmentation policies (`--aug NAME`): each is a complete set of the `[aug]` keys that
//! replaces the preset's, before the `--config` file and the flags, which can still change any
//! key. They exist because the right amount of colour distortion depends on the data: MoCo v3's
//! recipe was tuned on ImageNet photos, and on small, nearly single-band tiles its colour jitter,
//! grayscale, solarize and blur can remove most of what tells two tiles apart
//! (results/2026-12-05-aug-policies.md measures it; the README says which to start with).

use crate::config::AugConfig;
use crate::error::ProtoError;

/// A policy: its name, one line on what it is and when to use it, its keys.
pub struct AugPolicy {
    pub name: &'static str,
    pub about: &'static str,
    build: fn() -> AugConfig,
}

impl AugPolicy {
    pub fn config(&self) -> AugConfig {
        (self.build)()
    }
}

/// The `paper` preset's policy.
pub const POLICY_MOCO_V3: AugPolicy = AugPolicy {
    name: "moco-v3",
    about: "MoCo v3's ImageNet recipe (BYOL's): crop, flip, strong colour jitter, grayscale, blur, \
            solarize; no vertical flips or rotations (the paper preset's)",
    build: moco_v3,
};

pub const POLICIES: &[AugPolicy] = &[
    POLICY_MOCO_V3,
    AugPolicy {
        name: "moco-v3-aerial",
        about: "moco-v3 plus vertical flips, 90-degree rotations and noise for overhead images \
                (every other preset's)",
        build: moco_v3_aerial,
    },
    AugPolicy {
        name: "aerial",
        about: "crop, flips, 90-degree rotations, noise, mild brightness/contrast and a little blur; \
                no saturation, hue, grayscale or solarize: few-band overhead tiles",
        build: aerial,
    },
    AugPolicy {
        name: "light",
        about: "crop, flips, 90-degree rotations and noise only, no colour or blur: small or \
                single-band tiles where intensity itself tells the classes apart",
        build: light,
    },
];

pub fn names() -> Vec<&'static str> {
    POLICIES.iter().map(|p| p.name).collect()
}

/// The keys of policy `name`, or an error listing the policies.
pub fn get(name: &str) -> Result<AugConfig, ProtoError> {
    POLICIES.iter().find(|p| p.name == name).map(AugPolicy::config).ok_or_else(|| {
        ProtoError::Config(format!("unknown augmentation policy '{name}'; known: {}", names().join(", ")))
    })
}

/// BYOL's recipe as MoCo v3's code applies it; crop_min 0.2 as MoCo v2/v3's published recipes
/// (the v3 code's own default is 0.08).
fn moco_v3() -> AugConfig {
    AugConfig {
        crop_min: 0.2,
        jitter: [0.4, 0.4, 0.2, 0.1],
        jitter_p: 0.8,
        grayscale_p: 0.2,
        blur_p: [1.0, 0.1],
        blur_sigma: [0.1, 2.0],
        solarize_p: [0.0, 0.2],
        hflip_p: 0.5,
        vflip_p: 0.0,
        rot90: false,
        noise_std: 0.0,
    }
}

/// Overhead images have no canonical "up", so every dihedral orientation is a valid view;
/// the noise stands in for sensor noise.
fn moco_v3_aerial() -> AugConfig {
    AugConfig { vflip_p: 0.5, rot90: true, noise_std: 0.02, ..moco_v3() }
}

/// The geometry of `moco-v3-aerial`, with colour changes a sensor or the weather could make
/// (brightness, contrast) at half strength and half as often, and light blur on one view only.
/// Saturation and hue are off because few-band tiles carry little colour; grayscale and
/// solarize because they destroy the band relations that distinguish land covers.
fn aerial() -> AugConfig {
    AugConfig {
        jitter: [0.2, 0.2, 0.0, 0.0],
        jitter_p: 0.4,
        grayscale_p: 0.0,
        blur_p: [0.2, 0.0],
        blur_sigma: [0.1, 1.0],
        solarize_p: [0.0, 0.0],
        ..moco_v3_aerial()
    }
}

/// Only changes that keep every pixel's intensity: the views differ in crop and orientation.
fn light() -> AugConfig {
    AugConfig {
        jitter: [0.0; 4],
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: [0.0, 0.0],
        solarize_p: [0.0, 0.0],
        ..moco_v3_aerial()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn the_presets_defaults_are_named_policies() {
        assert_eq!(AugConfig::default(), get("moco-v3-aerial").unwrap());
        for p in ["tiny", "low-vram", "optimized", "conservative", "aggressive"] {
            assert_eq!(presets::get(p).unwrap().aug, get("moco-v3-aerial").unwrap(), "{p}");
        }
        assert_eq!(presets::get("paper").unwrap().aug, get("moco-v3").unwrap());
    }

    #[test]
    fn policies_differ_in_what_they_say() {
        let (aerial, light) = (get("aerial").unwrap(), get("light").unwrap());
        assert!(aerial.grayscale_p == 0.0 && aerial.solarize_p == [0.0, 0.0] && aerial.jitter[3] == 0.0);
        assert!(aerial.jitter_p > 0.0 && aerial.blur_p[0] > 0.0);
        assert!(light.jitter_p == 0.0 && light.blur_p == [0.0, 0.0] && light.grayscale_p == 0.0);
        for p in POLICIES {
            let c = p.config();
            assert!(c.crop_min == 0.2 && c.hflip_p == 0.5, "{}: every policy crops and flips", p.name);
        }
        assert_eq!(names().len(), 4);
    }

    #[test]
    fn an_unknown_policy_names_the_known_ones() {
        let e = get("strong").unwrap_err().to_string();
        assert!(e.contains("strong") && e.contains("aerial, light"), "{e}");
    }
}
