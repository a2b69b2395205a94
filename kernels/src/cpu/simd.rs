//! Runtime AVX-512 / AVX2 dispatch for the hand-written loops (batch norm, elementwise,
//! pooling, im2col/col2im, zero fills, optimiser updates).
//!
//! The workspace builds for the baseline x86-64 target (SSE2), so the compiler vectorises
//! those loops 4 floats (2 doubles) wide. [`avx2_fn!`] defines a function whose body is
//! compiled three times: as written, inside a `#[target_feature(enable = "avx2")]` function
//! and inside an AVX-512 (F/BW/DQ/VL) one; the widest the CPU supports runs. Closures written
//! in the body (the rayon tasks, the reduction callbacks) inherit the features, so their loops
//! run 16 floats (8 doubles) wide with AVX-512, 8 (4) with AVX2.
//!
//! Exactness: Rust never contracts `a * b + c` into an FMA nor reorders float operations, so
//! wider vectors only run independent lanes (channels, elements) side by side: every result
//! is bit-identical to the SSE2 build's (the fixture and determinism tests of tests/cpu).

/// `avx2_fn! { /// docs  pub fn name(a: A, b: B) -> R { body } }`: `name` runs `body`
/// compiled with AVX-512 (F, BW, DQ, VL: 16 floats / 8 doubles wide) when the CPU supports
/// it, else with AVX2 when it has that (detected at run time, cached by std), else the
/// baseline copy of `body`. Not for generic functions.
macro_rules! avx2_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
                #[allow(clippy::too_many_arguments, unused_unsafe)]
                unsafe fn wide512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments, unused_unsafe)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? $body
                if $crate::cpu::simd::has_avx512() {
                    // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (detected just above), the
                    // only requirement of calling a function compiled with those features.
                    return unsafe { wide512($($arg),*) };
                }
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

/// `by_width!(c, |w| body)`: `body` with `w` = c, compiled separately for the narrow channel
/// counts of the small presets (8, 16, 32: w a constant there, so the per-row channel loop is
/// unrolled into whole vectors instead of a loop shorter than one unrolled vector iteration,
/// which would run its scalar remainder). The same operations in the same order for every
/// width, so the results do not change. Used by batch norm's two elementwise passes (on its f64
/// reductions and on the max pool it measured slower: results/2026-12-05-cpu-kernels.md).
macro_rules! by_width {
    ($c:expr, |$w:ident| $body:expr) => {
        match $c {
            8 => {
                #[allow(non_upper_case_globals)]
                const $w: usize = 8;
                $body
            }
            16 => {
                #[allow(non_upper_case_globals)]
                const $w: usize = 16;
                $body
            }
            32 => {
                #[allow(non_upper_case_globals)]
                const $w: usize = 32;
                $body
            }
            $w => $body,
        }
    };
}
pub(crate) use by_width;

/// Whether the CPU has the AVX-512 subsets [`avx2_fn!`]'s widest copy is compiled for, and
/// `MOCO_CPU_NO_AVX512` is unset (to compare against the AVX2 copy). Cached after the first
/// call.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("MOCO_CPU_NO_AVX512").is_none()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    })
}

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

    super::avx2_fn! {
        /// Per-column f64 sums of a row-major matrix, the shape of the batch-norm statistics
        /// (independent lanes, which the wide copies do vectorise).
        fn column_sums(x: &[f32], cols: usize) -> Vec<f64> {
            let mut acc = vec![0.0f64; cols];
            for row in x.chunks_exact(cols) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64 * *v as f64 - 0.1);
            }
            acc
        }
    }

    #[test]
    fn wide_column_sums_match_the_plain_loop() {
        let cols = 37;
        let x: Vec<f32> = (0..cols * 101).map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.4).collect();
        let mut plain = vec![0.0f64; cols];
        for row in x.chunks_exact(cols) {
            plain.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64 * *v as f64 - 0.1);
        }
        let wide = column_sums(&x, cols);
        assert_eq!(
            wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
