//! Messages between the launcher (or rank 0's rendezvous) and the workers: versioned,
//! length-prefixed bincode frames with a size cap and the run's token in every header.
//!
//! Frame (little-endian): magic `b"MOCO"` (4) | version u16 | run token u64 | payload length
//! u32 | payload (bincode of [`Msg`], at most [`MAX_PAYLOAD`] bytes). The header is checked
//! before the payload is read, in this order: magic (is this a moco-rs peer at all?), version
//! (same build?), token (same run?), length (within the cap?). Nothing is allocated for a
//! payload beyond the bytes that actually arrive.
//!
//! Blocking readers use [`read_frame`]; async code reads [`HEADER_LEN`] bytes, calls
//! [`decode_header`], reads the payload and calls [`decode_payload`].

use crate::error::ProtoError;
use crate::TrainConfig;
use bincode::Options;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

pub const MAGIC: [u8; 4] = *b"MOCO";
/// Bumped whenever a message changes shape; both sides must match exactly.
pub const VERSION: u16 = 2;
pub const HEADER_LEN: usize = 18;
/// 16 MiB: far above any real message (a Setup with its config is a few KiB).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Length of an NCCL unique id.
pub const NCCL_ID_LEN: usize = 128;

/// Everything launcher and workers say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Worker -> rendezvous, first message on a connection.
    Hello {
        /// The rank this worker was told to be (RANK, SLURM_PROCID); None = assign me one.
        rank: Option<u32>,
        /// Index among the workers on this host, when known (selects the GPU).
        local_rank: Option<u32>,
        host: String,
        pid: u32,
        /// What the worker runs on, e.g. "cuda:0 NVIDIA GeForce RTX 3060 (8 GiB)" or "cpu".
        device: String,
        /// The world size this worker was started with: the rendezvous refuses a worker whose
        /// world size differs from the run's before it is given a rank.
        world_size: u32,
        /// The worker's resolved `TrainConfig` as JSON, checked by the rendezvous the same way.
        config: String,
    },
    /// Rendezvous -> worker instead of a `Setup`: this worker may not join, and why (wrong world
    /// size, rank taken or out of range, another run, another config). The group goes on.
    Refused { reason: String },
    /// Rendezvous -> worker: everything it needs to start.
    Setup(Setup),
    /// Worker -> rendezvous: where this rank's ring listener is bound.
    RingAddress { rank: u32, addr: String },
    /// Worker -> launcher, periodically: alive and at `step`.
    Heartbeat { rank: u32, step: u64 },
    /// Worker -> launcher, every logging step.
    Metrics(Metrics),
    /// Worker -> launcher before it exits on a failure.
    Error { rank: u32, kind: FailureKind, message: String },
    /// Worker -> launcher: training finished and the final checkpoint is written.
    Done { rank: u32 },
    /// Worker -> launcher: a line for the user's terminal (resume notes, warnings such as the
    /// collapse monitor's, kNN results); the launcher prints it above the progress line.
    Notice { rank: u32, text: String },
    /// Launcher -> workers.
    Stop { reason: StopReason },
}

/// The rendezvous' answer to a `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub rank: u32,
    pub world_size: u32,
    pub local_rank: u32,
    pub run_id: String,
    /// The resolved `TrainConfig` as JSON (see [`Setup::train_config`]).
    pub config: String,
    /// Ring listener address of every rank, in rank order.
    pub ring_peers: Vec<String>,
    /// NCCL unique id ([`NCCL_ID_LEN`] bytes) when the run uses NCCL.
    pub nccl_id: Option<Vec<u8>>,
    /// How many times the group has been restarted (0 on the first start).
    pub restart_count: u32,
}

impl Setup {
    /// The config as JSON, for the `config` field.
    pub fn encode_config(cfg: &TrainConfig) -> Result<String, ProtoError> {
        serde_json::to_string(cfg).map_err(|e| ProtoError::WireDecode(format!("config to JSON: {e}")))
    }

    pub fn train_config(&self) -> Result<TrainConfig, ProtoError> {
        serde_json::from_str(&self.config)
            .map_err(|e| ProtoError::WireDecode(format!("config in Setup: {e}")))
    }

    /// The NCCL id, checked to be exactly [`NCCL_ID_LEN`] bytes.
    pub fn nccl_id(&self) -> Result<Option<[u8; NCCL_ID_LEN]>, ProtoError> {
        self.nccl_id
            .as_deref()
            .map(|b| {
                b.try_into().map_err(|_| {
                    ProtoError::WireDecode(format!("NCCL id of {} bytes, expected {NCCL_ID_LEN}", b.len()))
                })
            })
            .transpose()
    }
}

/// One logging step of one rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rank: u32,
    pub step: u64,
    pub epoch: u32,
    pub loss: f64,
    pub lr: f64,
    pub momentum: f64,
    pub loss_scale: f64,
    pub images_per_sec: f64,
    /// Peak device (or host, on CPU) memory in bytes.
    pub memory_bytes: u64,
}

