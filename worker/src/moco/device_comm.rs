//! Collectives on the backend's own buffers: with one installed ([`Moco::dev_comm`]), the step's
//! two large exchanges, the gradient all-reduce and the key all-gather, run on device memory
//! (NCCL on the GPU) instead of going through host copies and the TCP ring. The small ones
//! (SyncBN moments, image indices, the inf/NaN verdict, the loss) stay on the host [`Comm`].
//!
//! [`Moco::dev_comm`]: super::Moco::dev_comm
//! [`Comm`]: super::comm::Comm

use crate::collective::Collective;
use crate::error::Result;
use moco_kernels::Backend;
use std::sync::Arc;

pub trait DeviceComm<B: Backend>: Send {
    fn world(&self) -> usize;
    /// In place: every rank's `buf` becomes the sum over ranks.
    fn all_reduce_sum(&self, be: &B, buf: &mut B::Buf) -> Result<()>;
    /// Every rank's `send`, concatenated in rank order, in a new activation buffer.
    fn all_gather(&self, be: &B, send: &B::Buf) -> Result<B::Buf>;
}

/// Through host buffers and a host collective: what the step does without a device collective,
/// behind this interface, so the CPU tests can check the step's device-collective path (the
/// NCCL one has the same shape but needs GPUs).
pub struct HostStaged(pub Arc<dyn Collective>);

impl<B: Backend> DeviceComm<B> for HostStaged {
    fn world(&self) -> usize {
        self.0.world()
    }

    fn all_reduce_sum(&self, be: &B, buf: &mut B::Buf) -> Result<()> {
        match B::host_mut(buf) {
            Some(host) => self.0.all_reduce_sum_f32(host)?,
            None => {
                let mut host = be.to_host(buf)?;
                self.0.all_reduce_sum_f32(&mut host)?;
                be.write(buf, 0, &host)?;
            }
        }
        Ok(())
    }

    fn all_gather(&self, be: &B, send: &B::Buf) -> Result<B::Buf> {
        let host = be.to_host(send)?;
        let mut recv = vec![0.0f32; host.len() * self.0.world()];
        self.0.all_gather_f32(&host, &mut recv)?;
        Ok(be.act_from_host(&recv)?)
    }
}
