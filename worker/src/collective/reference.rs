//! The single-process definition of every collective's result. The ring must equal these bit
//! for bit; tests (here and in other parts) compare against them.
//!
//! `inputs[r]` is rank r's buffer.

use half::f16;

/// Element-wise `((x0 + x1) + x2) + ...` in rank order.
pub fn all_reduce_sum_f32(inputs: &[Vec<f32>]) -> Vec<f32> {
    let mut acc = inputs.first().cloned().unwrap_or_default();
    for x in inputs.iter().skip(1) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += *v;
        }
    }
    acc
}

/// f16 inputs summed in f32 in rank order, rounded to f16 once.
pub fn all_reduce_sum_f16(inputs: &[Vec<f16>]) -> Vec<f16> {
    let wide: Vec<Vec<f32>> = inputs.iter().map(|x| x.iter().map(|v| v.to_f32()).collect()).collect();
    all_reduce_sum_f32(&wide).into_iter().map(f16::from_f32).collect()
}

/// Every rank's buffer, concatenated in rank order.
pub fn all_gather<T: Copy>(inputs: &[Vec<T>]) -> Vec<T> {
    inputs.concat()
}

/// What rank `rank` receives: the rank-order sum of chunk `rank` (of `len` elements) of every
/// rank's send buffer.
pub fn reduce_scatter_sum_f32(inputs: &[Vec<f32>], rank: usize, len: usize) -> Vec<f32> {
    let chunks: Vec<Vec<f32>> = inputs.iter().map(|x| x[rank * len..(rank + 1) * len].to_vec()).collect();
    all_reduce_sum_f32(&chunks)
}
