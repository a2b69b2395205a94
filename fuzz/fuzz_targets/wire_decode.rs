//! Arbitrary bytes on a launcher/worker connection: decoding must return messages or errors,
//! never panic, hang, or allocate beyond the frame cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moco_proto::wire::{decode_payload, read_frame, HEADER_LEN};
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    // The token comes from the input itself, so the fuzzer reaches past the token check.
    let token = match data.get(6..HEADER_LEN.min(14)) {
        Some(t) if t.len() == 8 => u64::from_le_bytes(t.try_into().unwrap_or([0; 8])),
        _ => 0,
    };
    let mut stream = Cursor::new(data);
    while read_frame(&mut stream, token).is_ok() {}
    // And the payload decoder alone, where most of the structure lives.
    let _ = decode_payload(data);
});
