//! Collectives on the backend's own buffers: with one installed ([`Moco::dev_comm`]), the step's
//! two large exchanges, the gradient all-reduce and the key all-gather, run on device memory
//! (NCCL on the GPU) instead of going through host copies and the TCP ring. The small ones
//! (SyncBN moments, image indices, the inf/NaN verdict, the loss) stay on the host [`Comm`].
//!
//! [`Moco::dev_comm`]: super::Moco::dev_comm
//! [`Comm`]: super::comm::Comm

use super::comm::{all_gather_buf, all_reduce_buf};
use crate::collective::{AsComm, Collective};
use crate::error::Result;
use moco_kernels::Backend;
use std::sync::Arc;

pub trait DeviceComm<B: Backend>: Send {
    fn world(&self) -> usize;
    /// In place: every rank's `buf` becomes the sum over ranks.
    fn all_reduce_sum(&self, be: &B, buf: &mut B::Buf) -> Result<()>;
    /// Every rank's `send`, concatenated in rank order, in a new activation buffer.
    fn all_gather(&self, be: &B, send: &B::Buf) -> Result<B::Buf>;

    /// Whether gradient buckets can be all-reduced while the backward runs
    /// ([`Self::all_reduce_bucket`]); false: the step all-reduces the whole buffer after it.
    fn overlaps_buckets(&self) -> bool {
        false
    }

    /// Starts the in-place sum over ranks of `buf[range]` (gradients the backward has
    /// finished), ordered after the work queued so far, without waiting for it.
    fn all_reduce_bucket(&self, _be: &B, _buf: &mut B::Buf, _range: std::ops::Range<usize>) -> Result<()> {
        Err(crate::error::WorkerError::Collective(
            "this device collective does not all-reduce gradient buckets (overlaps_buckets is false)".into(),
        ))
    }

    /// Orders the work queued from now on after every bucket started.
    fn join_buckets(&self, _be: &B) -> Result<()> {
        Ok(())
    }

    /// After a host wait: an error if the collective was aborted meanwhile (NCCL's watchdog),
    /// because the values the wait returned may then be garbage.
    fn check(&self) -> Result<()> {
        Ok(())
    }
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
        all_reduce_buf(be, &AsComm(self.0.as_ref()), buf)
    }

    fn all_gather(&self, be: &B, send: &B::Buf) -> Result<B::Buf> {
        all_gather_buf(be, &AsComm(self.0.as_ref()), send)
    }
}
