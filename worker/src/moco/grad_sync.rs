//! Gradient all-reduce in buckets that start during the backward (DESIGN.md data flow: "backward
//! with gradient buckets all-reduced as they become ready").
//!
//! The backward finishes parameter gradients from the end of the flat layout towards its start
//! (predictor, projector, last block, ..., stem). On the last micro-batch of an optimiser step,
//! each time the finished suffix has grown by a bucket, it is copied out and handed to a
//! communication thread that all-reduces it on a collective of its own (so it never interleaves
//! with the SyncBN reductions the backward makes on the main one). `finish` sends the rest,
//! waits, and writes the sums back. Every element is still summed in rank order, so the result
//! is bit-identical to one all-reduce of the whole buffer.

use super::bucket_cursor::BucketCursor;
use crate::collective::Collective;
use crate::error::{Result, WorkerError};
use moco_kernels::Backend;
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Default bucket: 1 Mi floats (4 MiB), large enough to amortise a ring pass, small enough that
/// the first bucket leaves while most of the backward is still to run.
pub const BUCKET_FLOATS: usize = 1 << 20;

type Job = (Range<usize>, Vec<f32>);

pub struct GradSync {
    tx: Option<Sender<Job>>,
    done: Receiver<Result<Job>>,
    worker: Option<JoinHandle<()>>,
    cursor: BucketCursor,
    in_flight: usize,
}

impl GradSync {
    pub fn new(coll: Arc<dyn Collective>, bucket: usize) -> Result<GradSync> {
        let (tx, rx) = channel::<Job>();
        let (done_tx, done) = channel();
        let worker = std::thread::Builder::new()
            .name("grad-allreduce".into())
            .spawn(move || {
                for (range, mut v) in rx {
                    let r = coll.all_reduce_sum_f32(&mut v).map(|()| (range, v)).map_err(WorkerError::from);
                    if done_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| WorkerError::io("starting the gradient all-reduce thread", e))?;
        Ok(GradSync {
            tx: Some(tx),
            done,
            worker: Some(worker),
            cursor: BucketCursor::new(bucket),
            in_flight: 0,
        })
    }

    /// Start a step over a gradient buffer of `len` elements.
    pub fn begin(&mut self, len: usize) {
        self.cursor.begin(len);
        self.in_flight = 0;
    }

    pub fn active(&self) -> bool {
        self.cursor.active()
    }

    /// Buckets sent in the current step (for tests and the trace).
    pub fn buckets(&self) -> usize {
        self.cursor.buckets
    }

    fn send(&mut self, range: Range<usize>, data: Vec<f32>) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| WorkerError::Collective("gradient all-reduce thread stopped".into()))?;
        tx.send((range, data))
            .map_err(|_| WorkerError::Collective("gradient all-reduce thread stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Gradients from `start` to the end are final: send what has grown past a bucket.
    pub fn ready<B: Backend>(&mut self, be: &B, grads: &B::Buf, start: usize) -> Result<()> {
        if let Some(range) = self.cursor.ready(start) {
            let data = be.to_host_range(grads, range.clone())?;
            self.send(range, data)?;
        }
        Ok(())
    }

    /// Send the rest, wait for every bucket, and write the sums into `grads`.
    pub fn finish<B: Backend>(&mut self, be: &B, grads: &mut B::Buf) -> Result<()> {
        if let Some(range) = self.cursor.rest() {
            let data = be.to_host_range(grads, range.clone())?;
            self.send(range, data)?;
        }
        let mut first_err = None;
        while self.in_flight > 0 {
            self.in_flight -= 1;
            match self.done.recv() {
                Ok(Ok((range, v))) => be.write(grads, range.start, &v)?,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err
                        .get_or_insert(WorkerError::Collective("gradient all-reduce thread died".into()));
                    break;
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for GradSync {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
