//! NCCL between the GPUs of a run, for the step's device collectives (DESIGN.md contract 8).
//!
//! Not run on a GPU: it runs on the emulated device's NCCL stand-in (kernels/emu), not on
//! real NCCL.
//!
//! Joining: every rank says over the host ring (which the rendezvous set up) whether it can use
//! NCCL; only when all can does rank 0 make the unique id and broadcast it over the ring, and
//! every rank joins the communicator. Deciding together first matters: a rank that skipped
//! NCCL while the others entered `ncclCommInitRank` would leave them blocked there.

use crate::collective::Collective;
use crate::error::{Result, WorkerError};
use crate::moco::device_comm::DeviceComm;
use cudarc::driver::{CudaEvent, CudaStream};
use moco_kernels::cuda::nccl::{nccl_present, NcclComm, NcclId, ID_BYTES};
use moco_kernels::cuda::{CudaBackend, CudaBuf};
use moco_kernels::error::KernelError;
use moco_kernels::Backend;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The step's device collectives over NCCL; the second field, when present, all-reduces
/// gradient buckets on a stream of their own while the backward runs.
pub struct Nccl(pub NcclComm, pub Option<GradStream>);

/// A second communicator on a second stream, for gradient buckets (as the host path has a
/// gradient ring of its own): its all-reduces never interleave with the main communicator's
/// collectives on the backend's stream, so every rank issues each communicator's calls in the
/// same order whatever the two streams do. Events order the streams: each bucket waits for
/// the backward's work queued before it (`ready`), and the optimiser waits for the last
/// bucket (`done`). Neither is a host wait.
pub struct GradStream {
    comm: NcclComm,
    stream: Arc<CudaStream>,
    ready: CudaEvent,
    done: CudaEvent,
}

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> WorkerError {
    move |e| WorkerError::from(KernelError::Cuda { op, detail: format!("{e:?}") })
}

impl GradStream {
    /// Joins the gradient communicator `id` on a new stream of `be`'s context.
    fn join(
        be: &CudaBackend,
        rank: usize,
        world: usize,
        id: &NcclId,
        timeout: Duration,
    ) -> Result<GradStream> {
        let ctx = be.context();
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let mut comm = NcclComm::new_on_stream(be, stream.clone(), rank, world, id)?;
        comm.arm_watchdog(timeout)?;
        let ready = ctx.new_event(None).map_err(driver("cuEventCreate"))?;
        let done = ctx.new_event(None).map_err(driver("cuEventCreate"))?;
        Ok(GradStream { comm, stream, ready, done })
    }
}

impl DeviceComm<CudaBackend> for Nccl {
    fn world(&self) -> usize {
        self.0.world()
    }

    fn all_reduce_sum(&self, _be: &CudaBackend, buf: &mut CudaBuf) -> Result<()> {
        let n = CudaBackend::buf_len(buf);
        let mut v = CudaBackend::view_mut(buf, 0..n);
        Ok(self.0.all_reduce_sum(&mut v)?)
    }

    fn all_gather(&self, be: &CudaBackend, send: &CudaBuf) -> Result<CudaBuf> {
        let n = CudaBackend::buf_len(send);
        // The receive buffer takes the send buffer's element type (keys are activations:
        // fp16 under AMP).
        let mut recv = if send.dtype() == be.act_dtype() {
            be.zeros(n * self.0.world())?
        } else {
            be.zeros_master(n * self.0.world())?
        };
        let s = CudaBackend::view(send, 0..n);
        let len = CudaBackend::buf_len(&recv);
        let mut r = CudaBackend::view_mut(&mut recv, 0..len);
        self.0.all_gather(&s, &mut r)?;
        Ok(recv)
    }

    fn overlaps_buckets(&self) -> bool {
        self.1.is_some()
    }

    fn all_reduce_bucket(&self, be: &CudaBackend, buf: &mut CudaBuf, range: Range<usize>) -> Result<()> {
        let Some(g) = self.1.as_ref() else {
            return Err(WorkerError::Collective(
                "no gradient stream: NCCL joined without bucket overlap".into(),
            ));
        };
        // The bucket's gradients are written by work queued on the backend's stream so far.
        g.ready.record(be.stream()).map_err(driver("cuEventRecord"))?;
        g.stream.wait(&g.ready).map_err(driver("cuStreamWaitEvent"))?;
        let mut v = CudaBackend::view_mut(buf, range);
        Ok(g.comm.all_reduce_sum(&mut v)?)
    }

