//! Collectives on the backend's own buffers: with one installed ([`Moco::dev_comm`]), every
//! exchange of the step that carries device data runs on device memory (NCCL on the GPU)
//! instead of going through host copies and the TCP ring: the gradient all-reduce, the key and
//! query all-gathers, the images' dataset indices (fp32, for own-image masking on the device),
//! the loss's (max, sum-exp) pairs and log-sum-exp, the queue gradient's reduce-scatter, SyncBN's
//! moments and the inf/NaN verdict. Without one they use the host [`Comm`] (see `state.rs`).
//!
//! [`Moco::dev_comm`]: super::Moco::dev_comm
//! [`Comm`]: super::comm::Comm

use super::comm::{all_gather_buf, all_reduce_buf, Comm};
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

    /// Every rank's fp32 `send` (a `zeros_master` buffer), concatenated in rank order, in a new
    /// fp32 buffer: nothing is rounded to the activation precision (the loss's (max, sum-exp)
    /// pairs and log-sum-exp).
    fn all_gather_f32(&self, be: &B, send: &B::Buf) -> Result<B::Buf>;
    /// fp32 `send` of `world * L` elements; returns the `L`-element fp32 sum over ranks of
    /// their `send[rank * L..(rank + 1) * L]` (the queue gradient back to the queries' owners).
    fn reduce_scatter_sum_f32(&self, be: &B, send: &B::Buf) -> Result<B::Buf>;
}

/// Through host buffers and a host collective: what the step does without a device collective,
/// behind this interface, so the CPU tests can check the step's device-collective path (the
/// NCCL one has the same shape; it runs on the emulated device).
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

    fn all_gather_f32(&self, be: &B, send: &B::Buf) -> Result<B::Buf> {
        let send = be.to_host(send)?;
        let mut recv = vec![0.0f32; send.len() * self.0.world()];
        AsComm(self.0.as_ref()).all_gather(&send, &mut recv)?;
        Ok(be.from_host(&recv)?)
    }

    fn reduce_scatter_sum_f32(&self, be: &B, send: &B::Buf) -> Result<B::Buf> {
        let send = be.to_host(send)?;
        let mut recv = vec![0.0f32; send.len() / self.0.world().max(1)];
        AsComm(self.0.as_ref()).reduce_scatter_sum(&send, &mut recv)?;
        Ok(be.from_host(&recv)?)
    }
}
