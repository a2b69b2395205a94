//! All-gather and broadcast: pure copies around the ring, so any order gives the same bits.
//!
//! All-gather is the textbook ring: each rank sends its own block to the next rank and
//! forwards every block it receives until the block would reach its origin again; each link
//! carries (W-1) blocks, the minimum. Broadcast is a pipelined chain from the root.

use super::all_reduce::segment_lens;
use super::exchange::{Ctx, Exchange, Payload};
use super::header::{FINAL, PARTIAL};
use crate::collective::CollectiveResult;

const NO_SLOT: usize = usize::MAX;

/// `recv` = every rank's `send` in rank order (lengths checked by the caller).
pub fn all_gather<'b>(
    ex: &mut Exchange<'_, 'b, u8>,
    ctx: &Ctx,
    send: &'b [u8],
    recv: &'b mut [u8],
) -> CollectiveResult<()> {
    let len = send.len();
    let seg_elems = ctx.seg_elems::<u8>();
    let lens = segment_lens(len, seg_elems);
    let nseg = lens.len();
    let mut blocks: Vec<&'b mut [u8]> = recv.chunks_mut(len).collect();
    blocks[ctx.rank].copy_from_slice(send);
    for (s, piece) in send.chunks(seg_elems).enumerate() {
        ex.send(PARTIAL, ctx.rank * nseg + s, Payload::Shared(piece), NO_SLOT)?;
    }
    // Blocks arrive in the order the previous rank sent them: its own, then the ones it forwarded.
    for k in 1..ctx.world {
        let origin = (ctx.rank + ctx.world - k) % ctx.world;
        let forward = origin != ctx.next_rank();
        let block = std::mem::take(&mut blocks[origin]);
        for (s, piece) in block.chunks_mut(seg_elems).enumerate() {
            let h = ex.recv_header()?;
            ex.expect(&h, PARTIAL, origin * nseg + s, lens[s])?;
            ex.recv_payload(piece)?;
            if forward {
                ex.send(PARTIAL, origin * nseg + s, Payload::Shared(piece), NO_SLOT)?;
            }
        }
    }
    Ok(())
}

/// Every rank's `buf` = rank `root`'s (root checked by the caller).
pub fn broadcast<'b>(
    ex: &mut Exchange<'_, 'b, u8>,
    ctx: &Ctx,
    buf: &'b mut [u8],
    root: usize,
) -> CollectiveResult<()> {
    let seg_elems = ctx.seg_elems::<u8>();
    if ctx.rank == root {
        for (s, piece) in buf.chunks(seg_elems).enumerate() {
            ex.send(FINAL, s, Payload::Shared(piece), NO_SLOT)?;
        }
        return Ok(());
    }
    let forward = ctx.next_rank() != root;
    for (s, piece) in buf.chunks_mut(seg_elems).enumerate() {
        let h = ex.recv_header()?;
        ex.expect(&h, FINAL, s, piece.len())?;
        ex.recv_payload(piece)?;
        if forward {
            ex.send(FINAL, s, Payload::Shared(piece), NO_SLOT)?;
        }
    }
    Ok(())
}
