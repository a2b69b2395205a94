//! Elementwise ops on flat buffers. Memory-bound; split into fixed chunks of
//! [`FLAT_CHUNK`] elements across the rayon pool.

use super::batchnorm::relu;
use super::scratch::FLAT_CHUNK;
use super::simd::avx2_fn;
use half::f16;
use rayon::prelude::*;

fn same_len(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "{op}: operands have {a} and {b} elements");
}

// The two loop shapes, as macros rather than generic functions: the loop closures must be
// written inside the calling function for `avx2_fn!` to compile them with AVX2 (a closure
// takes the target features of the function it is written in).

/// y = f(x, y) elementwise: `zip_map!(x, y, |xv, yv| expr)`.
macro_rules! zip_map {
    ($x:expr, $y:expr, |$xv:ident, $yv:pat_param| $e:expr) => {
        $y.par_chunks_mut(FLAT_CHUNK).zip($x.par_chunks(FLAT_CHUNK)).for_each(|(yc, xc)| {
            yc.iter_mut().zip(xc).for_each(|(y, x)| {
                let ($xv, $yv) = (*x, *y);
                *y = $e;
            })
        })
    };
}

/// x = f(x) elementwise: `map_inplace!(x, |v| expr)`.
macro_rules! map_inplace {
    ($x:expr, |$v:ident| $e:expr) => {
        $x.par_chunks_mut(FLAT_CHUNK).for_each(|c| {
            c.iter_mut().for_each(|p| {
                let $v = *p;
                *p = $e;
            })
        })
    };
}

avx2_fn! {
/// x = max(x, 0) in place (NaN passes through, so overflow stays visible).
pub fn relu_inplace(x: &mut [f32]) {
    map_inplace!(x, |v| relu(v));
}
}

avx2_fn! {
/// dx = dy where y > 0 else 0 (y is the ReLU output). Overwrites dx.
pub fn relu_bwd(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    same_len("relu_bwd", y.len(), dx.len());
    same_len("relu_bwd", dy.len(), dx.len());
    dx.par_chunks_mut(FLAT_CHUNK).zip(y.par_chunks(FLAT_CHUNK)).zip(dy.par_chunks(FLAT_CHUNK)).for_each(
        |((dxc, yc), dyc)| {
            for ((d, y), g) in dxc.iter_mut().zip(yc).zip(dyc) {
                *d = if *y > 0.0 { *g } else { 0.0 };
            }
        },
    );
}
}

avx2_fn! {
/// y += x.
pub fn add_inplace(x: &[f32], y: &mut [f32]) {
    same_len("add_inplace", x.len(), y.len());
    zip_map!(x, y, |xv, yv| yv + xv);
}
}

avx2_fn! {
/// y = alpha * x + beta * y. With beta = 0, y is not read (BLAS semantics: a NaN or inf
/// already in y does not survive an overwrite).
pub fn axpby(alpha: f32, x: &[f32], beta: f32, y: &mut [f32]) {
    same_len("axpby", x.len(), y.len());
    if beta == 0.0 {
        zip_map!(x, y, |xv, _| alpha * xv);
    } else {
        zip_map!(x, y, |xv, yv| alpha * xv + beta * yv);
    }
}
}

/// y = x, split over the pool: the master-weight copies and the gradient buffer are whole
/// parameter sets (25 M elements at full width), which one core copies at half the speed of two.
pub fn copy(x: &[f32], y: &mut [f32]) {
    same_len("copy", x.len(), y.len());
    if x.len() <= FLAT_CHUNK {
        y.copy_from_slice(x);
    } else {
        y.par_chunks_mut(FLAT_CHUNK).zip(x.par_chunks(FLAT_CHUNK)).for_each(|(y, x)| y.copy_from_slice(x));
    }
}

/// x = value, split over the pool (the per-step zeroing of the whole gradient buffer).
pub fn fill(x: &mut [f32], value: f32) {
    if x.len() <= FLAT_CHUNK {
        x.fill(value);
    } else {
        x.par_chunks_mut(FLAT_CHUNK).for_each(|c| stream_fill(c, value));
    }
}

/// `c.fill(value)` with non-temporal stores: a large buffer written without being read (the
/// gradient buffer, far larger than the caches) then costs one pass over memory instead of two
/// (an ordinary store first reads each cache line in).
fn stream_fill(c: &mut [f32], value: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128, _mm_set1_ps, _mm_sfence, _mm_stream_ps};
        // SAFETY: every bit pattern is a valid f32 and a valid __m128, so viewing the aligned
        // middle of the slice as __m128 values is sound.
        let (head, body, tail) = unsafe { c.align_to_mut::<__m128>() };
        head.fill(value);
        tail.fill(value);
        // SAFETY: SSE is part of the x86_64 baseline; each pointer is a 16-byte-aligned element
        // of `body`, valid for writes. The fence orders the streaming stores before whatever
        // follows (rayon's join, which hands the buffer to other threads).
        unsafe {
            let v = _mm_set1_ps(value);
            for b in body.iter_mut() {
                _mm_stream_ps(b as *mut __m128 as *mut f32, v);
            }
            _mm_sfence();
        }
        return;
    }
    #[allow(unreachable_code)]
    c.fill(value);
}

avx2_fn! {
/// x *= alpha.
pub fn scale(x: &mut [f32], alpha: f32) {
    map_inplace!(x, |v| v * alpha);
}
}

/// Rounds every element to the nearest fp16 and back (round-to-nearest-even, overflow to
/// +-inf, as a CUDA `__float2half_rn` store would): the CPU's emulation of fp16 activations.
pub fn round_f16(x: &mut [f32]) {
    map_inplace!(x, |v| f16::from_f32(v).to_f32());
}
