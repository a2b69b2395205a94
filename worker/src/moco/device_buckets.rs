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

use super::bucket_cursor::BucketCursor;
use super::device_comm::DeviceComm;
use crate::error::Result;
use moco_kernels::Backend;

pub struct DeviceBuckets(pub BucketCursor);

impl DeviceBuckets {
    pub fn new(bucket: usize) -> DeviceBuckets {
        DeviceBuckets(BucketCursor::new(bucket))
    }

    /// Starts a step over a gradient buffer of `len` elements.
    pub fn begin(&mut self, len: usize) {
        self.0.begin(len);
    }

    pub fn active(&self) -> bool {
        self.0.active()
    }

    /// Gradients from `start` to the end are final: start what has grown past a bucket.
    pub fn ready<B: Backend>(
        &mut self,
        dc: &dyn DeviceComm<B>,
        be: &B,
        grads: &mut B::Buf,
        start: usize,
    ) -> Result<()> {
        match self.0.ready(start) {
            Some(range) => dc.all_reduce_bucket(be, grads, range),
            None => Ok(()),
        }
    }

    /// Starts the rest and orders the backend's later work after every bucket.
    pub fn finish<B: Backend>(&mut self, dc: &dyn DeviceComm<B>, be: &B, grads: &mut B::Buf) -> Result<()> {
        if let Some(range) = self.0.rest() {
            dc.all_reduce_bucket(be, grads, range)?;
        }
        dc.join_buckets(be)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moco_kernels::cpu::Cpu;
    use std::sync::Mutex;

    /// Records the ranges it is asked to all-reduce, and the joins.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl DeviceComm<Cpu> for Recorder {
        fn world(&self) -> usize {
            2
        }
        fn all_reduce_sum(&self, _be: &Cpu, _buf: &mut <Cpu as Backend>::Buf) -> Result<()> {
            unreachable!("the buckets never reduce the whole buffer")
        }
        fn all_gather(&self, _be: &Cpu, _send: &<Cpu as Backend>::Buf) -> Result<<Cpu as Backend>::Buf> {
            unreachable!("not a gather")
        }
        fn all_gather_f32(&self, _be: &Cpu, _send: &<Cpu as Backend>::Buf) -> Result<<Cpu as Backend>::Buf> {
            unreachable!("not a gather")
        }
        fn reduce_scatter_sum_f32(
            &self,
            _be: &Cpu,
            _send: &<Cpu as Backend>::Buf,
        ) -> Result<<Cpu as Backend>::Buf> {
            unreachable!("not a reduce-scatter")
        }
        fn overlaps_buckets(&self) -> bool {
            true
        }
        fn all_reduce_bucket(
            &self,
            _be: &Cpu,
            _buf: &mut <Cpu as Backend>::Buf,
            range: std::ops::Range<usize>,
        ) -> Result<()> {
            self.0.lock().unwrap().push(format!("{range:?}"));
            Ok(())
        }
        fn join_buckets(&self, _be: &Cpu) -> Result<()> {
            self.0.lock().unwrap().push("join".into());
            Ok(())
        }
    }

    #[test]
    fn buckets_cover_the_buffer_once_from_its_end_and_the_optimiser_joins_them() {
        let be = Cpu { amp: false };
        let mut grads = be.zeros_master(100).unwrap();
        let rec = Recorder::default();
        let mut b = DeviceBuckets::new(30);
        // Inactive (not the overlapped backward): nothing is sent.
        b.ready(&rec, &be, &mut grads, 50).unwrap();
        assert!(rec.0.lock().unwrap().is_empty());
        b.begin(100);
        // Finished suffixes as a backward reports them: 90 (too small), 60, 55, 20, 0.
        for start in [90, 60, 55, 20] {
            b.ready(&rec, &be, &mut grads, start).unwrap();
        }
        b.finish(&rec, &be, &mut grads).unwrap();
        assert_eq!(*rec.0.lock().unwrap(), ["60..100", "20..60", "0..20", "join"]);
        assert_eq!(b.0.buckets, 3);
        assert!(!b.active());
    }
}
