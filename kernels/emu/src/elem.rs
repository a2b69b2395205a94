//! The element types the library stand-ins read and write in device memory (fp32 and fp16),
//! and the strided gathers/scatters between device memory and the f32 working copies they
//! compute on. Every computation accumulates in f32; fp16 values are widened on load and
//! rounded to nearest-even once, on the final store, as cuBLAS and cuDNN do for fp16 data with
//! fp32 compute.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 => 2,
        }
    }

    /// Reads element `i` of the array at `base`.
    ///
    /// # Safety
    /// `base + i * size` must be readable for one element of this type.
    #[inline]
    pub unsafe fn load(self, base: usize, i: usize) -> f32 {
        // SAFETY: the caller promises the element is readable; unaligned reads keep a
        // misaligned caller pointer from being undefined behaviour.
        unsafe {
            match self {
                Elem::F32 => std::ptr::read_unaligned((base as *const f32).add(i)),
                Elem::F16 => f16::from_bits(std::ptr::read_unaligned((base as *const u16).add(i))).to_f32(),
            }
        }
    }

    /// Writes element `i` of the array at `base` (fp16: rounded to nearest even).
    ///
    /// # Safety
    /// `base + i * size` must be writable for one element of this type.
    #[inline]
    pub unsafe fn store(self, base: usize, i: usize, v: f32) {
        // SAFETY: the caller promises the element is writable.
        unsafe {
            match self {
                Elem::F32 => std::ptr::write_unaligned((base as *mut f32).add(i), v),
                Elem::F16 => std::ptr::write_unaligned((base as *mut u16).add(i), f16::from_f32(v).to_bits()),
            }
        }
    }
}

/// `out = alpha * acc + beta * old`, where `old` is not read at all when beta == 0 (so NaN or
/// garbage in an output that is only written never propagates, as both libraries document).
#[inline]
pub fn blend(alpha: f32, acc: f32, beta: f32, old: impl FnOnce() -> f32) -> f32 {
    if beta == 0.0 {
        alpha * acc
    } else {
        alpha * acc + beta * old()
    }
}

/// `acc[i] += a * x[i]`: the inner loop of every kernel here (contiguous, no reduction, so
/// the compiler vectorises it).
#[inline]
pub fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in acc.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `sum a[i] * b[i]` with eight independent partial sums, so the compiler vectorises it (a
/// single running sum is a dependency chain it may not reorder).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut part = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            part[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    part.iter().sum::<f32>() + tail
}
