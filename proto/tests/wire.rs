//! Launcher <-> worker frames: every message round-trips, and every way a stream can be wrong
//! gives its own error.

use moco_proto::wire::{
    decode_header, encode_frame, read_frame, run_token, write_frame, FailureKind, Metrics, Msg, Setup,
    StopReason, HEADER_LEN, MAX_PAYLOAD, NCCL_ID_LEN, VERSION,
};
use moco_proto::{presets, ProtoError};
use std::io::Cursor;

const TOKEN: u64 = 0x0123_4567_89ab_cdef;

fn setup() -> Setup {
    let cfg = presets::get("tiny").expect("tiny preset");
    Setup {
        rank: 3,
        world_size: 8,
        local_rank: 1,
        run_id: "exp1-20250101".into(),
        config: Setup::encode_config(&cfg).expect("config to JSON"),
        ring_peers: (0..8).map(|r| format!("10.0.0.{r}:29500")).collect(),
        nccl_id: Some((0..NCCL_ID_LEN as u8).collect()),
        restart_count: 2,
    }
}

fn every_message() -> Vec<Msg> {
    vec![
        Msg::Hello {
            rank: None,
            local_rank: None,
            host: "node-1".into(),
            pid: 4242,
            device: "cpu".into(),
            world_size: 1,
            config: "{}".into(),
        },
        Msg::Hello {
            rank: Some(7),
            local_rank: Some(1),
            host: "gpu-ü".into(),
            pid: u32::MAX,
            device: "cuda:1 NVIDIA GeForce RTX 3060 (8 GiB)".into(),
            world_size: 8,
            config: setup().config,
        },
        Msg::Refused { reason: "this worker was started with --world-size 3".into() },
        Msg::Setup(setup()),
        Msg::Setup(Setup { nccl_id: None, ring_peers: vec![], ..setup() }),
        Msg::RingAddress { rank: 5, addr: "[::1]:40001".into() },
        Msg::Heartbeat { rank: 0, step: u64::MAX },
        Msg::Metrics(Metrics {
            rank: 1,
            step: 1234,
            epoch: 17,
            loss: 7.25,
            lr: 1.5e-4,
            momentum: 0.996,
            loss_scale: 65536.0,
            images_per_sec: 311.5,
            memory_bytes: 7 << 30,
        }),
        Msg::Error { rank: 2, kind: FailureKind::OutOfMemory, message: "cudaMalloc of 2 GiB failed".into() },
        Msg::Done { rank: 6 },
        Msg::Notice { rank: 0, text: "warning: possible representation collapse".into() },
        Msg::Stop { reason: StopReason::Interrupted },
        Msg::Stop { reason: StopReason::PeerFailed { rank: 4, detail: "exit status 137".into() } },
        Msg::Stop { reason: StopReason::Shutdown },
    ]
}

#[test]
fn every_message_round_trips_through_a_stream() {
    let msgs = every_message();
    let mut stream = Vec::new();
    for m in &msgs {
        write_frame(&mut stream, TOKEN, m).expect("write");
    }
    let mut r = Cursor::new(stream);
    for m in &msgs {
        assert_eq!(&read_frame(&mut r, TOKEN).expect("read"), m, "{}", m.name());
    }
    assert!(matches!(read_frame(&mut r, TOKEN), Err(ProtoError::WireClosed)));
}

#[test]
fn setup_carries_the_config_and_nccl_id() {
    let s = setup();
    assert_eq!(s.train_config().expect("config parses"), presets::get("tiny").expect("tiny"));
    assert_eq!(s.nccl_id().expect("128 bytes").map(|id| id[127]), Some(127));
    let short = Setup { nccl_id: Some(vec![0; 16]), ..setup() };
    assert!(matches!(short.nccl_id(), Err(ProtoError::WireDecode(_))));
}

#[test]
fn header_layout_is_magic_version_token_length() {
    let f = encode_frame(TOKEN, &Msg::Done { rank: 1 }).expect("encode");
    assert_eq!(&f[..4], b"MOCO");
    assert_eq!(u16::from_le_bytes([f[4], f[5]]), VERSION);
    assert_eq!(u64::from_le_bytes(f[6..14].try_into().expect("8 bytes")), TOKEN);
    assert_eq!(u32::from_le_bytes(f[14..18].try_into().expect("4 bytes")) as usize, f.len() - HEADER_LEN);
}

