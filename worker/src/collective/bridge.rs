//! The MoCo step's view of the collective layer (`moco::comm::Comm`), served by any
//! `Collective`. Every call is a "comm" span (`trace`), wherever the step makes it.

use super::Collective;
use crate::error::Result;
use crate::moco::comm::Comm;

/// `&dyn Collective` as the `Comm` the MoCo step takes.
pub struct AsComm<'a>(pub &'a dyn Collective);

impl Comm for AsComm<'_> {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world(&self) -> usize {
        self.0.world()
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let _s = tracing::info_span!("comm").entered();
        Ok(self.0.all_reduce_sum_f32(buf)?)
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let _s = tracing::info_span!("comm").entered();
        Ok(self.0.all_gather_f32(send, recv)?)
    }
    fn all_gather_i64(&self, send: &[i64], recv: &mut [i64]) -> Result<()> {
        let _s = tracing::info_span!("comm").entered();
        Ok(self.0.all_gather_i64(send, recv)?)
    }
    fn reduce_scatter_sum(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let _s = tracing::info_span!("comm").entered();
        Ok(self.0.reduce_scatter_sum_f32(send, recv)?)
    }
}
