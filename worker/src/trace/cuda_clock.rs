//! [`CudaClock`]: span times from CUDA events on the backend's stream, so a phase's time is the
//! GPU time between the points where the host queued its first and last work, not the time the
//! host took to queue it.
//!
//! STATUS: compiled, NOT YET RUN ON A GPU (no GPU where it was written).

use super::DeviceClock;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use std::collections::HashMap;
use std::sync::Arc;

/// Events recorded on one stream, timed against an origin event that was recorded on an idle
/// stream at a known host time.
pub struct CudaClock {
    stream: Arc<CudaStream>,
    origin: CudaEvent,
    /// Host time of `origin`, in µs on the recorder's clock.
    origin_us: f64,
    pending: HashMap<u64, CudaEvent>,
    next: u64,
}

impl CudaClock {
    /// A clock on `stream`. Waits for the stream to drain so the origin event's device time
    /// matches `host_now_us` (the trace's host clock now; `Guard::host_now_us`).
    pub fn new(stream: Arc<CudaStream>, host_now_us: f64) -> Result<CudaClock, String> {
        stream.synchronize().map_err(|e| format!("cuStreamSynchronize: {e:?}"))?;
        let origin = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| format!("cuEventRecord: {e:?}"))?;
        Ok(CudaClock { stream, origin, origin_us: host_now_us, pending: HashMap::new(), next: 0 })
    }
}

impl DeviceClock for CudaClock {
    fn mark(&mut self) -> Option<u64> {
        let ev = self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ok()?;
        let id = self.next;
        self.next += 1;
        self.pending.insert(id, ev);
        Some(id)
    }

    fn time_us(&mut self, mark: u64) -> Option<f64> {
        let ev = self.pending.remove(&mark)?;
        // elapsed_ms synchronises on both events first.
        let ms = self.origin.elapsed_ms(&ev).ok()?;
        Some(self.origin_us + ms as f64 * 1e3)
    }
}
