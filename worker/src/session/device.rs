//! Which backend a worker trains on, which GPU it takes, and the memory check made before any
//! device memory is touched.
//!
//! The CUDA training path is wired here but HAS NOT RUN ON A GPU yet (no GPU in the sessions that
//! wrote it): `worker selftest --device cuda` is the first thing to run on a GPU machine.

use crate::collective::Collective;
use crate::error::{Result, WorkerError};
use crate::plan::report::render;
use crate::plan::verdict::Verdict;
use crate::plan::MemoryPlan;
use moco_kernels::cuda::{CudaBackend, CudaOptions};
use moco_kernels::KernelError;
use moco_proto::resolved::ResolvedConfig;
use moco_proto::ProtoError;

/// The backend a worker trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    /// What the worker tells the rendezvous (and the launcher prints).
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

fn config_error(msg: String) -> WorkerError {
    WorkerError::Config(ProtoError::Config(msg))
}

/// `--device`: `cpu`; `cuda` (the driver must load); `auto`: CUDA when the driver loads, else
/// the CPU with a note. Decided before the group is joined, so a machine without a driver
/// fails at once instead of after every rank has arrived.
pub fn choose_device(flag: &str) -> Result<Device> {
    match flag {
        "cpu" => Ok(Device::Cpu),
        "cuda" => match moco_kernels::cuda::probe_driver() {
            Ok(()) => Ok(Device::Cuda),
            Err(e) => Err(config_error(format!("--device cuda: {}; use --device cpu", reason(&e)))),
        },
        "auto" => Ok(if moco_kernels::cuda::probe_driver().is_ok() { Device::Cuda } else { Device::Cpu }),
        other => Err(config_error(format!("--device {other:?}: expected cpu, cuda or auto"))),
    }
}

fn reason(e: &KernelError) -> String {
    match e {
        KernelError::NoCuda(why) | KernelError::NoNvrtc(why) => why.clone(),
        other => other.to_string(),
    }
}

/// The GPU of a worker: `--gpu` when given, else its local rank (one worker per GPU of a node,
/// as the launcher and `srun --gpus-per-task` start them).
pub fn gpu_ordinal(flag: Option<usize>, local_rank: usize) -> usize {
    flag.unwrap_or(local_rank)
}

/// With a budget (`--vram-limit`), the memory plan of this config must fit it: otherwise the
/// run is refused before it starts, with the plan and the largest batch that fits, instead of
/// failing with an out-of-memory error some allocations into the first step.
pub fn check_vram_limit(r: &ResolvedConfig, preset: &str, limit: Option<u64>) -> Result<()> {
    let Some(budget) = limit else { return Ok(()) };
    let plan = MemoryPlan::compute(r);
    let verdict = Verdict::new(&r.cfg, &plan, budget);
    if verdict.fits {
        return Ok(());
    }
    let savers: Vec<&str> = [(!r.cfg.recompute, "--recompute"), (!r.cfg.amp, "--amp")]
        .into_iter()
        .filter_map(|(off, flag)| off.then_some(flag))
        .collect();
    let also = if savers.is_empty() { String::new() } else { format!(", turn on {}", savers.join(" and ")) };
    let fix = match verdict.largest_valid_batch.or(verdict.largest_batch) {
        Some(b) => format!("use --batch {b} or smaller{also}, or raise --vram-limit"),
        None => format!("not even a batch of 1 fits{also}, or raise --vram-limit"),
    };
    Err(config_error(format!(
        "the memory plan needs {} per GPU, more than --vram-limit {}: {fix}. The plan:\n{}",
        crate::plan::budget::gib(plan.total),
        crate::plan::budget::gib(budget),
        render(r, preset, &plan, &verdict).trim_end()
    )))
}

/// Every rank trains on the same kind of device, or none starts: a rank left on the CPU among
/// GPU ranks (its CUDA start failed under `--device auto`) would hold the whole group to its
/// pace without saying so. One small all-reduce over the group's ring.
pub fn agree_on_device(ring: &dyn Collective, on_gpu: bool) -> Result<()> {
    let world = ring.world();
    if world == 1 {
        return Ok(());
    }
    let mut votes = [if on_gpu { 1.0f32 } else { 0.0 }];
    ring.all_reduce_sum_f32(&mut votes)?;
    mixed_devices(votes[0] as usize, world, ring.rank(), on_gpu)
}