/// What failed in a worker, so the launcher can decide whether a restart can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Invalid configuration: restarting will not help.
    Config,
    /// Unreadable or unusable data: restarting will not help.
    Data,
    /// GPU driver, CUDA or NCCL error.
    Device,
    OutOfMemory,
    /// A peer died or hung (the root cause is usually another rank).
    Collective,
    Checkpoint,
    /// The loss or weights went non-finite.
    Numeric,
    Io,
    Internal,
}

/// Why the launcher stops the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// SIGINT/SIGTERM/SIGUSR1 reached the launcher: finish the step, checkpoint, exit.
    Interrupted,
    /// Another rank failed or stopped answering: exit now, the group is broken.
    PeerFailed { rank: u32, detail: String },
    /// The launcher itself is exiting (its own error).
    Shutdown,
}

impl Msg {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Setup(_) => "Setup",
            Msg::Refused { .. } => "Refused",
            Msg::RingAddress { .. } => "RingAddress",
            Msg::Heartbeat { .. } => "Heartbeat",
            Msg::Metrics(_) => "Metrics",
            Msg::Error { .. } => "Error",
            Msg::Done { .. } => "Done",
            Msg::Notice { .. } => "Notice",
            Msg::Stop { .. } => "Stop",
        }
    }
}

/// A stable 64-bit token of a run id (FNV-1a), carried in every frame header.
pub fn run_token(run_id: &str) -> u64 {
    run_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(u64::from(MAX_PAYLOAD))
}

/// The whole frame of `msg`, ready to write.
pub fn encode_frame(token: u64, msg: &Msg) -> Result<Vec<u8>, ProtoError> {
    let len = codec().serialized_size(msg).map_err(|e| oversize_or_decode(e, "encoding"))?;
    if len > u64::from(MAX_PAYLOAD) {
        return Err(ProtoError::WireOversize { len, max: MAX_PAYLOAD });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + len as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    codec().serialize_into(&mut out, msg).map_err(|e| oversize_or_decode(e, "encoding"))?;
    Ok(out)
}

/// Write one frame (one `write_all`, then flush).
pub fn write_frame(w: &mut impl Write, token: u64, msg: &Msg) -> Result<(), ProtoError> {
    let frame = encode_frame(token, msg)?;
    w.write_all(&frame).and_then(|_| w.flush()).map_err(ProtoError::WireIo)
}

/// Check a frame header; returns the payload length.
pub fn decode_header(h: &[u8; HEADER_LEN], expected_token: u64) -> Result<u32, ProtoError> {
    if h[..4] != MAGIC {
        return Err(ProtoError::WireBadMagic { found: h[..4].escape_ascii().to_string() });
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(ProtoError::WireVersion { ours: VERSION, theirs: version });
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&h[6..14]);
    let token = u64::from_le_bytes(t);
    if token != expected_token {
        return Err(ProtoError::WireWrongRun { expected: expected_token, found: token });
    }
    let len = u32::from_le_bytes([h[14], h[15], h[16], h[17]]);
    if len > MAX_PAYLOAD {
        return Err(ProtoError::WireOversize { len: u64::from(len), max: MAX_PAYLOAD });
    }
    Ok(len)
}

/// Decode a payload whose header passed [`decode_header`]. Trailing bytes are an error.
pub fn decode_payload(payload: &[u8]) -> Result<Msg, ProtoError> {
    codec().deserialize(payload).map_err(|e| oversize_or_decode(e, "decoding"))
}

/// Read one frame. A clean end of stream before the first byte is [`ProtoError::WireClosed`];
/// an end inside a frame is [`ProtoError::WireTruncated`].
pub fn read_frame(r: &mut impl Read, expected_token: u64) -> Result<Msg, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h)?;
    if got == 0 {
        return Err(ProtoError::WireClosed);
    }
    if got < HEADER_LEN {
        // Report a stranger as a stranger even if it sent fewer bytes than a header.
        if got >= 4 && h[..4] != MAGIC {
            return Err(ProtoError::WireBadMagic { found: h[..4].escape_ascii().to_string() });
        }
        return Err(ProtoError::WireTruncated { part: "header", got, expected: HEADER_LEN });
    }
    let len = decode_header(&h, expected_token)? as usize;
    // Grow with the bytes that arrive, not with what the header claims.
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut payload).map_err(ProtoError::WireIo)?;
    if payload.len() < len {
        return Err(ProtoError::WireTruncated { part: "payload", got: payload.len(), expected: len });
    }
    decode_payload(&payload)
}

/// Read until `buf` is full or the stream ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtoError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::WireIo(e)),
        }
    }
    Ok(got)
}

// bincode::Error is a Box<ErrorKind> by definition; taking it by value is the natural signature.
#[allow(clippy::boxed_local)]
fn oversize_or_decode(e: bincode::Error, what: &str) -> ProtoError {
    match *e {
        bincode::ErrorKind::SizeLimit => {
            ProtoError::WireOversize { len: u64::from(MAX_PAYLOAD) + 1, max: MAX_PAYLOAD }
        }
        other => ProtoError::WireDecode(format!("{what}: {other}")),
    }
}
