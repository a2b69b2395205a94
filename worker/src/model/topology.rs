//! The shapes of ResNet-50 (torchvision v1.5) and the MoCo v3 heads, as data.
//!
//! One description serves the model (which lays its parameters out from it), the memory planner
//! (which sums tensor sizes from it) and export (which maps its names to torchvision's). Nothing
//! here allocates tensors.
//!
//! Flat layout: every trainable parameter lives in one buffer, in torchvision state-dict order:
//! backbone, then projector, then predictor. The momentum encoder copies the first
//! `key_len()` elements (backbone + projector). BN running statistics live in a second flat
//! buffer (`buffers`), per encoder.

/// Which network a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Backbone,
    Projector,
    Predictor,
}

/// What a parameter is; decides its layout, its init, and LARS/weight-decay treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Stored OHWI `[c_out, k, k, c_in]`; torchvision's shape is `[c_out, c_in, k, k]`.
    ConvWeight {
        c_out: usize,
        c_in: usize,
        k: usize,
    },
    /// `[out, in]`, same as torchvision.
    LinearWeight {
        d_out: usize,
        d_in: usize,
    },
    BnGamma {
        c: usize,
    },
    BnBeta {
        c: usize,
    },
}

impl ParamKind {
    pub fn len(&self) -> usize {
        match *self {
            ParamKind::ConvWeight { c_out, c_in, k } => c_out * c_in * k * k,
            ParamKind::LinearWeight { d_out, d_in } => d_out * d_in,
            ParamKind::BnGamma { c } | ParamKind::BnBeta { c } => c,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shape as PyTorch reports it (OIHW for convs).
    pub fn torch_shape(&self) -> Vec<usize> {
        match *self {
            ParamKind::ConvWeight { c_out, c_in, k } => vec![c_out, c_in, k, k],
            ParamKind::LinearWeight { d_out, d_in } => vec![d_out, d_in],
            ParamKind::BnGamma { c } | ParamKind::BnBeta { c } => vec![c],
        }
    }
    /// MoCo v3's LARS excludes 1-D tensors (BN gammas/betas, biases) from weight decay and
    /// trust-ratio adaptation.
    pub fn is_matrix(&self) -> bool {
        matches!(self, ParamKind::ConvWeight { .. } | ParamKind::LinearWeight { .. })
    }
}

/// One trainable tensor in the flat parameter buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// torchvision-style name, e.g. `layer1.0.conv1.weight`, `projector.0.weight`.
    pub name: String,
    pub kind: ParamKind,
    pub part: Part,
    pub offset: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.kind.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Indices into `Topology::params` / offsets into the running-stat buffer for one BN layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnSpec {
    pub c: usize,
    /// Parameter indices of gamma and beta; None for the projector's affine-free last BN.
    pub gamma: Option<usize>,
    pub beta: Option<usize>,
    /// Offset of running_mean in the running-stat buffer; running_var follows at `+ c`.
    pub stats_offset: usize,
    /// Part this BN belongs to (which encoder copies hold its statistics).
    pub part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Parameter index of the weight.
    pub weight: usize,
}

impl ConvSpec {
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad - self.k) / self.stride + 1
    }
}

/// A torchvision v1.5 bottleneck: 1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 -> BN,
/// plus the shortcut (1x1 conv with stride + BN on a stage's first block), then ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    pub name: String,
    pub conv1: ConvSpec,
    pub bn1: BnSpec,
    pub conv2: ConvSpec,
    pub bn2: BnSpec,
    pub conv3: ConvSpec,
    pub bn3: BnSpec,
    pub downsample: Option<(ConvSpec, BnSpec)>,
    pub stride: usize,
}

impl Bottleneck {
    pub fn c_in(&self) -> usize {
        self.conv1.c_in
    }
    pub fn c_mid(&self) -> usize {
        self.conv1.c_out
    }
    pub fn c_out(&self) -> usize {
        self.conv3.c_out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackboneSpec {
    pub in_channels: usize,
    pub stem_conv: ConvSpec,
    pub stem_bn: BnSpec,
    pub blocks: Vec<Bottleneck>,
    /// Index one past the last block of each of the four stages.
    pub stage_ends: [usize; 4],
    /// Output feature dimension (2048 at width 1).
    pub feat_dim: usize,
}

/// One Linear (no bias) layer of a head, optionally followed by BN and ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearSpec {
    pub d_in: usize,
    pub d_out: usize,
    pub weight: usize,
    pub bn: Option<BnSpec>,
    pub relu: bool,
}

/// Sizes that define the network. `width` is the only knob besides the input size
/// (contract 3: `tiny` is ResNet-50 at reduced width, not another net).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelDims {
    pub width: f32,
    pub in_channels: usize,
    pub proj_hidden: usize,
    pub dim: usize,
    pub pred_hidden: usize,
}