/// The verdict of [`agree_on_device`] for `gpus` ranks on a GPU out of `world`.
fn mixed_devices(gpus: usize, world: usize, rank: usize, on_gpu: bool) -> Result<()> {
    if gpus == 0 || gpus == world {
        return Ok(());
    }
    Err(config_error(format!(
        "{gpus} of {world} ranks opened a GPU and {} would train on the CPU (this rank {rank}: {}); a mixed \
         group runs at the CPU's pace. Look for the \"CUDA backend cannot start\" note of the CPU ranks and \
         fix their GPU, or run every rank with --device cpu",
        world - gpus,
        if on_gpu { "GPU" } else { "CPU" }
    )))
}

/// The CUDA backend of a worker on GPU `ordinal`, its arena capped at `vram_limit`.
pub fn open_cuda(ordinal: usize, amp: bool, vram_limit: Option<u64>) -> Result<CudaBackend> {
    let options = CudaOptions { vram_limit, ..CudaOptions::default() };
    CudaBackend::new(ordinal, amp, options).map_err(|e| match e {
        KernelError::NoCuda(_) | KernelError::NoNvrtc(_) => config_error(format!(
            "--device cuda: the CUDA backend cannot start on GPU {ordinal}: {}; use --device cpu",
            reason(&e)
        )),
        other => WorkerError::Kernel(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_names_the_choices() {
        let e = choose_device("gpu").unwrap_err().to_string();
        assert!(e.contains("expected cpu, cuda or auto"), "{e}");
    }

    #[test]
    fn cpu_is_always_available_and_auto_follows_the_driver() {
        assert_eq!(choose_device("cpu").unwrap(), Device::Cpu);
        let driver = moco_kernels::cuda::probe_driver().is_ok();
        assert_eq!(choose_device("auto").unwrap(), if driver { Device::Cuda } else { Device::Cpu });
        assert_eq!(choose_device("cuda").is_ok(), driver);
    }

    #[test]
    fn a_group_of_gpu_and_cpu_ranks_is_refused() {
        assert!(mixed_devices(0, 4, 1, false).is_ok());
        assert!(mixed_devices(4, 4, 1, true).is_ok());
        let e = mixed_devices(3, 4, 2, false).unwrap_err().to_string();
        assert!(
            e.contains("3 of 4 ranks opened a GPU and 1 would train on the CPU (this rank 2: CPU)"),
            "{e}"
        );
        assert!(e.contains("--device cpu"), "{e}");
    }

    #[test]
    fn one_rank_or_all_cpu_ranks_agree_over_a_ring() {
        let one = crate::collective::LocalCollective;
        assert!(agree_on_device(&one, true).is_ok());
        let out = crate::collective::on_local_ring(2, Default::default(), |ring| {
            agree_on_device(&ring, false).is_ok()
        })
        .unwrap();
        assert_eq!(out, [true, true]);
        let out = crate::collective::on_local_ring(2, Default::default(), |ring| {
            agree_on_device(&ring, ring.rank() == 0).map_err(|e| e.to_string())
        })
        .unwrap();
        assert!(
            out.iter().all(|r| r.as_ref().is_err_and(|e| e.contains("1 of 2 ranks opened a GPU"))),
            "{out:?}"
        );
    }

    #[test]
    fn the_gpu_is_the_local_rank_unless_given() {
        assert_eq!(gpu_ordinal(None, 3), 3);
        assert_eq!(gpu_ordinal(Some(1), 3), 1);
    }

    #[test]
    fn a_plan_over_the_limit_is_refused_with_a_batch_that_fits() {
        let cfg = moco_proto::presets::get("optimized").unwrap();
        let r = ResolvedConfig::new(&cfg, 2, 2000).unwrap();
        let total = MemoryPlan::compute(&r).total;
        assert!(check_vram_limit(&r, "optimized", None).is_ok());
        assert!(check_vram_limit(&r, "optimized", Some(total)).is_ok());
        let e = check_vram_limit(&r, "optimized", Some(total - 1)).unwrap_err().to_string();
        assert!(e.contains("more than --vram-limit") && e.contains("use --batch"), "{e}");
        assert!(e.contains("memory plan per GPU: preset optimized"), "{e}");
        let e = check_vram_limit(&r, "optimized", Some(1 << 20)).unwrap_err().to_string();
        assert!(e.contains("not even a batch of 1 fits"), "{e}");
    }
}