    fn check(&self) -> Result<()> {
        let grads = self.1.as_ref().and_then(|g| g.comm.watchdog_cause());
        match self.0.watchdog_cause().or(grads) {
            Some(detail) => Err(WorkerError::from(KernelError::Cuda { op: "NCCL watchdog", detail })),
            None => Ok(()),
        }
    }

    fn join_buckets(&self, be: &CudaBackend) -> Result<()> {
        if let Some(g) = self.1.as_ref() {
            g.done.record(&g.stream).map_err(driver("cuEventRecord"))?;
            be.stream().wait(&g.done).map_err(driver("cuStreamWaitEvent"))?;
        }
        Ok(())
    }

    fn all_gather_f32(&self, be: &CudaBackend, send: &CudaBuf) -> Result<CudaBuf> {
        let n = CudaBackend::buf_len(send);
        let mut recv = be.zeros_master(n * self.0.world())?;
        let len = CudaBackend::buf_len(&recv);
        // An fp16 `send` is refused by the wrapper (send and receive types must match).
        self.0.all_gather(&CudaBackend::view(send, 0..n), &mut CudaBackend::view_mut(&mut recv, 0..len))?;
        Ok(recv)
    }

    fn reduce_scatter_sum_f32(&self, be: &CudaBackend, send: &CudaBuf) -> Result<CudaBuf> {
        let n = CudaBackend::buf_len(send);
        // A length that does not split over the ranks is refused by the wrapper's shape check.
        let mut recv = be.zeros_master(n / self.0.world())?;
        let len = CudaBackend::buf_len(&recv);
        self.0.reduce_scatter_sum(
            &CudaBackend::view(send, 0..n),
            &mut CudaBackend::view_mut(&mut recv, 0..len),
        )?;
        Ok(recv)
    }
}

/// Why NCCL is or is not used, for the start notes.
pub enum Joined {
    Nccl(Nccl),
    /// Every rank trains, but gradients and keys go over the host ring; the reason is given.
    Ring(String),
}

/// Joins NCCL when every rank of `ring` can (`want`: this rank's wish, false for `--nccl off`),
/// with the watchdog armed: NCCL work stalled for `timeout` aborts the communicator and fails
/// the step with the cause, instead of blocking forever on a hung or dead peer. With
/// `overlap`, a second communicator on a second stream all-reduces gradient buckets during the
/// backward ([`GradStream`]).
pub fn join(
    be: &CudaBackend,
    ring: &dyn Collective,
    want: bool,
    timeout: Duration,
    overlap: bool,
) -> Result<Joined> {
    let (rank, world) = (ring.rank(), ring.world());
    if world == 1 {
        return Ok(Joined::Ring("one rank: nothing to exchange".into()));
    }
    let able = want && nccl_present();
    let mut votes = [if able { 1.0f32 } else { 0.0 }];
    ring.all_reduce_sum_f32(&mut votes)?;
    if votes[0] < world as f32 {
        let why = if !want {
            "NCCL is off (--nccl off)".to_string()
        } else {
            format!(
                "{} of {world} rank(s) cannot load libnccl (scripts/setup_gpu.sh installs it; `launcher doctor` says what is missing)",
                world - votes[0] as usize
            )
        };
        return Ok(Joined::Ring(why));
    }
    let mut id = [0u8; ID_BYTES];
    if rank == 0 {
        id = NcclId::new()?.to_bytes();
    }
    ring.broadcast_bytes(&mut id, 0)?;
    let mut comm = NcclComm::new(be, rank, world, &NcclId::from_bytes(&id)?)?;
    comm.arm_watchdog(timeout)?;
    // All ranks join the second communicator or none (a rank started with another
    // --grad-bucket must not leave the others waiting in ncclCommInitRank).
    let mut wish = [if overlap { 1.0f32 } else { 0.0 }];
    ring.all_reduce_sum_f32(&mut wish)?;
    let grads = if wish[0] == world as f32 {
        let mut gid = [0u8; ID_BYTES];
        if rank == 0 {
            gid = NcclId::new()?.to_bytes();
        }
        ring.broadcast_bytes(&mut gid, 0)?;
        Some(GradStream::join(be, rank, world, &NcclId::from_bytes(&gid)?, timeout)?)
    } else {
        None
    };
    Ok(Joined::Nccl(Nccl(comm, grads)))
}
