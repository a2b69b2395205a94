//! Page-locked staging for large uploads (the input batches, a few MB per view): the values are
//! written once into pinned host memory (converted to fp16 on the way under AMP) and copied by
//! one asynchronous DMA transfer, so the host returns at once instead of waiting for the driver
//! to stage pageable memory itself. Compiled, NOT YET RUN on a GPU.
//!
//! Two buffers per element type, used in turn (a step uploads two views back to back). Event
//! tracking is off in this backend's context (one stream), so cudarc does not record when a
//! copy from a pinned buffer has finished: each slot records its own event after queuing the
//! copy and waits on it before the host writes the buffer again.

use crate::cuda::launch::driver_err;
use crate::error::{KernelError, Result};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};
use half::f16;
use std::sync::{Arc, Mutex};

/// Uploads of at least this many values go through pinned memory; smaller ones (parameters at
/// start-up, small heads) are not worth a page-locked buffer.
pub(crate) const STAGE_MIN: usize = 1 << 16;

struct Slot<T> {
    host: PinnedHostSlice<T>,
    /// Recorded after the last copy from `host` was queued.
    done: CudaEvent,
}

struct Ring<T> {
    slots: [Option<Slot<T>>; 2],
    next: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring { slots: [None, None], next: 0 }
    }
}

// SAFETY: a PinnedHostSlice is a host allocation owned by this value alone (no aliasing); the
// ring is only reached through a Mutex, so one thread at a time writes or reads it.
unsafe impl<T: Send> Send for Ring<T> {}

#[derive(Default)]
pub(crate) struct Staging {
    f32: Mutex<Ring<f32>>,
    f16: Mutex<Ring<f16>>,
}

impl Staging {
    /// Copy `data` (f32) into `dst` through a pinned buffer.
    pub(crate) fn upload_f32(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        data: &[f32],
        dst: &mut CudaSlice<f32>,
    ) -> Result<()> {
        stage(&self.f32, ctx, stream, data.len(), |h| h.copy_from_slice(data), dst)
    }

    /// Round `data` to fp16 straight into a pinned buffer and copy it into `dst`.
    pub(crate) fn upload_f16(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        data: &[f32],
        dst: &mut CudaSlice<f16>,
    ) -> Result<()> {
        use half::slice::HalfFloatSliceExt;
        stage(&self.f16, ctx, stream, data.len(), |h| h.convert_from_f32_slice(data), dst)
    }
}

fn stage<T: DeviceRepr + ValidAsZeroBits>(
    ring: &Mutex<Ring<T>>,
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    len: usize,
    fill: impl FnOnce(&mut [T]),
    dst: &mut CudaSlice<T>,
) -> Result<()> {
    if dst.len() != len {
        return Err(KernelError::Shape {
            op: "upload",
            detail: format!("{len} values for a buffer of {}", dst.len()),
        });
    }
    let mut ring = ring.lock().map_err(|_| KernelError::Cuda {
        op: "upload",
        detail: "the staging buffers' lock was poisoned by a panic elsewhere".into(),
    })?;
    let i = ring.next;
    ring.next ^= 1;
    let slot = &mut ring.slots[i];
    if let Some(s) = slot.as_ref() {
        // The copy queued from this buffer last time must be over before it is rewritten
        // (and before it is freed, when the size changed).
        s.done.synchronize().map_err(|e| driver_err("cuEventSynchronize", e))?;
    }
    if slot.as_ref().is_none_or(|s| s.host.len() != len) {
        *slot = None;
        // SAFETY: the pinned memory is uninitialised; every element is written by `fill`
        // below before the copy reads it.
        let host = unsafe { ctx.alloc_pinned::<T>(len) }.map_err(|e| driver_err("cuMemHostAlloc", e))?;
        let done = ctx.new_event(None).map_err(|e| driver_err("cuEventCreate", e))?;
        *slot = Some(Slot { host, done });
    }
    let Some(s) = slot.as_mut() else {
        return Err(KernelError::Cuda { op: "upload", detail: "no staging buffer".into() });
    };
    // Its event was synchronised above; no copy from it is pending.
    fill(s.host.as_mut_slice().map_err(|e| driver_err("pinned buffer", e))?);
    stream.memcpy_htod(&s.host, dst).map_err(|e| driver_err("memcpy_htod", e))?;
    s.done.record(stream).map_err(|e| driver_err("cuEventRecord", e))
}
