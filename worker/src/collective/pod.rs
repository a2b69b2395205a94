//! Viewing plain numeric slices as bytes, so one byte-level ring carries every element type.

/// Element types whose every bit pattern is a valid value and which have no padding.
///
/// # Safety
/// Implement only for such types: the casts below expose and overwrite their raw bytes.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

// SAFETY: fixed-size numbers without padding; every bit pattern is a value (NaNs included).
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for f32 {}
// SAFETY: as above.
unsafe impl Pod for f64 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: `half::f16` is `repr(transparent)` over `u16`.
unsafe impl Pod for half::f16 {}

pub fn bytes<T: Pod>(s: &[T]) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all `size_of_val(s)` bytes are initialised; u8 has
    // alignment 1; the lifetime is that of `s`.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

pub fn bytes_mut<T: Pod>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `bytes`, and any byte pattern written through the result is a valid `T`
    // (the `Pod` contract); the exclusive borrow of `s` is moved into the result.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_the_native_images_of_the_values() {
        let mut v = [1.0f32, -2.5];
        assert_eq!(bytes(&v)[..4], 1.0f32.to_ne_bytes());
        bytes_mut(&mut v)[4..].copy_from_slice(&7.0f32.to_ne_bytes());
        assert_eq!(v, [1.0, 7.0]);
    }
}
