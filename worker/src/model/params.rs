//! Parameter initialisation as torchvision does it, into the flat host buffers.
//!
//! - Convs: kaiming-normal, fan_out, ReLU gain: std = sqrt(2 / (c_out * k * k)).
//! - BN: gamma 1, beta 0; running mean 0, running var 1.
//! - `zero_init_residual` (MoCo v3 builds its ResNet with it): every bottleneck's bn3 gamma = 0.
//! - Linear layers: PyTorch's default kaiming-uniform(a = sqrt 5), i.e. U(-1/sqrt(in), 1/sqrt(in)).

use super::topology::{ParamKind, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Initial query-encoder parameters (backbone + projector + predictor), flat, seeded.
pub fn init_params(topo: &Topology, seed: u64) -> Vec<f32> {
    let mut flat = vec![0.0f32; topo.param_len()];
    // One stream per tensor (seed, tensor index) so adding a head never changes backbone init.
    for (i, p) in topo.params.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)));
        let out = &mut flat[p.range()];
        match p.kind {
            ParamKind::ConvWeight { c_out, k, .. } => {
                let std = (2.0 / (c_out * k * k) as f64).sqrt();
                let normal = Normal::new(0.0, std).expect("finite std");
                out.iter_mut().for_each(|v| *v = normal.sample(&mut rng) as f32);
            }
            ParamKind::LinearWeight { d_in, .. } => {
                let bound = 1.0 / (d_in as f32).sqrt();
                out.iter_mut().for_each(|v| *v = rng.gen_range(-bound..bound));
            }
            ParamKind::BnGamma { .. } => {
                let zero = p.name.ends_with(".bn3.weight");
                out.iter_mut().for_each(|v| *v = if zero { 0.0 } else { 1.0 });
            }
            ParamKind::BnBeta { .. } => out.iter_mut().for_each(|v| *v = 0.0),
        }
    }
    flat
}

/// Initial BN running statistics (mean 0, var 1) for the whole topology.
pub fn init_stats(topo: &Topology) -> Vec<f32> {
    let mut stats = vec![0.0f32; topo.stats_len];
    for (name, off, len) in &topo.buffers {
        if name.ends_with("running_var") {
            stats[*off..*off + *len].iter_mut().for_each(|v| *v = 1.0);
        }
    }
    stats
}

/// Convert a conv weight from PyTorch's OIHW to our OHWI layout.
pub fn oihw_to_ohwi(src: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    for o in 0..c_out {
        for i in 0..c_in {
            for y in 0..k {
                for x in 0..k {
                    dst[((o * k + y) * k + x) * c_in + i] = src[((o * c_in + i) * k + y) * k + x];
                }
            }
        }
    }
    dst
}

/// Convert a conv weight from our OHWI layout to PyTorch's OIHW.
pub fn ohwi_to_oihw(src: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    for o in 0..c_out {
        for i in 0..c_in {
            for y in 0..k {
                for x in 0..k {
                    dst[((o * c_in + i) * k + y) * k + x] = src[((o * k + y) * k + x) * c_in + i];
                }
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topology::ModelDims;

    #[test]
    fn init_follows_torchvision() {
        let t = Topology::new(ModelDims {
            width: 0.25,
            in_channels: 3,
            proj_hidden: 64,
            dim: 16,
            pred_hidden: 64,
        });
        let p = init_params(&t, 7);
        let conv = t.param("layer1.0.conv2.weight").unwrap();
        let (c_out, k) = match conv.kind {
            ParamKind::ConvWeight { c_out, k, .. } => (c_out, k),
            _ => unreachable!(),
        };
        let v = &p[conv.range()];
        let var: f64 = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let want = 2.0 / (c_out * k * k) as f64;
        assert!((var / want - 1.0).abs() < 0.25, "conv variance {var} vs {want}");
        assert!(p[t.param("layer2.1.bn3.weight").unwrap().range()].iter().all(|&g| g == 0.0));
        assert!(p[t.param("layer2.1.bn2.weight").unwrap().range()].iter().all(|&g| g == 1.0));
        let lin = t.param("projector.0.weight").unwrap();
        let bound = 1.0 / (t.backbone.feat_dim as f32).sqrt();
        assert!(p[lin.range()].iter().all(|&w| w.abs() <= bound));
        assert_eq!(p, init_params(&t, 7));
        assert_ne!(p, init_params(&t, 8));
    }

    #[test]
    fn layout_conversion_round_trips() {
        let src: Vec<f32> = (0..2 * 3 * 5 * 5).map(|i| i as f32).collect();
        let ohwi = oihw_to_ohwi(&src, 2, 3, 5);
        assert_ne!(ohwi, src);
        assert_eq!(ohwi_to_oihw(&ohwi, 2, 3, 5), src);
        // Element (o=1, i=2, y=3, x=4) lands at OHWI index ((1*5+3)*5+4)*3+2.
        assert_eq!(ohwi[((5 + 3) * 5 + 4) * 3 + 2], src[((3 + 2) * 5 + 3) * 5 + 4]);
    }
}
