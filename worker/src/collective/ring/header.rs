//! The 16-byte header in front of every segment on the ring. It lets a rank check that its
//! neighbour is running the same operation, at the same call, on the same lengths; a mismatch
//! is a protocol error instead of silently mixed-up data.

/// Which collective a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    AllReduce = 1,
    AllGather = 2,
    ReduceScatter = 3,
    Broadcast = 4,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "all_reduce",
            Op::AllGather => "all_gather",
            Op::ReduceScatter => "reduce_scatter",
            Op::Broadcast => "broadcast",
        }
    }
}

/// A segment's place in its operation: a partial sum still travelling towards the last rank,
/// or a finished value (final sum, gathered or broadcast data) being distributed.
pub const PARTIAL: u8 = 0;
pub const FINAL: u8 = 1;

pub const HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegHeader {
    pub op: u8,
    pub phase: u8,
    /// Call counter of this ring (wraps); both neighbours count the same calls.
    pub seq: u32,
    /// Index of the segment within the operation (wraps; only a consistency check).
    pub item: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl SegHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.op;
        b[1] = self.phase;
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.item.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> SegHeader {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        SegHeader { op: b[0], phase: b[1], seq: u32_at(4), item: u32_at(8), len: u32_at(12) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SegHeader { op: Op::Broadcast as u8, phase: FINAL, seq: 0xdead_beef, item: 7, len: 1 << 20 };
        assert_eq!(SegHeader::decode(&h.encode()), h);
    }
}
