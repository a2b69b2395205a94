//! The 128-byte unique id: where the hub listens and the token that proves a rank got the id
//! from its maker (another program on the machine, or a stale id from an earlier run, that
//! connects to the port is refused).
//!
//! Layout: magic (8 bytes) | IPv4 address (4) | port (2, big-endian) | token (16) | zeros.

use super::errors::{Fail, Result};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const ID_BYTES: usize = 128;
pub const TOKEN_BYTES: usize = 16;
const MAGIC: &[u8; 8] = b"MOCOEMU\x01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubId {
    pub addr: SocketAddrV4,
    pub token: [u8; TOKEN_BYTES],
}

impl HubId {
    pub fn to_bytes(&self) -> [u8; ID_BYTES] {
        let mut out = [0u8; ID_BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.addr.ip().octets());
        out[12..14].copy_from_slice(&self.addr.port().to_be_bytes());
        out[14..14 + TOKEN_BYTES].copy_from_slice(&self.token);
        out
    }

    pub fn from_bytes(b: &[u8; ID_BYTES]) -> Result<Self> {
        if &b[..8] != MAGIC {
            return Err(Fail::invalid_argument(
                "the unique id was not made by this emulator's ncclGetUniqueId (wrong magic bytes): \
                 was it received intact from the rank that made it?",
            ));
        }
        let ip = Ipv4Addr::new(b[8], b[9], b[10], b[11]);
        let port = u16::from_be_bytes([b[12], b[13]]);
        let mut token = [0u8; TOKEN_BYTES];
        token.copy_from_slice(&b[14..14 + TOKEN_BYTES]);
        Ok(HubId { addr: SocketAddrV4::new(ip, port), token })
    }
}

/// A random token from the kernel's generator.
pub fn random_token() -> Result<[u8; TOKEN_BYTES]> {
    let mut token = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut token))
        .map_err(|e| Fail::system(format!("reading /dev/urandom for the id's token: {e}")))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_bytes_are_refused() {
        let id =
            HubId { addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40123), token: random_token().unwrap() };
        let bytes = id.to_bytes();
        assert_eq!(HubId::from_bytes(&bytes).unwrap(), id);
        let mut other = bytes;
        other[0] ^= 1;
        assert!(HubId::from_bytes(&other).unwrap_err().msg.contains("magic"));
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
