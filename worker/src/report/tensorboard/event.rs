//! The few fields of TensorBoard's `Event` protobuf that scalar logging needs, encoded and
//! decoded by hand (a protobuf dependency and generated code would be far larger than this):
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The decoder skips fields it does not know, so it reads files other writers made too.

/// One event: the file's header (`file_version`) or the scalars of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// (tag, value) pairs of the event's summary.
    pub scalars: Vec<(String, f32)>,
}

/// What the first record of every event file says (TensorBoard checks it).
pub const FILE_VERSION: &str = "brain.Event:2";

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        key(&mut out, 1, FIXED64);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        key(&mut out, 2, VARINT);
        // int64 is encoded as the two's-complement u64 (negative steps never occur here).
        varint(&mut out, self.step as u64);
        if let Some(v) = &self.file_version {
            bytes_field(&mut out, 3, v.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut v = Vec::new();
                bytes_field(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, FIXED32);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(&mut out, 5, &summary);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Event, String> {
        let mut e = Event { wall_time: 0.0, step: 0, file_version: None, scalars: Vec::new() };
        for f in Fields(b) {
            match f? {
                (1, Value::Fixed64(v)) => e.wall_time = f64::from_bits(v),
                (2, Value::Varint(v)) => e.step = v as i64,
                (3, Value::Bytes(s)) => e.file_version = Some(utf8(s)?),
                (5, Value::Bytes(summary)) => {
                    for v in Fields(summary) {
                        if let (1, Value::Bytes(value)) = v? {
                            e.scalars.extend(decode_value(value)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A `Summary.Value` with a `simple_value` (other kinds of value are skipped).
fn decode_value(b: &[u8]) -> Result<Option<(String, f32)>, String> {
    let (mut tag, mut value) = (None, None);
    for f in Fields(b) {
        match f? {
            (1, Value::Bytes(s)) => tag = Some(utf8(s)?),
            (2, Value::Fixed32(v)) => value = Some(f32::from_bits(v)),
            _ => {}
        }
    }
    Ok(tag.zip(value))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Iterates (field number, value) over a message; an error ends it.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn read_varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("a varint runs past the message")?;
            self.0 = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a field runs past the message".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let k = self.read_varint()?;
        let v = match (k & 7) as u8 {
            VARINT => Value::Varint(self.read_varint()?),
            FIXED64 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or([0; 8]))),
            FIXED32 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or([0; 4]))),
            LEN => {
                let n = usize::try_from(self.read_varint()?).map_err(|_| "a length too large".to_string())?;
                Value::Bytes(self.take(n)?)
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        Ok((k >> 3, v))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = self.next_field();
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_event_bytes_are_what_protobuf_writes() {
        let e = Event { wall_time: 1.5, step: 0, file_version: Some(FILE_VERSION.into()), scalars: vec![] };
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x00, 0x1a, 13]);
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e.encode(), want);
    }

    #[test]
    fn scalar_event_bytes_are_what_protobuf_writes() {
        // step 300 is a two-byte varint (0xac 0x02).
        let e = Event { wall_time: 0.0, step: 300, file_version: None, scalars: vec![("a".into(), 1.0)] };
        let mut want =
            vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0xac, 0x02, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15];
        want.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(e.encode(), want);
    }

    #[test]
    fn events_round_trip_and_unknown_fields_are_skipped() {
        let e = Event {
            wall_time: 1_765_000_000.25,
            step: 1 << 40,
            file_version: None,
            scalars: vec![
                ("train/loss".into(), 5.68),
                ("train/lr".into(), -0.0),
                ("x".into(), f32::INFINITY),
            ],
        };
        let mut b = e.encode();
        assert_eq!(Event::decode(&b).unwrap(), e);
        // An unknown varint field (field 4) and an unknown string (field 9) in front.
        let mut with_unknown = vec![0x20, 0x05, 0x4a, 2, b'h', b'i'];
        with_unknown.append(&mut b);
        assert_eq!(Event::decode(&with_unknown).unwrap(), e);
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let b =
            Event { wall_time: 2.0, step: 7, file_version: None, scalars: vec![("t".into(), 1.0)] }.encode();
        for cut in 1..b.len() {
            let _ = Event::decode(&b[..cut]);
        }
        assert!(Event::decode(&b[..b.len() - 1]).is_err());
    }
}
