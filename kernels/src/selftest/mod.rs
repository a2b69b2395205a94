//! The backend self-test: every op of the `Backend` trait run on the same seeded inputs on a
//! reference backend (the CPU) and a candidate (CUDA), with the outputs compared within a
//! tolerance written beside each comparison. `worker selftest --device cuda` runs
//! [`selftest_cuda`], which is how a CUDA op becomes "done" (DESIGN.md contract 1).
//!
//! - [`run`]: any two backends. Tested here with CPU against CPU (bit-identical) and CPU
//!   against a deliberately broken backend (the broken op, and only it, fails).
//! - [`selftest_cuda`]: the CPU against `CudaBackend`, with fp16 activations (AMP) and with
//!   fp32 activations, at ResNet-sized shapes. Not yet run on a GPU.
//!
//! Inputs that become activation buffers are rounded to fp16 first, so both backends start
//! from identical values in either precision; the tolerances then only have to cover how each
//! backend computes, which is what is being tested. fp16 tolerances are looser because a
//! candidate that stores an activation in fp16 rounds it once (half an fp16 ulp is 2^-11 =
//! 4.9e-4 relative) where the fp32 reference does not; every other difference (summation
//! order, fused multiply-adds, expf / rsqrtf ulps, cuDNN's transform algorithms) is the same
//! size in both precisions.

mod cases;
mod harness;
mod queue_cuda;
mod report;

#[cfg(test)]
mod broken;
#[cfg(test)]
mod tests;

pub use harness::{errors, round_f16, Gen, Tol};
pub use report::{Report, Row};

use crate::backend::Backend;
use crate::error::Result;
use harness::Cx;

/// Shapes of a self-test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small shapes: a CPU-against-CPU run takes well under a second (the unit tests).
    Quick,
    /// ResNet-50-sized layers (the GPU self-test): a few seconds of CPU reference time.
    Full,
}

/// How to run the self-test.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub seed: u64,
    pub scale: Scale,
    /// The candidate stores activations in fp16 (AMP): use the fp16 tolerances. The
    /// reference should be the CPU backend with the same AMP setting (so that `round_act`
    /// means the same on both).
    pub act_fp16: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { seed: 0x005e_ed0f_c0de, scale: Scale::Quick, act_fp16: false }
    }
}

/// Runs every op of the trait on `reference` and `candidate` and compares the outputs.
/// A backend error (an allocation refused, a CUDA failure) ends the run with a failing row
/// that carries the error; `Err` is returned only for failures outside any op.
pub fn run<A: Backend, B: Backend>(reference: &A, candidate: &B, opts: &Options) -> Result<Report> {
    type Case<'r, A, B> = fn(&mut Cx<'r, A, B>) -> Result<()>;
    let mut cx = Cx::new(reference, candidate, opts.act_fp16, opts.scale == Scale::Full, opts.seed);
    let cases: [(&str, Case<'_, A, B>); 8] = [
        ("memory", cases::memory::run),
        ("pointwise", cases::pointwise::run),
        ("conv", cases::conv::run),
        ("norm", cases::norm::run),
        ("pool", cases::pool::run),
        ("linear", cases::linear::run),
        ("softmax", cases::softmax::run),
        ("optim", cases::optim::run),
    ];
    for (family, case) in cases {
        if let Err(e) = case(&mut cx) {
            cx.rows.push(Row {
                precision: cx.precision(),
                op: format!("{family} (run aborted)"),
                max_abs: f64::INFINITY,
                max_rel: f64::INFINITY,
                tol: 0.0,
                pass: false,
                note: format!("error: {e}"),
            });
            break;
        }
    }
    let header = vec![format!(
        "self-test: reference {} vs candidate {} ({} activations, {:?} shapes, seed {:#x})",
        reference.name(),
        candidate.name(),
        cx.precision(),
        opts.scale,
        opts.seed
    )];
    Ok(Report { header, rows: cx.rows })
}

/// The CPU backend against `CudaBackend` on GPU `device`, first with fp16 activations (AMP,
/// the training configuration) and then with fp32 ones, at ResNet-sized shapes.
///
/// NOT YET RUN ON A GPU. Fails with `KernelError::NoCuda` where there is no driver.
pub fn selftest_cuda(device: usize) -> Result<Report> {
    use crate::cpu::Cpu;
    use crate::cuda::arena::human_bytes;
    use crate::cuda::{CudaBackend, CudaOptions};

    let mut report = Report::default();
    for amp in [true, false] {
        let cuda = CudaBackend::new(device, amp, CudaOptions::default())?;
        let cpu = Cpu { amp };
        let opts = Options { scale: Scale::Full, act_fp16: amp, ..Options::default() };
        let mut part = run(&cpu, &cuda, &opts)?;
        if amp {
            // Both queue precisions (fp16 and fp32 kernels) in one pass; once is enough.
            part.rows.extend(queue_cuda::check(&cpu, &cuda)?);
        }
        let mem = cuda.memory();
        part.header.push(format!(
            "device {device}: {} ({}), arena peak {} live / {} reserved, {} allocations, {} reuses",
            cuda.device_name(),
            cuda.arch(),
            human_bytes(mem.peak_live),
            human_bytes(mem.peak_reserved),
            mem.allocations,
            mem.reuses
        ));
        report.extend(part);
    }
    Ok(report)
}
