//! The stand-in `libnccl`: collectives between processes (ranks are processes), over TCP on
//! 127.0.0.1.
//!
//! - Rendezvous (`id`, `hub`): `ncclGetUniqueId` binds a listener on 127.0.0.1 and starts a
//!   hub thread in the calling process (usually rank 0's); the 128-byte id carries the
//!   listener's address and a random token. Each rank's `ncclCommInitRank` connects, says
//!   (token, rank, nranks), and blocks until all ranks joined; a wrong `nranks` or a rank
//!   claimed twice fails every joined rank with `ncclInvalidUsage`.
//! - Collectives (`collectives`, `client`, `reduce`): each rank sends its contribution to the
//!   hub, which checks that all ranks called the same collective with the same count, type,
//!   operation and root, combines the contributions in rank order (`((r0 + r1) + r2) ...`: a
//!   fixed order, so a result is bit-reproducible and testable against a host sum; real NCCL's
//!   ring or tree order differs) and sends each rank its result.
//! - Streams: a collective first runs its stream up to now (`stream::run_all`, device
//!   progress, not a host wait), then exchanges directly on the device buffers and returns.
//!   The exchange holds no stream lock: on a GPU a collective progresses without the host, so
//!   deferring it to the next host wait could deadlock two processes where GPUs would not.
//! - Groups: `ncclGroupStart`/`ncclGroupEnd` only nest; collectives run eagerly, in program
//!   order. Every rank issues a group's collectives in the same order and the hub matches them
//!   one by one, so the result is what the grouped call gives. (Point-to-point send/recv, which
//!   would need deferral to avoid deadlock, is not provided.)
//! - Failures never hang: a peer whose connection closes (process exited, communicator
//!   aborted mid-call) fails every other rank's current and later calls with
//!   `ncclRemoteError`; ranks that do not show up within `MOCO_EMU_NCCL_TIMEOUT` seconds
//!   (default 300) fail the others' calls with `ncclSystemError`; `ncclCommAbort` from
//!   another thread unblocks a call in flight. `ncclGetLastError` names the cause, e.g. "rank 1
//!   closed its connection during ncclAllReduce #3 (its process exited or aborted the
//!   communicator)".
//!
//! Host threads: the hub runs in the process that called `ncclGetUniqueId` (one acceptor, one
//! reader per rank, one combining thread), so that process must outlive the communicator, as
//! rank 0 does. Several communicators per process work (each id has its own hub).

pub mod api;
pub mod client;
pub mod collectives;
pub mod errors;
pub mod hub;
pub mod id;
pub mod reduce;
pub mod wire;

use std::time::Duration;

/// How long a rank waits for the others (`MOCO_EMU_NCCL_TIMEOUT`, seconds, fractions allowed;
/// default 300), read when a communicator is made.
pub fn timeout() -> Duration {
    std::env::var("MOCO_EMU_NCCL_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(300))
}

/// The extra time a rank waits beyond the hub's timeout, so that the hub, which knows which
/// ranks are missing, normally reports first; the rank's own timeout is the backstop for a
/// hub that stopped (its process was stopped, say).
pub const CLIENT_MARGIN: Duration = Duration::from_secs(5);
