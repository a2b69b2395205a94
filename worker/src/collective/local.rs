//! World of one: every collective is a copy or nothing.

use super::{check_gather_len, Collective, CollectiveError, CollectiveResult};

/// The collective of a single process (`--gpus 1`, CPU trials).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCollective;

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> CollectiveResult<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> CollectiveResult<()> {
        check_gather_len(send.len(), recv.len(), 1)?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> CollectiveResult<()> {
        if send.len() != recv.len() {
            return Err(CollectiveError::BadArgument(format!(
                "reduce_scatter: send has {} elements, expected world 1 x recv {}",
                send.len(),
                recv.len()
            )));
        }
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast_bytes(&self, _buf: &mut [u8], root: usize) -> CollectiveResult<()> {
        if root != 0 {
            return Err(CollectiveError::BadArgument(format!("broadcast root {root} >= world 1")));
        }
        Ok(())
    }
    fn barrier(&self) -> CollectiveResult<()> {
        Ok(())
    }
}
