//! The one error type of moco-proto.

use crate::validate::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A config file or flag could not be read (syntax, unknown key, wrong type).
    #[error("{0}")]
    Config(String),
    /// The launch environment (RANK, WORLD_SIZE, SLURM_*, ...) is inconsistent.
    #[error("launch environment: {0}")]
    Env(String),
    /// `--preset NAME` names no preset.
    #[error("unknown preset {name:?}: the presets are {}; `launcher presets` lists them", known.join(", "))]
    UnknownPreset { name: String, known: Vec<&'static str> },
    /// The config (with the world size and dataset) breaks one or more rules. Every problem is
    /// reported at once, each with what to change, so the user fixes them in one go.
    #[error("{}", describe(.0))]
    Invalid(Vec<Problem>),
    // ---- wire (launcher <-> worker messages, wire.rs) ----
    /// The first bytes were not a moco-rs frame.
    #[error("not a moco-rs peer: received \"{found}\" where a moco-rs message starts; something else is talking on this port")]
    WireBadMagic { found: String },
    #[error("launcher and worker versions differ: rebuild both (peer speaks wire version {theirs}, this build {ours})")]
    WireVersion { ours: u16, theirs: u16 },
    #[error("message from another run (token {found:#018x}, expected {expected:#018x}): a process of an earlier or parallel run is talking to this one; stop it or use another port")]
    WireWrongRun { expected: u64, found: u64 },
    #[error("message of {len} bytes is over the {max}-byte limit")]
    WireOversize { len: u64, max: u32 },
    #[error("connection closed in the middle of a message ({got} of {expected} bytes of its {part}); the peer probably died")]
    WireTruncated { part: &'static str, got: usize, expected: usize },
    #[error("connection closed by the peer")]
    WireClosed,
    #[error("malformed message: {0}")]
    WireDecode(String),
    #[error("connection: {0}")]
    WireIo(#[source] std::io::Error),
}

fn describe(problems: &[Problem]) -> String {
    let mut s = match problems.len() {
        1 => "invalid configuration:".to_string(),
        n => format!("invalid configuration ({n} problems):"),
    };
    for p in problems {
        s.push_str("\n- ");
        s.push_str(&p.to_string().replace('\n', "\n  "));
    }
    s.push_str(
        "\n(every flag is also a config-file key: --queue-size is queue_size, --blur-p is [aug] blur_p)",
    );
    s
}

impl ProtoError {
    /// The validation problems, if this is a validation error (tests and callers that want to
    /// react to one kind of problem).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ProtoError::Invalid(p) => p,
            _ => &[],
        }
    }
}
