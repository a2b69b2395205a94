//! Gradient buckets all-reduced by a device collective while the backward still runs (NCCL:
//! on a second stream, ordered by events; see `collective::nccl`). The host-ring path does the
//! same with host copies and a thread (`grad_sync`).
//!
//! The backward finishes parameter gradients from the end of the flat layout towards its start;
//! each time the finished suffix has grown by a bucket, that range is handed to
//! [`DeviceComm::all_reduce_bucket`], which queues its all-reduce behind the kernels that wrote
//! it and returns. [`DeviceBuckets::finish`] starts the rest and orders the optimiser after
//! every bucket. Each element is summed over ranks exactly once, as one all-reduce of the whole
//! buffer would: on the emulated NCCL (rank-order sums) the result is bit-identical
//! (tests/tests/emulated_cuda.rs); real NCCL may pick another ring/tree split per call size, so
//! with more than two ranks the last bits can differ there (two ranks: one addition, equal).

use super::device_comm::DeviceComm;
use crate::error::Result;
use moco_kernels::Backend;

pub struct DeviceBuckets {
    bucket: usize,
    /// Gradients at offsets >= this have been started in this step (usize::MAX: no step).
    sent_from: usize,
    /// Buckets started in the current step.
    pub buckets: usize,
}

impl DeviceBuckets {
    pub fn new(bucket: usize) -> DeviceBuckets {
        DeviceBuckets { bucket: bucket.max(1), sent_from: usize::MAX, buckets: 0 }
    }

    /// Starts a step over a gradient buffer of `len` elements.
    pub fn begin(&mut self, len: usize) {
        self.sent_from = len;
        self.buckets = 0;
    }

    pub fn active(&self) -> bool {
        self.sent_from != usize::MAX
    }

    /// Gradients from `start` to the end are final: start what has grown past a bucket.
    pub fn ready<B: Backend>(
        &mut self,
        dc: &dyn DeviceComm<B>,
        be: &B,
        grads: &mut B::Buf,
        start: usize,
    ) -> Result<()> {
        if self.active() && start < self.sent_from && self.sent_from - start >= self.bucket {
            dc.all_reduce_bucket(be, grads, start..self.sent_from)?;
            self.sent_from = start;
            self.buckets += 1;
        }
        Ok(())
    }

    /// Starts the rest and orders the backend's later work after every bucket.
    pub fn finish<B: Backend>(&mut self, dc: &dyn DeviceComm<B>, be: &B, grads: &mut B::Buf) -> Result<()> {
        if self.active() && self.sent_from > 0 {
            dc.all_reduce_bucket(be, grads, 0..self.sent_from)?;
            self.buckets += 1;
        }
        self.sent_from = usize::MAX;
        dc.join_buckets(be)
    }
}