#[test]
fn run_token_is_stable_and_distinguishes_runs() {
    // FNV-1a 64 of "a" (published test vector): the token must never change between builds.
    assert_eq!(run_token("a"), 0xaf63_dc4c_8601_ec8c);
    assert_ne!(run_token("exp1"), run_token("exp2"));
}

fn frame() -> Vec<u8> {
    encode_frame(TOKEN, &Msg::Heartbeat { rank: 1, step: 9 }).expect("encode")
}

fn read(bytes: Vec<u8>) -> Result<Msg, ProtoError> {
    read_frame(&mut Cursor::new(bytes), TOKEN)
}

#[test]
fn something_else_on_the_port_is_not_a_moco_peer() {
    let e = read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).expect_err("HTTP is not a frame");
    assert!(matches!(e, ProtoError::WireBadMagic { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("not a moco-rs peer") && text.contains("GET "), "{text}");
    // Even when it sends fewer bytes than a header.
    assert!(matches!(read(b"SSH-2".to_vec()), Err(ProtoError::WireBadMagic { .. })));
}

#[test]
fn version_mismatch_says_rebuild_both() {
    let mut f = frame();
    f[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let e = read(f).expect_err("other version");
    assert!(matches!(e, ProtoError::WireVersion { theirs, .. } if theirs == VERSION + 1), "{e:?}");
    assert!(e.to_string().contains("rebuild both"));
}

#[test]
fn frame_of_another_run_is_refused() {
    let e = read_frame(&mut Cursor::new(frame()), TOKEN ^ 1).expect_err("other run");
    assert!(matches!(e, ProtoError::WireWrongRun { found: TOKEN, .. }), "{e:?}");
    assert!(e.to_string().contains("another run"));
}

#[test]
fn oversize_length_is_refused_before_reading_the_payload() {
    let mut f = frame();
    f[14..18].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert!(
        matches!(read(f), Err(ProtoError::WireOversize { len, .. }) if len == u64::from(MAX_PAYLOAD) + 1)
    );
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&frame()[..HEADER_LEN]);
    h[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_header(&h, TOKEN), Err(ProtoError::WireOversize { .. })));
}

#[test]
fn oversize_message_is_refused_when_writing() {
    let huge =
        Msg::Error { rank: 0, kind: FailureKind::Internal, message: "x".repeat(MAX_PAYLOAD as usize + 1) };
    assert!(matches!(encode_frame(TOKEN, &huge), Err(ProtoError::WireOversize { .. })));
}

#[test]
fn truncated_header_and_payload_are_reported_as_such() {
    let f = frame();
    let e = read(f[..10].to_vec()).expect_err("short header");
    assert!(matches!(e, ProtoError::WireTruncated { part: "header", got: 10, .. }), "{e:?}");
    let e = read(f[..f.len() - 1].to_vec()).expect_err("short payload");
    assert!(matches!(e, ProtoError::WireTruncated { part: "payload", .. }), "{e:?}");
    assert!(matches!(read(Vec::new()), Err(ProtoError::WireClosed)));
}

#[test]
fn hostile_length_within_the_cap_allocates_only_what_arrives() {
    // A header claiming 16 MiB followed by 3 bytes: a truncation error, not a 16 MiB buffer
    // (the allocation itself is not observable here; the error path is).
    let mut f = frame()[..HEADER_LEN].to_vec();
    f[14..18].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
    f.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(read(f), Err(ProtoError::WireTruncated { got: 3, .. })));
}

#[test]
fn garbage_payload_and_trailing_bytes_are_decode_errors() {
    let mut f = frame();
    let n = f.len();
    f[HEADER_LEN] = 200; // no such message variant
    assert!(matches!(read(f), Err(ProtoError::WireDecode(_))));
    // One byte more than the message needs, with the length covering it.
    let mut g = frame();
    g.push(0);
    g[14..18].copy_from_slice(&((n + 1 - HEADER_LEN) as u32).to_le_bytes());
    assert!(matches!(read(g), Err(ProtoError::WireDecode(_))));
}