impl ModelDims {
    pub fn from_config(cfg: &moco_proto::config::TrainConfig, in_channels: usize) -> Self {
        ModelDims {
            width: cfg.width,
            in_channels,
            proj_hidden: cfg.proj_hidden,
            dim: cfg.dim,
            pred_hidden: cfg.pred_hidden,
        }
    }
}

/// The whole description: backbone, projector, predictor, and the flat layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub dims: ModelDims,
    pub backbone: BackboneSpec,
    pub projector: Vec<LinearSpec>,
    pub predictor: Vec<LinearSpec>,
    pub params: Vec<ParamSpec>,
    /// Names of the BN running-stat tensors (`<bn>.running_mean` / `.running_var`), with
    /// offset into the running-stat buffer, in order.
    pub buffers: Vec<(String, usize, usize)>,
    /// Length of the running-stat buffer.
    pub stats_len: usize,
}

/// Channel count at width multiplier `w`: torchvision's count scaled and rounded, at least 1.
pub fn scaled(c: usize, w: f32) -> usize {
    ((c as f32 * w).round() as usize).max(1)
}

struct Builder {
    params: Vec<ParamSpec>,
    buffers: Vec<(String, usize, usize)>,
    offset: usize,
    stats_offset: usize,
    part: Part,
}

impl Builder {
    fn param(&mut self, name: String, kind: ParamKind) -> usize {
        let idx = self.params.len();
        let len = kind.len();
        self.params.push(ParamSpec { name, kind, part: self.part, offset: self.offset });
        self.offset += len;
        idx
    }
    fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize, stride: usize) -> ConvSpec {
        let weight = self.param(format!("{name}.weight"), ParamKind::ConvWeight { c_out, c_in, k });
        ConvSpec { c_in, c_out, k, stride, pad: k / 2, weight }
    }
    fn bn(&mut self, name: &str, c: usize, affine: bool) -> BnSpec {
        let (gamma, beta) = if affine {
            (
                Some(self.param(format!("{name}.weight"), ParamKind::BnGamma { c })),
                Some(self.param(format!("{name}.bias"), ParamKind::BnBeta { c })),
            )
        } else {
            (None, None)
        };
        let stats_offset = self.stats_offset;
        self.buffers.push((format!("{name}.running_mean"), stats_offset, c));
        self.buffers.push((format!("{name}.running_var"), stats_offset + c, c));
        self.stats_offset += 2 * c;
        BnSpec { c, gamma, beta, stats_offset, part: self.part }
    }
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> usize {
        self.param(format!("{name}.weight"), ParamKind::LinearWeight { d_out, d_in })
    }
}

impl Topology {
    pub fn new(dims: ModelDims) -> Topology {
        let mut b = Builder {
            params: Vec::new(),
            buffers: Vec::new(),
            offset: 0,
            stats_offset: 0,
            part: Part::Backbone,
        };
        let w = dims.width;
        let stem_c = scaled(64, w);
        let stem_conv = b.conv("conv1", dims.in_channels, stem_c, 7, 2);
        let stem_conv = ConvSpec { pad: 3, ..stem_conv };
        let stem_bn = b.bn("bn1", stem_c, true);
        let mut blocks = Vec::new();
        let mut stage_ends = [0usize; 4];
        let mut c_in = stem_c;
        for (s, &count) in [3usize, 4, 6, 3].iter().enumerate() {
            let planes = scaled(64 << s, w);
            let c_out = planes * 4;
            for i in 0..count {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let name = format!("layer{}.{}", s + 1, i);
                let conv1 = b.conv(&format!("{name}.conv1"), c_in, planes, 1, 1);
                let bn1 = b.bn(&format!("{name}.bn1"), planes, true);
                let conv2 = b.conv(&format!("{name}.conv2"), planes, planes, 3, stride);
                let bn2 = b.bn(&format!("{name}.bn2"), planes, true);
                let conv3 = b.conv(&format!("{name}.conv3"), planes, c_out, 1, 1);
                let bn3 = b.bn(&format!("{name}.bn3"), c_out, true);
                let downsample = if i == 0 {
                    let conv = b.conv(&format!("{name}.downsample.0"), c_in, c_out, 1, stride);
                    let bn = b.bn(&format!("{name}.downsample.1"), c_out, true);
                    Some((conv, bn))
                } else {
                    None
                };
                blocks.push(Bottleneck { name, conv1, bn1, conv2, bn2, conv3, bn3, downsample, stride });
                c_in = c_out;
            }
            stage_ends[s] = blocks.len();
        }
        let feat_dim = c_in;
        let backbone =
            BackboneSpec { in_channels: dims.in_channels, stem_conv, stem_bn, blocks, stage_ends, feat_dim };

        // Projector (MoCo v3 `_build_mlp(2, feat, 4096, 256)` with last BN affine-free).
        b.part = Part::Projector;
        let p0 = b.linear("projector.0", feat_dim, dims.proj_hidden);
        let p1 = b.bn("projector.1", dims.proj_hidden, true);
        let p3 = b.linear("projector.3", dims.proj_hidden, dims.dim);
        let p4 = b.bn("projector.4", dims.dim, false);
        let projector = vec![
            LinearSpec { d_in: feat_dim, d_out: dims.proj_hidden, weight: p0, bn: Some(p1), relu: true },
            LinearSpec { d_in: dims.proj_hidden, d_out: dims.dim, weight: p3, bn: Some(p4), relu: false },
        ];

        // Predictor (`_build_mlp(2, 256, 4096, 256, last_bn=False)`).
        b.part = Part::Predictor;
        let q0 = b.linear("predictor.0", dims.dim, dims.pred_hidden);
        let q1 = b.bn("predictor.1", dims.pred_hidden, true);
        let q3 = b.linear("predictor.3", dims.pred_hidden, dims.dim);
        let predictor = vec![
            LinearSpec { d_in: dims.dim, d_out: dims.pred_hidden, weight: q0, bn: Some(q1), relu: true },
            LinearSpec { d_in: dims.pred_hidden, d_out: dims.dim, weight: q3, bn: None, relu: false },
        ];

        Topology {
            dims,
            backbone,
            projector,
            predictor,
            params: b.params,
            buffers: b.buffers,
            stats_len: b.stats_offset,
        }
    }

