//! Collective operations between the ranks of one run (DESIGN.md contract 8).
//!
//! - [`Collective`]: the trait every part takes as `&dyn Collective` (never a global).
//! - [`LocalCollective`]: world 1; every operation is a copy or nothing.
//! - [`RingCollective`]: TCP between processes on host buffers, chunked and pipelined; the CPU
//!   path and the test path.
//! - [`reference`]: the single-process definition of every result, which the ring equals bit
//!   for bit.
//! - [`local_ring`] / [`on_local_ring`]: W ranks as threads of one process, for tests.
//!
//! Every reduction sums in rank order, `((x0 + x1) + x2) + ...`, whatever the world size,
//! segment size or timing, so results are identical run to run and equal to [`reference`].
//! Calls must be made in the same order with the same lengths on every rank.

mod bridge;
mod error;
mod local;
pub mod nccl;
mod pod;
pub mod reference;
mod ring;
mod threads;

pub use bridge::AsComm;
pub use error::CollectiveError;
pub use local::LocalCollective;
pub use pod::Pod;
pub use ring::{RingCollective, RingOptions};
pub use threads::{local_ring, on_local_ring};

use half::f16;
use pod::{bytes, bytes_mut};

pub type CollectiveResult<T> = std::result::Result<T, CollectiveError>;

/// The collective operations of a group of `world` ranks. Object safe: pass `&dyn Collective`.
///
/// Results are defined by [`reference`]: every rank ends with the same bits, and sums are taken
/// in rank order. A failed peer is an error within the implementation's timeout, never a panic
/// or a hang.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;

    /// `buf[i]` becomes `((x0[i] + x1[i]) + x2[i]) + ...` over ranks 0, 1, ..., W-1, on every rank.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> CollectiveResult<()>;

    /// `recv` (length W * `send.len()`) becomes every rank's `send`, concatenated in rank order.
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> CollectiveResult<()>;

    /// Layout: `send` holds W equal chunks of `recv.len()` elements, chunk `r` destined for rank
    /// `r`; `recv` becomes the rank-order sum of every rank's chunk `self.rank()`.
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> CollectiveResult<()>;

    /// Every rank's `buf` becomes rank `root`'s `buf` (lengths must agree).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> CollectiveResult<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> CollectiveResult<()>;

    /// Sum of f16 values, accumulated in f32 in rank order and rounded to f16 once at the end.
    fn all_reduce_sum_f16(&self, buf: &mut [f16]) -> CollectiveResult<()> {
        let mut wide: Vec<f32> = buf.iter().map(|v| v.to_f32()).collect();
        self.all_reduce_sum_f32(&mut wide)?;
        for (d, w) in buf.iter_mut().zip(&wide) {
            *d = f16::from_f32(*w);
        }
        Ok(())
    }

    /// `recv` (length W * `send.len()`) becomes every rank's `send`, in rank order.
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> CollectiveResult<()> {
        self.all_gather_bytes(bytes(send), bytes_mut(recv))
    }

    /// As [`Collective::all_gather_f32`] for i64 (dataset indices of queue rows, for example).
    fn all_gather_i64(&self, send: &[i64], recv: &mut [i64]) -> CollectiveResult<()> {
        self.all_gather_bytes(bytes(send), bytes_mut(recv))
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> CollectiveResult<()> {
        self.broadcast_bytes(bytes_mut(buf), root)
    }

    /// True on every rank if `flag` is true on any rank (the global inf/NaN verdict).
    fn all_reduce_or(&self, flag: bool) -> CollectiveResult<bool> {
        let mut all = vec![0u8; self.world()];
        self.all_gather_bytes(&[flag as u8], &mut all)?;
        Ok(all.iter().any(|&b| b != 0))
    }

    /// Maximum over ranks; NaN if any rank passes NaN.
    fn all_reduce_max_f64(&self, value: f64) -> CollectiveResult<f64> {
        let mut all = vec![0f64; self.world()];
        self.all_gather_bytes(bytes(&[value]), bytes_mut(&mut all))?;
        Ok(all
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| if v.is_nan() || m.is_nan() { f64::NAN } else { m.max(v) }))
    }
}

fn check_gather_len(send: usize, recv: usize, world: usize) -> CollectiveResult<()> {
    if send.checked_mul(world) != Some(recv) {
        return Err(CollectiveError::BadArgument(format!(
            "all_gather: recv has {recv} bytes, expected world {world} x send {send} bytes"
        )));
    }
    Ok(())
}
