//! `RingCollective`: the ranks of a run connected in a ring over TCP (host buffers).
//!
//! Each rank holds one connection to the next rank (written) and one from the previous rank
//! (read), with TCP_NODELAY and blocking sockets whose timeouts bound every wait. Buffers are
//! cut into segments of `RingOptions::segment_bytes`; a sender thread per call overlaps sending
//! with receiving, and calls of at most 16 KiB skip the thread (exchange.rs). Sums run in rank
//! order (all_reduce.rs), so results are deterministic and equal to `collective::reference`.

mod all_reduce;
mod exchange;
mod gather;
mod handshake;
mod header;
mod reduce_scatter;
#[cfg(test)]
mod tests;

use super::local::LocalCollective;
use super::{check_gather_len, Collective, CollectiveError, CollectiveResult};
use exchange::{Ctx, Links};
use header::Op;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

/// Knobs of a ring. `Default`: 60 s timeouts, 512 KiB segments, calls up to 16 KiB written
/// from the calling thread.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// How long a call may make no progress (no byte read or written) before it fails with
    /// `Timeout`. Must exceed the longest time one rank can lag the others between two
    /// collectives (e.g. rank 0 writing a checkpoint while the others wait in a barrier).
    pub timeout: Duration,
    /// How long `connect` waits for the neighbours to appear and answer.
    pub connect_timeout: Duration,
    /// Pipeline granularity: large enough to amortise system calls, small enough that W
    /// ranks work on different segments at once.
    pub segment_bytes: usize,
    /// Calls whose buffers total at most this many bytes are written by the calling thread
    /// instead of a sender thread (lower latency). Capped at `exchange::SMALL_CALL_BYTES`
    /// (16 KiB), the size up to which this cannot deadlock; 0 always uses the sender thread.
    pub small_call_bytes: usize,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(60),
            segment_bytes: 512 << 10,
            small_call_bytes: exchange::SMALL_CALL_BYTES,
        }
    }
}

/// A rank of a TCP ring. Calls are serialised by an internal lock; they must be issued in the
/// same order, with the same lengths, on every rank.
pub struct RingCollective {
    rank: usize,
    world: usize,
    opts: RingOptions,
    state: Mutex<State>,
}

struct State {
    /// None for world 1.
    links: Option<Links>,
    seq: u32,
    broken: Option<String>,
}

impl RingCollective {
    /// Join the ring as `rank` of `world`. `listener` is this rank's already-bound listener;
    /// `peers[r]` is the address of rank r's listener; `run_token` identifies the run (a
    /// connection with another token is refused). `timeout` bounds both the setup and each
    /// call's wait for progress.
    pub fn connect(
        rank: usize,
        world: usize,
        listener: TcpListener,
        peers: &[SocketAddr],
        run_token: u64,
        timeout: Duration,
    ) -> CollectiveResult<Self> {
        let opts = RingOptions { timeout, connect_timeout: timeout, ..RingOptions::default() };
        Self::connect_with(rank, world, listener, peers, run_token, opts)
    }

    /// `connect` with every option.
    pub fn connect_with(
        rank: usize,
        world: usize,
        listener: TcpListener,
        peers: &[SocketAddr],
        run_token: u64,
        opts: RingOptions,
    ) -> CollectiveResult<Self> {
        if world == 0 || rank >= world || peers.len() != world {
            return Err(CollectiveError::BadArgument(format!(
                "rank {rank} of world {world} with {} peer addresses",
                peers.len()
            )));
        }
        if opts.segment_bytes < 64 || opts.timeout.is_zero() || opts.connect_timeout.is_zero() {
            return Err(CollectiveError::BadArgument(format!("ring options out of range: {opts:?}")));
        }
        let links = if world == 1 {
            None
        } else {
            Some(handshake::connect(rank, world, listener, peers, run_token, &opts)?)
        };
        tracing::debug!("ring: rank {rank} of {world} connected");
        Ok(RingCollective { rank, world, opts, state: Mutex::new(State { links, seq: 0, broken: None }) })
    }

