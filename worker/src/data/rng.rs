//! Random streams of the data pipeline, keyed so that every consumer gets its own.
//!
//! A ChaCha8 key is 32 bytes: here `seed ‖ domain ‖ a ‖ 0` (little-endian u64s), and the
//! 64-bit ChaCha stream number is the item index. Distinct (seed, domain, a, stream) tuples
//! therefore give independent streams without any hashing that could collide, and an item's
//! stream never depends on which thread draws it or on what was drawn before.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Who draws from the stream; part of the key so that domains never share a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Domain {
    /// Synthetic tile content (a = 0, stream = tile index).
    Synthetic = 0x5359_4e54,
    /// Augmentation of one view (a = epoch, stream = 2 * dataset index + view).
    Augment = 0x4155_474d,
    /// Epoch permutation of the sampler (a = epoch, stream = 0).
    Sampler = 0x5341_4d50,
}

/// The stream of (seed, domain, a, stream).
pub fn stream(seed: u64, domain: Domain, a: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(domain as u64).to_le_bytes());
    key[16..24].copy_from_slice(&a.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn streams_differ_by_every_key_part() {
        let base = stream(1, Domain::Augment, 2, 3).next_u64();
        assert_eq!(base, stream(1, Domain::Augment, 2, 3).next_u64());
        assert_ne!(base, stream(0, Domain::Augment, 2, 3).next_u64());
        assert_ne!(base, stream(1, Domain::Sampler, 2, 3).next_u64());
        assert_ne!(base, stream(1, Domain::Augment, 1, 3).next_u64());
        assert_ne!(base, stream(1, Domain::Augment, 2, 2).next_u64());
    }
}