    /// Elements of all trainable parameters (query encoder: backbone + projector + predictor).
    pub fn param_len(&self) -> usize {
        self.params.last().map(|p| p.offset + p.len()).unwrap_or(0)
    }
    /// Elements of the parameters of one `part`.
    pub fn part_len(&self, part: Part) -> usize {
        self.params.iter().filter(|p| p.part == part).map(|p| p.len()).sum()
    }
    /// Elements copied into the momentum encoder (backbone + projector), a prefix of the buffer.
    pub fn key_len(&self) -> usize {
        self.part_len(Part::Backbone) + self.part_len(Part::Projector)
    }
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Topology {
        Topology::new(ModelDims {
            width: 1.0,
            in_channels: 3,
            proj_hidden: 4096,
            dim: 256,
            pred_hidden: 4096,
        })
    }

    #[test]
    fn backbone_matches_torchvision_resnet50_without_fc() {
        let t = full();
        // torchvision resnet50: 25,557,032 parameters, of which fc has 2048*1000 + 1000.
        assert_eq!(t.part_len(Part::Backbone), 23_508_032);
        assert_eq!(t.backbone.feat_dim, 2048);
        assert_eq!(t.backbone.blocks.len(), 16);
        // torchvision's 320 state-dict keys: 159 parameters + fc (2) + 53 BNs x 3 buffers.
        let bb_params = t.params.iter().filter(|p| p.part == Part::Backbone).count();
        assert_eq!(bb_params, 159);
        let bb_bns =
            t.buffers.iter().filter(|(n, _, _)| !n.starts_with("pro") && !n.starts_with("pre")).count() / 2;
        assert_eq!(bb_params + 2 + 3 * bb_bns, 320);
    }

    #[test]
    fn heads_follow_moco_v3() {
        let t = full();
        // Projector: 2048*4096 + 2*4096 + 4096*256 (last BN affine-free).
        assert_eq!(t.part_len(Part::Projector), 2048 * 4096 + 2 * 4096 + 4096 * 256);
        // Predictor: 256*4096 + 2*4096 + 4096*256.
        assert_eq!(t.part_len(Part::Predictor), 256 * 4096 + 2 * 4096 + 4096 * 256);
        assert_eq!(t.key_len(), t.part_len(Part::Backbone) + t.part_len(Part::Projector));
    }

    #[test]
    fn offsets_are_contiguous_in_order() {
        let t = full();
        let mut off = 0;
        for p in &t.params {
            assert_eq!(p.offset, off, "{}", p.name);
            off += p.len();
        }
        assert_eq!(off, t.param_len());
    }

    #[test]
    fn width_multiplier_scales_channels_only() {
        let t = Topology::new(ModelDims {
            width: 0.125,
            in_channels: 3,
            proj_hidden: 256,
            dim: 64,
            pred_hidden: 256,
        });
        assert_eq!(t.backbone.blocks.len(), 16);
        assert_eq!(t.backbone.stem_conv.c_out, 8);
        assert_eq!(t.backbone.feat_dim, 256);
    }
}
