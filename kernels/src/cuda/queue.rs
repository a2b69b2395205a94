//! Launch of `cu/queue.cu`: the MoCo queue shard's fused pointer-advance enqueue.
//! Compiled, not yet run on a GPU.

use crate::cuda::launch::{expect_len, to_i32, Kernel, KernelDef, Param::*};
use crate::cuda::sources::{self, KernelSource};
use crate::error::{KernelError, Result};
use crate::launch;
use cudarc::driver::{CudaModule, CudaStream, CudaView, CudaViewMut, LaunchConfig};
use half::f16;
use std::sync::Arc;

pub const SOURCE: KernelSource = sources::QUEUE;

pub static ENQUEUE: KernelDef =
    KernelDef { name: "queue_enqueue_f16", params: &[I32, I32, I32, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr] };

pub static DEFS: &[&KernelDef] = &[&ENQUEUE];

/// What a non-zero error flag written by the enqueue kernel means (codes of queue.cu).
pub fn describe_error(code: i32) -> &'static str {
    match code {
        0 => "no error",
        1 => "the batch size does not divide the queue shard's rows",
        2 => "the queue pointer is out of range or not a multiple of the batch size",
        3 => "the enqueue kernel was launched with more than one block",
        _ => "unknown queue error code",
    }
}

/// The queue kernel of one device.
#[derive(Debug)]
pub struct Queue {
    enqueue: Kernel,
}

/// The one-block launch the enqueue needs (see queue.cu for why).
fn one_block() -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 }
}

impl Queue {
    pub fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Queue { enqueue: Kernel::load(module, &ENQUEUE)? })
    }

    /// Writes `keys` (`[b, dim]`) and `key_idx` (`[b]`) at rows `[ptr, ptr + b)` of the shard
    /// `queue` (`[rows, dim]`) / `queue_idx` (`[rows]`) and advances `ptr` (one device int) to
    /// `(ptr + b) % rows`, all on the device. `rows % b == 0` is required (and checked here
    /// too); a bad device pointer makes the kernel write nothing and set `error` (one device
    /// int, see [`describe_error`]), which the caller reads when it next syncs.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &self,
        stream: &CudaStream,
        rows: usize,
        dim: usize,
        keys: &CudaView<'_, f16>,
        key_idx: &CudaView<'_, i32>,
        queue: &mut CudaViewMut<'_, f16>,
        queue_idx: &mut CudaViewMut<'_, i32>,
        ptr: &mut CudaViewMut<'_, i32>,
        error: &mut CudaViewMut<'_, i32>,
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
        let (rows_i, dim_i, b_i) = (rows as i32, dim as i32, b as i32);
        // SAFETY: keys hold b*dim fp16 values and key_idx b ints; queue holds rows*dim fp16
        // values and queue_idx rows ints; ptr and error one int each (all checked above). The
        // kernel writes rows [p, p + b) only after checking on the device that rows % b == 0
        // and that p is a multiple of b inside [0, rows), so p + b <= rows; it runs as the one
        // block it requires.
        unsafe {
            launch!(
                stream,
                &self.enqueue,
                one_block(),
                &rows_i,
                &dim_i,
                &b_i,
                keys,
                key_idx,
                queue,
                queue_idx,
                ptr,
                error
            )
        }
    }
}
