//! Activation memory of one micro-batch, phase by phase, as the model code allocates it.
//!
//! The counts follow `model/backbone.rs`, `model/heads.rs` and `moco/{state,loss}.rs`, which
//! keep exactly what the op set's backwards read (kernels/src/backend.rs): BN backward reads
//! its input z, ReLU backward its output y, conv backward-filter its input, max-pool backward
//! its input. Per view the query tape holds:
//! - stem: the input images, the stem conv output z and its BN+ReLU output y (always kept);
//! - the block boundaries: max-pool output and every block's output (always kept);
//! - without recompute, each block's inner z1, y1, z2, y2, z3 (and zd on the downsampling
//!   block); with recompute these are rebuilt one block at a time in the backward;
//! - every BN layer's batch mean and variance (fp32), and the heads' inputs, linear outputs and
//!   ReLU outputs, the normalised query and its norm.
//!
//! Both query views are forwarded before the loss, so both tapes are alive together. Then:
//! - key forward (no tape): one block's input, inner activations, output and shortcut at a time;
//! - loss: batch logits, the gathered queries against the rank's queue shard and their
//!   gradient;
//! - backward of view 1 (view 2's tape still whole): walking the blocks in reverse, the view-1
//!   tape shrinks, and each block adds the incoming gradient, (with recompute) its rebuilt
//!   inner activations, and its gradient buffers, which stay alive until the block ends.
//!
//! The query forward of view 2 is not a phase of its own: its transient (one block's inner
//! activations on top of a partial tape) never exceeds the key forward's on top of two whole
//! tapes. Everything is in bytes for a per-rank batch `n`.

use crate::model::topology::{Bottleneck, LinearSpec, Topology};
use moco_kernels::PoolShape;

/// Element counts (for the whole batch) of one bottleneck's tensors.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Input `[n, h, w, c_in]`.
    x: u64,
    /// conv1 output and its BN+ReLU output (each), `[n, h, w, mid]`.
    mid1: u64,
    /// conv2 output and its BN+ReLU output (each), `[n, h2, w2, mid]`.
    mid2: u64,
    /// conv3 output, block output, shortcut conv output (each) `[n, h2, w2, c_out]`.
    out: u64,
    downsample: bool,
}

impl Block {
    fn new(b: &Bottleneck, n: u64, h: usize) -> (Block, usize) {
        let h2 = b.conv2.out_size(h);
        let (hh, hh2) = ((h * h) as u64, (h2 * h2) as u64);
        let blk = Block {
            x: n * hh * b.c_in() as u64,
            mid1: n * hh * b.c_mid() as u64,
            mid2: n * hh2 * b.c_mid() as u64,
            out: n * hh2 * b.c_out() as u64,
            downsample: b.downsample.is_some(),
        };
        (blk, h2)
    }
    /// z1, y1, z2, y2, z3 and zd: what `Keep::All` keeps and recompute rebuilds.
    fn inner(&self) -> u64 {
        2 * self.mid1 + 2 * self.mid2 + self.out + if self.downsample { self.out } else { 0 }
    }
    /// The shortcut BN output, alive inside the block forward until added.
    fn yd(&self) -> u64 {
        if self.downsample {
            self.out
        } else {
            0
        }
    }
    /// Gradient buffers of the block backward, all alive until it ends (backbone_backward):
    /// g and dz3; dy2 before and after the ReLU mask and dz2; the same for dy1/dz1; dx; and on
    /// the downsampling block dzd and the shortcut's dx.
    fn grads(&self) -> u64 {
        2 * self.out
            + 3 * self.mid2
            + 3 * self.mid1
            + self.x
            + if self.downsample { self.out + self.x } else { 0 }
    }
}

/// Per-phase activation bytes of one micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// One query view's tape with the configured keep mode (recompute or not).
    pub saved_per_view: u64,
    /// One view's tape with recompute off / on (for the comparison line of the report).
    pub saved_per_view_all: u64,
    pub saved_per_view_recompute: u64,
    /// Most activation bytes alive at once during the step, and the phase where that happens.
    pub peak: u64,
    pub peak_phase: String,
    /// The peak of each phase: key forward, loss, backward.
    pub phases: Vec<(String, u64)>,
    /// Bytes alive through the whole step, inside every phase's figure: the step's keys with
    /// effective-batch negatives (0 without).
    pub held: u64,
}