    pub fn options(&self) -> &RingOptions {
        &self.opts
    }

    /// Run one call on the links (world >= 2); any failure breaks the ring for good and closes
    /// both connections, so the neighbours fail at once rather than at their timeout.
    fn call<R>(
        &self,
        op: Op,
        f: impl FnOnce(&mut Links, &Ctx) -> CollectiveResult<R>,
    ) -> CollectiveResult<R> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.broken {
            return Err(CollectiveError::Broken(why.clone()));
        }
        st.seq = st.seq.wrapping_add(1);
        let ctx = Ctx {
            rank: self.rank,
            world: self.world,
            op,
            seq: st.seq,
            segment_bytes: self.opts.segment_bytes,
            small_call_bytes: self.opts.small_call_bytes.min(exchange::SMALL_CALL_BYTES),
            timeout: self.opts.timeout,
        };
        let State { links, broken, .. } = &mut *st;
        let Some(links) = links.as_mut() else {
            return Err(CollectiveError::BadArgument("a ring of world 1 has no links".into()));
        };
        let r = f(links, &ctx);
        if let Err(e) = &r {
            links.shutdown();
            *broken = Some(e.to_string());
        }
        r
    }

    fn fail(&self, e: CollectiveError) -> CollectiveError {
        // A bad call on one rank leaves the others waiting: break the ring so they fail now.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &st.links {
            l.shutdown();
        }
        st.broken.get_or_insert_with(|| e.to_string());
        e
    }
}

fn bytes_of(v: &[f32]) -> usize {
    std::mem::size_of_val(v)
}

impl Collective for RingCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> CollectiveResult<()> {
        if self.world == 1 || buf.is_empty() {
            return Ok(());
        }
        self.call(Op::AllReduce, |l, c| {
            exchange::run(l, c, bytes_of(buf), move |ex| all_reduce::all_reduce(ex, c, buf))
        })
    }

    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> CollectiveResult<()> {
        check_gather_len(send.len(), recv.len(), self.world).map_err(|e| self.fail(e))?;
        if self.world == 1 || send.is_empty() {
            return LocalCollective.all_gather_bytes(send, &mut recv[..send.len()]);
        }
        self.call(Op::AllGather, |l, c| {
            exchange::run(l, c, recv.len(), move |ex| gather::all_gather(ex, c, send, recv))
        })
    }

    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> CollectiveResult<()> {
        if recv.len().checked_mul(self.world) != Some(send.len()) {
            return Err(self.fail(CollectiveError::BadArgument(format!(
                "reduce_scatter: send has {} elements, expected world {} x recv {}",
                send.len(),
                self.world,
                recv.len()
            ))));
        }
        if self.world == 1 || recv.is_empty() {
            return LocalCollective.reduce_scatter_sum_f32(&send[..recv.len()], recv);
        }
        self.call(Op::ReduceScatter, |l, c| {
            exchange::run(l, c, bytes_of(send), move |ex| reduce_scatter::reduce_scatter(ex, c, send, recv))
        })
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> CollectiveResult<()> {
        if root >= self.world {
            return Err(self.fail(CollectiveError::BadArgument(format!(
                "broadcast root {root} >= world {}",
                self.world
            ))));
        }
        if self.world == 1 || buf.is_empty() {
            return Ok(());
        }
        self.call(Op::Broadcast, |l, c| {
            exchange::run(l, c, buf.len(), move |ex| gather::broadcast(ex, c, buf, root))
        })
    }

    fn barrier(&self) -> CollectiveResult<()> {
        // Rank r's byte reaches everyone only after r entered the call: an all-gather is a barrier.
        let mut all = vec![0u8; self.world];
        self.all_gather_bytes(&[1], &mut all)
    }
}
