//! Launch of `cu/queue.cu`: the MoCo queue shard's fused pointer-advance enqueue, one entry
//! point per queue precision (fp16, fp32). Run on the emulated CUDA device only; not yet run on
//! a GPU.

use crate::cuda::launch::{expect_len, kernel_pair, to_i32, Elem, KernelPair, KernelPairDef, Param::*};
use crate::cuda::sources::{self, KernelSource};
use crate::error::{KernelError, Result};
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::QUEUE;

pub static ENQUEUE: KernelPairDef =
    kernel_pair!("queue_enqueue", [I32, I32, I32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr]);

pub static DEFS: &[&crate::cuda::launch::KernelDef] = &[&ENQUEUE.f16, &ENQUEUE.f32];

/// What a non-zero error flag written by the enqueue means (the codes of queue.cu; the same
/// codes as the CPU backend's `queue_enqueue`).
pub fn describe_error(code: f32) -> &'static str {
    crate::backend::describe_queue_error(code)
}

/// The queue kernels of one device.
#[derive(Debug)]
pub struct Queue {
    enqueue: KernelPair,
}

/// The one-block launch the enqueue needs (see queue.cu for why).
fn one_block() -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 }
}

impl Queue {
    pub fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Queue { enqueue: KernelPair::load(module, &ENQUEUE)? })
    }

    /// Writes `keys` (`[b, dim]`, the queue's precision T) and `key_idx` (`[b]`) at rows
    /// `[ptr, ptr + b)` of the shard `queue` (`[rows, dim]`) / `queue_idx` (`[rows]`) and
    /// advances `ptr` (one device float) to `(ptr + b) % rows`, all on the device, copying the
    /// rows it overwrites and the pointer it found to `saved_*` (`[b, dim]`, `[b]`, `[1]`).
    /// `rows % b == 0` is required (and checked here too); a bad device pointer makes the
    /// kernel write nothing and set `error` (one device float, see [`describe_error`]), which
    /// the caller reads when it next syncs.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue<T: Elem>(
        &self,
        stream: &CudaStream,
        rows: usize,
        dim: usize,
        keys: &CudaView<'_, T>,
        key_idx: &CudaView<'_, f32>,
        queue: &mut CudaViewMut<'_, T>,
        queue_idx: &mut CudaViewMut<'_, f32>,
        ptr: &mut CudaViewMut<'_, f32>,
        error: &mut CudaViewMut<'_, f32>,
        saved_keys: &mut CudaViewMut<'_, T>,
        [saved_idx, saved_ptr]: [&mut CudaViewMut<'_, f32>; 2],
    ) -> Result<()> {
        const OP: &str = "queue_enqueue";
        let b = key_idx.len();
        if rows.checked_rem(b) != Some(0) {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!("{b} keys per enqueue do not divide the shard's {rows} rows"),
            });
        }
        to_i32(OP, "queue", rows * dim)?;
        expect_len(OP, "keys", keys.len(), b * dim)?;
        expect_len(OP, "queue", queue.len(), rows * dim)?;
        expect_len(OP, "queue_idx", queue_idx.len(), rows)?;
        expect_len(OP, "ptr", ptr.len(), 1)?;
        expect_len(OP, "error", error.len(), 1)?;
        expect_len(OP, "saved_keys", saved_keys.len(), b * dim)?;
        expect_len(OP, "saved_idx", saved_idx.len(), b)?;
        expect_len(OP, "saved_ptr", saved_ptr.len(), 1)?;
        let (rows_i, dim_i, b_i) = (rows as i32, dim as i32, b as i32);
        // SAFETY: keys and saved_keys hold b*dim values of T, key_idx and saved_idx b floats;
        // queue holds rows*dim values
        // of T and queue_idx rows floats; ptr, error and saved_ptr one float each (all checked above). The
        // kernel writes rows [p, p + b) only after checking on the device that rows % b == 0
        // and that p is an integer multiple of b inside [0, rows), so p + b <= rows; it runs as
        // the one block it requires.
        unsafe {
            launch!(
                stream,
                self.enqueue.of::<T>(),
                one_block(),
                &rows_i,
                &dim_i,
                &b_i,
                keys,
                key_idx,
                queue,
                queue_idx,
                ptr,
                error,
                saved_keys,
                saved_idx,
                saved_ptr
            )
        }
    }
}
