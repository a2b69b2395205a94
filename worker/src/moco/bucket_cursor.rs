//! Where gradient buckets start during the backward, shared by the host-ring path
//! ([`super::grad_sync`]) and the device-collective path ([`super::device_buckets`]).
//!
//! The backward finishes parameter gradients from the end of the flat layout towards its start;
//! each time the finished suffix has grown by a bucket, that range is due. The rest is due at the
//! end of the backward. Every element lands in exactly one range.

use std::ops::Range;

pub struct BucketCursor {
    bucket: usize,
    /// Gradients at offsets >= this have been handed out in this step (usize::MAX: no step).
    sent_from: usize,
    /// Ranges handed out in the current step (for tests, counters and the trace).
    pub buckets: usize,
}

impl BucketCursor {
    pub fn new(bucket: usize) -> BucketCursor {
        BucketCursor { bucket: bucket.max(1), sent_from: usize::MAX, buckets: 0 }
    }

    /// Starts a step over a gradient buffer of `len` elements.
    pub fn begin(&mut self, len: usize) {
        self.sent_from = len;
        self.buckets = 0;
    }

    pub fn active(&self) -> bool {
        self.sent_from != usize::MAX
    }

    /// Gradients from `start` to the end are final: the range that has grown past a bucket, if
    /// any, is now due.
    pub fn ready(&mut self, start: usize) -> Option<Range<usize>> {
        if self.active() && start < self.sent_from && self.sent_from - start >= self.bucket {
            let range = start..self.sent_from;
            self.sent_from = start;
            self.buckets += 1;
            return Some(range);
        }
        None
    }

    /// Ends the step: the range not yet handed out, if any.
    pub fn rest(&mut self) -> Option<Range<usize>> {
        let range = (self.active() && self.sent_from > 0).then_some(0..self.sent_from);
        if range.is_some() {
            self.buckets += 1;
        }
        self.sent_from = usize::MAX;
        range
    }
}
