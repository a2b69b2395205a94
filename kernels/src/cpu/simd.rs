//! Runtime AVX2 dispatch for the hand-written loops (batch norm, elementwise, pooling,
//! im2col/col2im, zero fills).
//!
//! The workspace builds for the baseline x86-64 target (SSE2), so the compiler vectorises
//! those loops 4 floats (2 doubles) wide. [`avx2_fn!`] defines a function whose body is
//! compiled twice: once as written, once inside a `#[target_feature(enable = "avx2")]`
//! function that runs when the CPU has AVX2. Closures written in the body (the rayon tasks,
//! the reduction callbacks) inherit the feature, so their loops run 8 floats (4 doubles) wide.
//!
//! Exactness: Rust never contracts `a * b + c` into an FMA nor reorders float operations, so
//! wider vectors only run independent lanes (channels, elements) side by side: every result
//! is bit-identical to the SSE2 build's (the fixture and determinism tests of tests/cpu).

/// `avx2_fn! { /// docs  pub fn name(a: A, b: B) -> R { body } }`: `name` runs `body`
/// compiled with AVX2 when the CPU supports it (detected at run time, cached by std), else
/// the baseline copy of `body`. Not for generic functions.
macro_rules! avx2_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments, unused_unsafe)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (detected just above), the only
                    // requirement of calling a function compiled with that feature.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use avx2_fn;

#[cfg(test)]
mod tests {
    super::avx2_fn! {
        /// A sum in f64 over f32 inputs, as the batch-norm reductions do.
        fn widened_sum(x: &[f32]) -> f64 {
            x.iter().map(|v| *v as f64 * 0.5).sum::<f64>()
        }
    }

    #[test]
    fn both_copies_compute_the_same() {
        let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25).collect();
        let plain: f64 = x.iter().map(|v| *v as f64 * 0.5).sum();
        assert_eq!(widened_sum(&x), plain);
        assert_eq!(widened_sum(&[]), 0.0);
    }
}
