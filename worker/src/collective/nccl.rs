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
use crate::error::Result;
use crate::moco::device_comm::DeviceComm;
use moco_kernels::cuda::nccl::{nccl_present, NcclComm, NcclId, ID_BYTES};
use moco_kernels::cuda::{CudaBackend, CudaBuf};
use moco_kernels::Backend;

/// The step's device collectives over NCCL.
pub struct Nccl(pub NcclComm);

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

/// Joins NCCL when every rank of `ring` can (`want`: this rank's wish, false for `--nccl off`).
pub fn join(be: &CudaBackend, ring: &dyn Collective, want: bool) -> Result<Joined> {
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
                "{} of {world} rank(s) cannot load libnccl.so (scripts/gpu_env.sh makes the link cudarc needs)",
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
    let comm = NcclComm::new(be, rank, world, &NcclId::from_bytes(&id)?)?;
    Ok(Joined::Nccl(Nccl(comm)))
}
