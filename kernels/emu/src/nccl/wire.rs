//! What ranks and the hub say to each other: length-prefixed frames, and the description of a
//! collective call that the hub compares across ranks.
//!
//! Frame: body length (u64, little-endian) | kind (u8) | body.

use super::reduce::{DType, RedOp};
use std::io::{self, Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// rank -> hub: token, rank, nranks.
    Hello = 1,
    /// hub -> rank: every rank joined.
    Ready = 2,
    /// rank -> hub: a `Call` and this rank's contribution.
    Request = 3,
    /// hub -> rank: this rank's result bytes.
    Reply = 4,
    /// either way: code byte and message; the communicator is dead.
    Fail = 5,
    /// rank -> hub: the rank is done with the communicator (destroy or finalize).
    Bye = 6,
}

impl Kind {
    fn from_byte(b: u8) -> io::Result<Self> {
        Ok(match b {
            1 => Kind::Hello,
            2 => Kind::Ready,
            3 => Kind::Request,
            4 => Kind::Reply,
            5 => Kind::Fail,
            6 => Kind::Bye,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown frame kind {b}"))),
        })
    }
}

pub struct Frame {
    pub kind: Kind,
    pub body: Vec<u8>,
}

/// Larger than any buffer the project exchanges; a bigger length means a corrupt stream.
const MAX_BODY: u64 = 1 << 40;

/// Writes one frame whose body is the concatenation of `parts`.
pub fn write_frame(w: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = [0u8; 9];
    head[..8].copy_from_slice(&(len as u64).to_le_bytes());
    head[8] = kind as u8;
    w.write_all(&head)?;
    for p in parts {
        w.write_all(p)?;
    }
    w.flush()
}

pub fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head)?;
    let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    if len > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let kind = Kind::from_byte(head[8])?;
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(Frame { kind, body })
}

/// A rank's greeting.
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    pub token: [u8; super::id::TOKEN_BYTES],
    pub rank: u32,
    pub nranks: u32,
    /// The rank's process id (the hub tells its own process's ranks of a failure last).
    pub pid: u32,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.token.to_vec();
        v.extend_from_slice(&self.rank.to_le_bytes());
        v.extend_from_slice(&self.nranks.to_le_bytes());
        v.extend_from_slice(&self.pid.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        const T: usize = super::id::TOKEN_BYTES;
        if b.len() != T + 12 {
            return None;
        }
        let mut token = [0u8; T];
        token.copy_from_slice(&b[..T]);
        let rank = u32::from_le_bytes(b[T..T + 4].try_into().ok()?);
        let nranks = u32::from_le_bytes(b[T + 4..T + 8].try_into().ok()?);
        let pid = u32::from_le_bytes(b[T + 8..].try_into().ok()?);
        Some(Hello { token, rank, nranks, pid })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    AllReduce = 1,
    AllGather = 2,
    ReduceScatter = 3,
    Broadcast = 4,
    Reduce = 5,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "ncclAllReduce",
            Op::AllGather => "ncclAllGather",
            Op::ReduceScatter => "ncclReduceScatter",
            Op::Broadcast => "ncclBroadcast",
            Op::Reduce => "ncclReduce",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Op::AllReduce,
            2 => Op::AllGather,
            3 => Op::ReduceScatter,
            4 => Op::Broadcast,
            5 => Op::Reduce,
            _ => return None,
        })
    }
}

/// One collective call as every rank must make it. `count` is NCCL's count argument (per-rank
/// for all-gather and reduce-scatter); `redop` and `root` are `None` where the call has none,
/// so that equal calls compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub dtype: DType,
    pub redop: Option<RedOp>,
    pub root: Option<u32>,
    pub count: u64,
}

impl Call {
    pub const BYTES: usize = 15;

    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0] = self.op as u8;
        b[1] = self.dtype as u8;
        b[2] = self.redop.map(|r| r as u8 + 1).unwrap_or(0);
        b[3..7].copy_from_slice(&self.root.map(|r| r as i32).unwrap_or(-1).to_le_bytes());
        b[7..15].copy_from_slice(&self.count.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::BYTES {
            return None;
        }
        let root = i32::from_le_bytes(b[3..7].try_into().ok()?);
        Some(Call {
            op: Op::from_byte(b[0])?,
            dtype: DType::from_raw(b[1] as u32)?,
            redop: if b[2] == 0 { None } else { Some(RedOp::from_raw(b[2] as u32 - 1)?) },
            root: u32::try_from(root).ok(),
            count: u64::from_le_bytes(b[7..15].try_into().ok()?),
        })
    }

    /// "ncclAllReduce(count 1001, float32, sum)", for error messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{}(count {}, {}", self.op.name(), self.count, self.dtype.name());
        if let Some(r) = self.redop {
            s.push_str(&format!(", {}", r.name()));
        }
        if let Some(r) = self.root {
            s.push_str(&format!(", root {r}"));
        }
        s.push(')');
        s
    }

    fn elems_bytes(&self, elems: u64) -> usize {
        (elems * self.dtype.size() as u64) as usize
    }

    /// Bytes rank `rank` sends to the hub.
    pub fn send_bytes(&self, rank: u32, nranks: u32) -> usize {
        match self.op {
            Op::AllReduce | Op::AllGather | Op::Reduce => self.elems_bytes(self.count),
            Op::ReduceScatter => self.elems_bytes(self.count * nranks as u64),
            Op::Broadcast if self.root == Some(rank) => self.elems_bytes(self.count),
            Op::Broadcast => 0,
        }
    }

    /// Bytes rank `rank` receives from the hub.
    pub fn recv_bytes(&self, rank: u32, nranks: u32) -> usize {
        match self.op {
            Op::AllReduce | Op::ReduceScatter | Op::Broadcast => self.elems_bytes(self.count),
            Op::AllGather => self.elems_bytes(self.count * nranks as u64),
            Op::Reduce if self.root == Some(rank) => self.elems_bytes(self.count),
            Op::Reduce => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_calls_round_trip() {
        let call =
            Call { op: Op::Reduce, dtype: DType::F16, redop: Some(RedOp::Max), root: Some(2), count: 1001 };
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Request, &[&call.encode(), b"xyz"]).unwrap();
        let f = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(f.kind, Kind::Request);
        assert_eq!(Call::decode(&f.body).unwrap(), call);
        assert_eq!(&f.body[Call::BYTES..], b"xyz");
        let plain = Call { op: Op::AllGather, dtype: DType::U8, redop: None, root: None, count: 7 };
        assert_eq!(Call::decode(&plain.encode()).unwrap(), plain);
        assert_eq!(call.describe(), "ncclReduce(count 1001, float16, max, root 2)");
        assert_eq!(plain.recv_bytes(1, 3), 21);
        assert_eq!(call.recv_bytes(1, 3), 0);
        assert_eq!(call.recv_bytes(2, 3), 2002);
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Reply, &[&[1, 2, 3, 4]]).unwrap();
        buf.pop();
        assert!(read_frame(&mut buf.as_slice()).is_err());
    }
}
