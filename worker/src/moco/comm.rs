//! What the MoCo step needs from the collective layer, and small helpers on device buffers.

use super::device_comm::DeviceComm;
use crate::error::Result;
use crate::model::bn::StatSync;
use moco_kernels::Backend;

/// The collective operations the MoCo step uses (host buffers, rank order, deterministic).
pub trait Comm: Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// `recv` = every rank's `send`, concatenated in rank order.
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    fn all_gather_i64(&self, send: &[i64], recv: &mut [i64]) -> Result<()>;
    /// `recv` (len L) = sum over ranks of `send[rank*L..(rank+1)*L]`.
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
}

/// World of one: every collective is a copy.
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_i64(&self, send: &[i64], recv: &mut [i64]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
}

/// SyncBN statistics through the collective: the device collective when the run has one (no
/// host round trip), else the host `Comm`.
pub struct StatSyncComm<'a, B: Backend> {
    pub comm: &'a dyn Comm,
    pub dev: Option<&'a dyn DeviceComm<B>>,
}

impl<B: Backend> StatSync<B> for StatSyncComm<'_, B> {
    fn world(&self) -> usize {
        self.comm.world()
    }
    fn sum(&self, be: &B, values: &mut B::Buf) -> Result<()> {
        if self.comm.world() == 1 {
            // A sum over one rank is the buffer itself: no copy to the host and back.
            return Ok(());
        }
        match self.dev {
            Some(dc) => dc.all_reduce_sum(be, values),
            None => all_reduce_buf(be, self.comm, values),
        }
    }
}

/// In place: `buf` becomes the sum over ranks, through host memory (zero-copy where the
/// backend's memory is host memory).
pub fn all_reduce_buf<B: Backend>(be: &B, comm: &dyn Comm, buf: &mut B::Buf) -> Result<()> {
    match B::host_mut(buf) {
        Some(host) => comm.all_reduce_sum(host),
        None => {
            let mut host = be.to_host(buf)?;
            comm.all_reduce_sum(&mut host)?;
            Ok(be.write(buf, 0, &host)?)
        }
    }
}

/// Every rank's `buf`, concatenated in rank order, as a device buffer.
pub fn all_gather_buf<B: Backend>(be: &B, comm: &dyn Comm, buf: &B::Buf) -> Result<B::Buf> {
    if comm.world() == 1 {
        return crate::model::heads::clone_buf(be, buf);
    }
    // Staging to and from the host is part of the exchange's cost (trace phase "comm").
    let _s = tracing::info_span!("comm").entered();
    let send = be.to_host(buf)?;
    let mut recv = vec![0.0f32; send.len() * comm.world()];
    comm.all_gather(&send, &mut recv)?;
    Ok(be.act_from_host(&recv)?)
}
