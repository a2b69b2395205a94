//! The fused pointer-advance enqueue (`cu/queue.cu`) on the GPU, against its definition: five
//! enqueues into a shard of 8 rows (the fifth wraps to row 0), then a corrupted device pointer,
//! which must leave the shard untouched and set the error flag. It is not a `Backend` op (the
//! CPU has no device pointer), so it is checked against host bookkeeping, not against the CPU
//! backend. NOT YET RUN ON A GPU.

use super::report::Row;
use crate::cuda::launch::driver_err;
use crate::cuda::CudaBackend;
use crate::error::Result;
use half::f16;

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

pub(crate) fn check(cuda: &CudaBackend) -> Result<Vec<Row>> {
    let s = cuda.stream();
    let e = |what: &'static str| move |err| driver_err(what, err);
    let mut queue = s.alloc_zeros::<f16>(ROWS * DIM).map_err(e("alloc"))?;
    let mut queue_idx = s.clone_htod(&vec![-1i32; ROWS]).map_err(e("htod"))?;
    let mut ptr = s.clone_htod(&[0i32]).map_err(e("htod"))?;
    let mut error = s.clone_htod(&[0i32]).map_err(e("htod"))?;
    let (mut want_q, mut want_i, mut want_p) = (vec![0.0f32; ROWS * DIM], vec![-1i32; ROWS], 0usize);
    for step in 0..5 {
        let k = keys_of(step);
        let idx: Vec<i32> = (0..B as i32).map(|j| 100 * step as i32 + j).collect();
        let kh: Vec<f16> = k.iter().map(|&v| f16::from_f32(v)).collect();
        let kd = s.clone_htod(&kh).map_err(e("htod"))?;
        let id = s.clone_htod(&idx).map_err(e("htod"))?;
        cuda.kernels().queue.enqueue(
            s,
            ROWS,
            DIM,
            &kd.as_view(),
            &id.as_view(),
            &mut queue.as_view_mut(),
            &mut queue_idx.as_view_mut(),
            &mut ptr.as_view_mut(),
            &mut error.as_view_mut(),
        )?;
        want_q[want_p * DIM..(want_p + B) * DIM].copy_from_slice(&k);
        want_i[want_p..want_p + B].copy_from_slice(&idx);
        want_p = (want_p + B) % ROWS;
    }
    let got_q: Vec<f32> = s.clone_dtoh(&queue).map_err(e("dtoh"))?.iter().map(|v| v.to_f32()).collect();
    let got_i = s.clone_dtoh(&queue_idx).map_err(e("dtoh"))?;
    let got_p = s.clone_dtoh(&ptr).map_err(e("dtoh"))?[0];
    let got_e = s.clone_dtoh(&error).map_err(e("dtoh"))?[0];
    let mut rows = vec![row(
        "queue_enqueue x5 into 8 rows (wraps), keys, indices and device pointer",
        got_q == want_q && got_i == want_i && got_p == want_p as i32 && got_e == 0,
        format!("pointer {got_p} (want {want_p}), error flag {got_e}"),
    )];

    // A pointer that is not a multiple of the batch: nothing written, error 2.
    s.memcpy_htod(&[1i32], &mut ptr).map_err(e("htod"))?;
    let kd = s.clone_htod(&vec![f16::from_f32(-1.0); B * DIM]).map_err(e("htod"))?;
    let id = s.clone_htod(&[7i32, 7]).map_err(e("htod"))?;
    cuda.kernels().queue.enqueue(
        s,
        ROWS,
        DIM,
        &kd.as_view(),
        &id.as_view(),
        &mut queue.as_view_mut(),
        &mut queue_idx.as_view_mut(),
        &mut ptr.as_view_mut(),
        &mut error.as_view_mut(),
    )?;
    let after_q: Vec<f32> = s.clone_dtoh(&queue).map_err(e("dtoh"))?.iter().map(|v| v.to_f32()).collect();
    let after_e = s.clone_dtoh(&error).map_err(e("dtoh"))?[0];
    rows.push(row(
        "queue_enqueue with a corrupted pointer writes nothing and flags it",
        after_q == want_q && after_e == 2,
        format!("error flag {after_e} ({})", crate::cuda::queue::describe_error(after_e)),
    ));
    Ok(rows)
}