/// Inputs of the activation count besides the topology.
#[derive(Debug, Clone, Copy)]
pub struct ActInput {
    pub n: usize,
    pub image_size: usize,
    pub world: usize,
    /// Queue rows owned by this rank (0 without a queue).
    pub queue_rows: usize,
    /// Bytes per activation element: 2 under AMP (fp16), 4 otherwise.
    pub act_bytes: u64,
    pub recompute: bool,
    /// Micro-batches whose keys the step holds: the accumulation with effective-batch
    /// negatives (all of the step's keys are computed first, moco/step_keys.rs), else 1.
    pub step_micro: usize,
}

/// Heads' tape: per layer the input, the linear output and (before a ReLU) the ReLU output.
fn head_tape(layers: &[LinearSpec], n: u64) -> u64 {
    layers.iter().map(|l| n * (l.d_in + l.d_out + if l.relu { l.d_out } else { 0 }) as u64).sum()
}

pub fn activations(topo: &Topology, i: &ActInput) -> Activations {
    let a = i.act_bytes;
    let n = i.n as u64;
    let bb = &topo.backbone;
    let s = i.image_size;
    let s1 = bb.stem_conv.out_size(s);
    let s2 = PoolShape { n: 1, h: s1, w: s1, c: 1 }.out_h();
    let c0 = bb.stem_conv.c_out as u64;
    let input = n * (s * s) as u64 * bb.in_channels as u64;
    let stem_z = n * (s1 * s1) as u64 * c0;
    let pooled = n * (s2 * s2) as u64 * c0;
    let mut blocks = Vec::with_capacity(bb.blocks.len());
    let mut h = s2;
    for b in &bb.blocks {
        let (blk, h2) = Block::new(b, n, h);
        blocks.push(blk);
        h = h2;
    }
    let dim = topo.dims.dim as u64;
    let feat = n * bb.feat_dim as u64;

    // ---- one view's tape (bytes) ----
    let stem_tape = (input + 2 * stem_z) * a;
    let bounds: u64 = pooled + blocks.iter().map(|b| b.out).sum::<u64>();
    let inner_all: u64 = blocks.iter().map(Block::inner).sum();
    let bn_stats = topo.stats_len as u64 * 4;
    let heads = (head_tape(&topo.projector, n) + head_tape(&topo.predictor, n) + n * dim) * a + n * 4;
    let per_view_recompute = stem_tape + bounds * a + bn_stats + heads;
    let per_view_all = per_view_recompute + inner_all * a;
    let per_view = if i.recompute { per_view_recompute } else { per_view_all };
    let both = 2 * per_view;

    // ---- key forward: nothing kept, one block (or the stem) at a time ----
    let mut key_at = String::from("stem");
    let mut key_max = input + 2 * stem_z + pooled;
    for (b, spec) in blocks.iter().zip(&bb.blocks) {
        let live = b.x + b.inner() + b.out + b.yd();
        if live > key_max {
            key_max = live;
            key_at = spec.name.clone();
        }
    }
    let am = i.step_micro.max(1) as u64;
    let nw = n * i.world as u64;
    // The step's keys, both views: this rank's and every rank's (gathered).
    let step_keys = (2 * am * n * dim + 2 * am * nw * dim) * a;
    let key_fwd = if am > 1 {
        // Effective-batch negatives: the step's key forwards run before any query forward (no
        // tape alive), next to the stacks of this rank's keys.
        // (counted whole: the gathered copies come right after, ~KBs).
        key_max * a + step_keys + n * dim * a
    } else {
        both + key_max * a + n * dim * a
    };

    // ---- loss: one contrastive term at a time (moco/loss.rs) ----
    let rows = i.queue_rows as u64;
    let keys = step_keys;
    // Columns of the batch block: every rank's keys of the micro-batch, or of the whole step.
    let kn = am * nw;
    let batch_block = n * kn * 4 + n * kn * a + 2 * n * dim * a;
    let queue_block = if rows > 0 { nw * rows * (4 + a) + 2 * nw * dim * a + n * dim * a } else { 0 };
    let loss = both + keys + batch_block + queue_block;

    // ---- backward of view 1, view 2's tape whole ----
    // With effective-batch negatives the step's keys stay alive through every backward.
    let held = if am > 1 { step_keys } else { 0 };
    let base = per_view + 2 * n * dim * a + feat * a + held;
    let mut bwd = 0u64;
    let mut bwd_at = String::from("stem");
    // Tape of view 1 below block i: stem, BN stats, max-pool output, outputs of blocks < i,
    // and (without recompute) inner activations of blocks <= i.
    let mut below_out: u64 = pooled;
    let mut below_inner: u64 = 0;
    let mut tape_below = Vec::with_capacity(blocks.len());
    for b in &blocks {
        tape_below.push((below_out, below_inner + b.inner()));
        below_out += b.out;
        below_inner += b.inner();
    }
    for (idx, b) in blocks.iter().enumerate().rev() {
        let (outs, inners) = tape_below[idx];
        let tape1 = stem_tape + bn_stats + outs * a + if i.recompute { 0 } else { inners * a };
        let rebuilt = if i.recompute { b.inner() * a } else { 0 };
        // After the block: its output is freed, all its gradient buffers are alive.
        let end = tape1 + (b.out + b.grads()) * a + rebuilt;
        // During the recompute forward: output still on the tape, plus the rebuilt block.
        let refwd = if i.recompute { tape1 + (b.out + b.out + b.out + b.yd()) * a + rebuilt } else { 0 };
        let live = end.max(refwd);
        if live > bwd {
            bwd = live;
            bwd_at = bb.blocks[idx].name.clone();
        }
    }
    // Stem backward: max-pool gradient, ReLU-masked gradient and BN gradient at stem size.
    let stem_bwd = stem_tape + bn_stats + pooled * a + pooled * a + 3 * stem_z * a;
    if stem_bwd > bwd {
        bwd = stem_bwd;
        bwd_at = "stem".into();
    }
    let backward = base + bwd;

    let phases = vec![
        (
            if am > 1 {
                format!("key forward of {key_at} (the step's keys first, no query tape yet)")
            } else {
                format!("key forward of {key_at} (both query tapes kept)")
            },
            key_fwd,
        ),
        ("loss (logits vs the queue shard)".to_string(), loss),
        (format!("backward of {bwd_at}"), backward),
    ];
    let (peak_phase, peak) = phases.iter().max_by_key(|p| p.1).cloned().unwrap_or_default();
    Activations {
        saved_per_view: per_view,
        saved_per_view_all: per_view_all,
        saved_per_view_recompute: per_view_recompute,
        peak,
        peak_phase,
        phases,
        held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelDims;

    fn r50() -> Topology {
        Topology::new(ModelDims {
            width: 1.0,
            in_channels: 3,
            proj_hidden: 4096,
            dim: 256,
            pred_hidden: 4096,
        })
    }

    fn input(n: usize, recompute: bool) -> ActInput {
        ActInput { n, image_size: 224, world: 2, queue_rows: 38400, act_bytes: 2, recompute, step_micro: 1 }
    }

    #[test]
    fn block_boundaries_match_resnet50_at_224() {
        // Per image, hand-counted: max-pool 56x56x64; outputs 3 x 56x56x256, 4 x 28x28x512,
        // 6 x 14x14x1024, 3 x 7x7x2048; stem input 224x224x3, z and y 112x112x64 each.
        let bounds =
            56 * 56 * 64 + 3 * 56 * 56 * 256 + 4 * 28 * 28 * 512 + 6 * 14 * 14 * 1024 + 3 * 7 * 7 * 2048;
        let stem = 224 * 224 * 3 + 2 * 112 * 112 * 64;
        let t = r50();
        let one = activations(&t, &input(1, true));
        let two = activations(&t, &input(2, true));
        // The per-image part is linear in n; the BN statistics are per layer.
        let per_image = two.saved_per_view_recompute - one.saved_per_view_recompute;
        let heads = (2048 + 4096 + 4096) + (4096 + 256) + (256 + 4096 + 4096) + (4096 + 256) + 256;
        assert_eq!(per_image, ((bounds + stem + heads) * 2 + 4) as u64);
    }

    #[test]
    fn recompute_saves_memory_and_costs_a_block() {
        let t = r50();
        let on = activations(&t, &input(64, true));
        let off = activations(&t, &input(64, false));
        assert!(
            on.saved_per_view * 2 < off.saved_per_view,
            "{} vs {}",
            on.saved_per_view,
            off.saved_per_view
        );
        assert!(on.peak < off.peak);
        // The largest block (layer1.0, 56x56x256 plus its shortcut) sets the peak: in the key
        // forward on top of two whole query tapes, or in the backward rebuilding it.
        assert!(on.peak_phase.contains("layer1.0"), "{}", on.peak_phase);
    }

    #[test]
    fn amp_halves_the_activation_bytes() {
        let t = r50();
        let fp16 = activations(&t, &input(32, true));
        let fp32 = activations(&t, &ActInput { act_bytes: 4, ..input(32, true) });
        let bn = t.stats_len as u64 * 4;
        // Everything but the fp32 BN statistics and query norms doubles.
        assert_eq!(fp32.saved_per_view - bn - 32 * 4, 2 * (fp16.saved_per_view - bn - 32 * 4));
    }
}
