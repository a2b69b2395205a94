//! `worker selftest --device cuda`: every op on the GPU against the CPU reference (the kernels'
//! self-test), then a few training steps of `tiny` on both backends from the same weights and
//! batches with their losses side by side.
//!
//! The CUDA half has been compiled but not yet run on a GPU (no GPU in the sessions that wrote
//! it); `--device cpu` runs the same code with the CPU on both sides, which is what CI checks.

use crate::error::{Result, WorkerError};
use crate::moco::comm::Solo;
use crate::moco::{Moco, Views};
use crate::session::data::SYNTHETIC_SEED;
use moco_kernels::cpu::Cpu;
use moco_kernels::selftest::{self, Options, Report};
use moco_kernels::Backend;

/// Losses of the same training steps on two backends.
pub struct LossTrack {
    pub reference: Vec<f32>,
    pub candidate: Vec<f32>,
    /// Largest allowed relative difference per step (fp16 compute drifts; see `compare`).
    pub tolerance: f32,
}

impl LossTrack {
    pub fn passed(&self) -> bool {
        self.reference.iter().zip(&self.candidate).all(|(a, b)| (a - b).abs() <= self.tolerance * a.abs())
            && self.reference.len() == self.candidate.len()
    }

    pub fn print(&self) {
        println!("{:>5}  {:>12}  {:>12}  {:>9}", "step", "cpu loss", "other loss", "rel diff");
        for (i, (a, b)) in self.reference.iter().zip(&self.candidate).enumerate() {
            println!("{:>5}  {a:>12.6}  {b:>12.6}  {:>9.2e}", i + 1, (a - b).abs() / a.abs().max(1e-12));
        }
        println!(
            "training losses {} (tolerance {:.0e} relative)",
            if self.passed() { "track" } else { "DIVERGE" },
            self.tolerance
        );
    }
}

/// `steps` optimiser steps of the `tiny` preset on `be`, from the preset's seeded init, on
/// synthetic batches that are the same for every backend.
pub fn tiny_losses<B: Backend>(be: B, amp: bool, steps: usize) -> Result<Vec<f32>> {
    use crate::data::{Augmenter, Dataset, SyntheticDataset, SyntheticSpec, TwoViewBatch};
    let mut cfg = moco_proto::presets::get("tiny")?;
    cfg.amp = amp;
    cfg.batch = 16;
    cfg.queue_size = 256;
    let ds = SyntheticDataset::new(SyntheticSpec { count: 64, size: 96 }, SYNTHETIC_SEED)?;
    let aug = Augmenter::new(&cfg.aug, cfg.image_size, cfg.seed, ds.stats())?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| WorkerError::Data(format!("selftest thread pool: {e}")))?;
    let mut moco = Moco::new(be, &cfg, ds.bands(), 0, 1)?;
    let mut losses = Vec::with_capacity(steps);
    for s in 0..steps {
        let idx: Vec<u32> = (0..cfg.batch as u32).map(|i| (i + s as u32 * 16) % 64).collect();
        let b = TwoViewBatch::build(&pool, &ds, &aug, 0, &idx)?;
        let idx64 = b.indices_i64();
        let v = Views { x1: &b.x1, x2: &b.x2, idx: &idx64, n: b.n, size: b.size, channels: b.channels };
        let out = moco.micro_batch(&Solo, &v, cfg.momentum)?;
        moco.optimizer_step(&Solo, 0.05)?;
        losses.push(out.loss);
    }
    Ok(losses)
}

/// The whole self-test for `device` ("cuda" or "cpu"); returns whether everything passed.
pub fn run(device: &str, gpu: usize) -> Result<bool> {
    let (report, track) = match device {
        "cuda" => {
            let report = selftest::selftest_cuda(gpu)?;
            let mut track = None;
            for amp in [false, true] {
                let cuda = moco_kernels::cuda::CudaBackend::new(gpu, amp, Default::default())?;
                let reference = tiny_losses(Cpu { amp }, amp, 3)?;
                let candidate = tiny_losses(cuda, amp, 3)?;
                // fp32: reassociation only; fp16: activations rounded in different places.
                let tolerance = if amp { 2e-2 } else { 1e-3 };
                let t = LossTrack { reference, candidate, tolerance };
                println!("\ntraining steps, AMP {}", if amp { "on" } else { "off" });
                t.print();
                if !t.passed() || track.is_none() {
                    track = Some(t);
                }
            }
            (report, track)
        }
        "cpu" => {
            let mut report = Report::default();
            for amp in [true, false] {
                let opts = Options { act_fp16: amp, ..Options::default() };
                report.extend(selftest::run(&Cpu { amp }, &Cpu { amp }, &opts)?);
            }
            let reference = tiny_losses(Cpu { amp: false }, false, 2)?;
            let candidate = tiny_losses(Cpu { amp: false }, false, 2)?;
            (report, Some(LossTrack { reference, candidate, tolerance: 0.0 }))
        }
        other => {
            return Err(WorkerError::Config(moco_proto::ProtoError::Config(format!(
                "selftest --device {other:?}: expected cuda or cpu"
            ))))
        }
    };
    report.print();
    let mut ok = report.passed();
    if let Some(t) = track {
        if device == "cpu" {
            t.print();
        }
        ok &= t.passed();
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_selftest_passes_and_training_is_repeatable() {
        assert!(super::run("cpu", 0).unwrap());
    }

    #[test]
    fn tiny_losses_are_finite_and_move() {
        let l = super::tiny_losses(moco_kernels::cpu::Cpu { amp: false }, false, 3).unwrap();
        assert!(l.iter().all(|v| v.is_finite()));
        assert_ne!(l[0], l[2]);
    }
}
