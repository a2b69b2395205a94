//! The fused pointer-advance enqueue (`cu/queue.cu`) on the GPU, against its definition: five
//! enqueues into a shard of 8 rows (the fifth wraps to row 0), then a corrupted device pointer,
//! which must leave the shard untouched and set the error flag. It is not a `Backend` op (the
//! CPU has no device pointer), so it is checked against host bookkeeping, not against the CPU
//! backend. NOT YET RUN ON A GPU.

use super::report::Row;
use crate::cuda::launch::driver_err;
use crate::cuda::CudaBackend;
use crate::error::Result;
use cudarc::driver::{CudaSlice, CudaStream};
use half::f16;
use std::sync::Arc;

const ROWS: usize = 8;
const DIM: usize = 4;
const B: usize = 2;

fn row(op: &str, pass: bool, note: String) -> Row {
    Row {
        precision: "fp16",
        op: op.to_string(),
        max_abs: if pass { 0.0 } else { f64::INFINITY },
        max_rel: if pass { 0.0 } else { f64::INFINITY },
        tol: 0.0,
        pass,
        note,
    }
}

/// Keys of enqueue `step`: exact fp16 values, distinct per step, row and column.
fn keys_of(step: usize) -> Vec<f32> {
    (0..B * DIM).map(|j| (step * 16 + j) as f32 / 8.0).collect()
}

/// A queue shard on the device: keys, row indices, the write pointer and the error flag.
struct Shard {
    queue: CudaSlice<f16>,
    idx: CudaSlice<i32>,
    ptr: CudaSlice<i32>,
    error: CudaSlice<i32>,
}

fn htod<T: cudarc::driver::DeviceRepr>(s: &Arc<CudaStream>, data: &[T]) -> Result<CudaSlice<T>> {
    s.clone_htod(data).map_err(|e| driver_err("htod", e))
}

fn dtoh<T: cudarc::driver::DeviceRepr>(s: &Arc<CudaStream>, data: &CudaSlice<T>) -> Result<Vec<T>> {
    s.clone_dtoh(data).map_err(|e| driver_err("dtoh", e))
}

impl Shard {
    fn new(s: &Arc<CudaStream>) -> Result<Shard> {
        Ok(Shard {
            queue: s.alloc_zeros::<f16>(ROWS * DIM).map_err(|e| driver_err("alloc", e))?,
            idx: htod(s, &[-1i32; ROWS])?,
            ptr: htod(s, &[0i32])?,
            error: htod(s, &[0i32])?,
        })
    }

    /// One enqueue of host keys and indices, as training would issue it.
    fn enqueue(&mut self, cuda: &CudaBackend, keys: &[f16], idx: &[i32]) -> Result<()> {
        let s = cuda.stream();
        let (kd, id) = (htod(s, keys)?, htod(s, idx)?);
        cuda.kernels().queue.enqueue(
            s,
            ROWS,
            DIM,
            &kd.as_view(),
            &id.as_view(),
            &mut self.queue.as_view_mut(),
            &mut self.idx.as_view_mut(),
            &mut self.ptr.as_view_mut(),
            &mut self.error.as_view_mut(),
        )
    }

    /// (keys as f32, row indices, pointer, error flag).
    fn read(&self, s: &Arc<CudaStream>) -> Result<(Vec<f32>, Vec<i32>, i32, i32)> {
        let q = dtoh(s, &self.queue)?.iter().map(|v| v.to_f32()).collect();
        Ok((q, dtoh(s, &self.idx)?, dtoh(s, &self.ptr)?[0], dtoh(s, &self.error)?[0]))
    }
}

pub(crate) fn check(cuda: &CudaBackend) -> Result<Vec<Row>> {
    let s = cuda.stream();
    let mut shard = Shard::new(s)?;
    let (mut want_q, mut want_i, mut want_p) = (vec![0.0f32; ROWS * DIM], vec![-1i32; ROWS], 0usize);
    for step in 0..5 {
        let k = keys_of(step);
        let idx: Vec<i32> = (0..B as i32).map(|j| 100 * step as i32 + j).collect();
        let kh: Vec<f16> = k.iter().map(|&v| f16::from_f32(v)).collect();
        shard.enqueue(cuda, &kh, &idx)?;
        want_q[want_p * DIM..(want_p + B) * DIM].copy_from_slice(&k);
        want_i[want_p..want_p + B].copy_from_slice(&idx);
        want_p = (want_p + B) % ROWS;
    }
    let (got_q, got_i, got_p, got_e) = shard.read(s)?;
    let mut rows = vec![row(
        "queue_enqueue x5 into 8 rows (wraps), keys, indices and device pointer",
        got_q == want_q && got_i == want_i && got_p == want_p as i32 && got_e == 0,
        format!("pointer {got_p} (want {want_p}), error flag {got_e}"),
    )];

    // A pointer that is not a multiple of the batch: nothing written, error 2.
    s.memcpy_htod(&[1i32], &mut shard.ptr).map_err(|e| driver_err("htod", e))?;
    shard.enqueue(cuda, &[f16::from_f32(-1.0); B * DIM], &[7, 7])?;
    let (after_q, _, _, after_e) = shard.read(s)?;
    rows.push(row(
        "queue_enqueue with a corrupted pointer writes nothing and flags it",
        after_q == want_q && after_e == 2,
        format!("error flag {after_e} ({})", crate::cuda::queue::describe_error(after_e)),
    ));
    Ok(rows)
}
