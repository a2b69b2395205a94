//! TFRecord framing, the container of a TensorBoard event file: per record
//! `u64 length (LE) | masked CRC32C of those 8 bytes | data | masked CRC32C of data`.
//!
//! CRC32C (Castagnoli) is written here rather than taken from a crate: it is a 256-entry table
//! and a loop, and the reader below needs the same function to check files.

/// CRC32C lookup table (reflected polynomial 0x82F63B78), built at compile time.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: a CRC of data that itself holds CRCs would be weak, so it is rotated
/// and offset (TensorFlow's `crc32c::Mask`).
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One framed record, ready for a single write call.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// What `unframe` found after the complete records.
#[derive(Debug, Clone, PartialEq)]
pub enum Tail {
    /// The file ends exactly after a record.
    Clean,
    /// The last record is incomplete (the writer was killed mid-write); `at` is its offset.
    Torn { at: usize },
}

/// Split a file into record payloads. A short last record is `Tail::Torn` (a killed writer),
/// not an error; a CRC that does not match is an error naming the record and offset.
pub fn unframe(bytes: &[u8]) -> Result<(Vec<&[u8]>, Tail), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            return Ok((out, Tail::Torn { at }));
        }
        let len_bytes = &rest[..8];
        let stored = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if stored != masked_crc(len_bytes) {
            return Err(format!("record {} at byte {at}: the length's CRC does not match", out.len()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(16)) else {
            return Err(format!("record {} at byte {at}: length {len} is impossible", out.len()));
        };
        if rest.len() < end {
            return Ok((out, Tail::Torn { at }));
        }
        let data = &rest[12..end - 4];
        let crc = u32::from_le_bytes([rest[end - 4], rest[end - 3], rest[end - 2], rest[end - 1]]);
        if crc != masked_crc(data) {
            return Err(format!("record {} at byte {at}: the data's CRC does not match", out.len()));
        }
        out.push(data);
        at += end;
    }
    Ok((out, Tail::Clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The check value of CRC-32C (RFC 3720, and every CRC catalogue): "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    // The test spells the mask out as TensorFlow's source writes it, not as `rotate_right`.
    #[allow(clippy::manual_rotate)]
    fn masked_crc_is_tensorflows_rotation_plus_constant() {
        let c = crc32c(b"abc");
        assert_eq!(masked_crc(b"abc"), ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_reported_not_an_error() {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(&[7u8; 300]));
        let (recs, tail) = unframe(&file).unwrap();
        assert_eq!(recs, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        assert_eq!(tail, Tail::Clean);
        let whole = frame(b"first").len() + frame(b"").len();
        for cut in [whole + 1, whole + 11, whole + 12, file.len() - 1] {
            let (recs, tail) = unframe(&file[..cut]).unwrap();
            assert_eq!(recs.len(), 2, "cut at {cut}");
            assert_eq!(tail, Tail::Torn { at: whole });
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let file = frame(b"payload");
        let mut bad = file.clone();
        bad[14] ^= 1;
        assert!(unframe(&bad).unwrap_err().contains("data's CRC"));
        let mut bad = file;
        bad[0] ^= 1;
        assert!(unframe(&bad).unwrap_err().contains("length's CRC"));
    }
}
