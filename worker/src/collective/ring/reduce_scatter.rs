//! Reduce-scatter (sum) with the same rank-order summation as the all-reduce.
//!
//! Layout: `send` holds W chunks of `recv.len()` elements; chunk c goes to rank c. Every
//! segment's partial sum starts at rank 0 and travels in rank order to rank W-1 (see
//! all_reduce.rs); rank W-1 keeps chunk W-1 and sends the final of chunk c < W-1 on through
//! ranks 0, 1, ..., c, where it stops. The busiest link (0 -> 1) carries N + (W-2)N/W elements
//! for a send buffer of N, against (W-1)N/W for the textbook ring; this operation is used on
//! small buffers in the MoCo step, where determinism matters more.

use super::all_reduce::segment_lens;
use super::exchange::{Ctx, Exchange, Payload};
use super::header::{FINAL, PARTIAL};
use crate::collective::CollectiveResult;

const NO_SLOT: usize = usize::MAX;

/// Lengths checked by the caller: `send.len() == world * recv.len()`.
pub fn reduce_scatter<'b>(
    ex: &mut Exchange<'_, 'b, f32>,
    ctx: &Ctx,
    send: &'b [f32],
    recv: &'b mut [f32],
) -> CollectiveResult<()> {
    let chunk = recv.len();
    let seg_elems = ctx.seg_elems::<f32>();
    let lens = segment_lens(chunk, seg_elems);
    let nseg = lens.len();
    let (rank, last, world) = (ctx.rank, ctx.last(), ctx.world);
    // Item i = c * nseg + s: segment s of chunk c, which starts at `start(i)` in `send`.
    let start = |i: usize| (i / nseg) * chunk + (i % nseg) * seg_elems;
    let mut mine: Vec<&'b mut [f32]> = recv.chunks_mut(seg_elems).collect();

    if rank == last {
        for i in 0..world * nseg {
            let (c, len) = (i / nseg, lens[i % nseg]);
            let h = ex.recv_header()?;
            ex.expect(&h, PARTIAL, i, len)?;
            let mut sum = ex.buffer(len);
            ex.recv_payload(&mut sum)?;
            add_into(&mut sum, &send[start(i)..start(i) + len]);
            if c == last {
                mine[i % nseg].copy_from_slice(&sum);
                ex.recycle(sum);
            } else {
                ex.send(FINAL, i, Payload::Owned(sum), NO_SLOT)?;
            }
        }
        return Ok(());
    }

    let mut partials_in = 0;
    if rank == 0 {
        for i in 0..world * nseg {
            let len = lens[i % nseg];
            ex.send(PARTIAL, i, Payload::Shared(&send[start(i)..start(i) + len]), NO_SLOT)?;
        }
        partials_in = world * nseg;
    }
    // Finals that reach this rank: chunks rank..W-2, in order; chunk `rank` stays here.
    let finals = (last - rank) * nseg;
    let mut finals_in = 0;
    while partials_in < world * nseg || finals_in < finals {
        let h = ex.recv_header()?;
        if h.phase == PARTIAL && partials_in < world * nseg {
            let (i, len) = (partials_in, lens[partials_in % nseg]);
            ex.expect(&h, PARTIAL, i, len)?;
            let mut sum = ex.buffer(len);
            ex.recv_payload(&mut sum)?;
            add_into(&mut sum, &send[start(i)..start(i) + len]);
            ex.send(PARTIAL, i, Payload::Owned(sum), NO_SLOT)?;
            partials_in += 1;
        } else if finals_in < finals {
            let i = rank * nseg + finals_in;
            let len = lens[i % nseg];
            ex.expect(&h, FINAL, i, len)?;
            if i / nseg == rank {
                ex.recv_payload(mine[i % nseg])?;
            } else {
                let mut fwd = ex.buffer(len);
                ex.recv_payload(&mut fwd)?;
                ex.send(FINAL, i, Payload::Owned(fwd), NO_SLOT)?;
            }
            finals_in += 1;
        } else {
            return Err(ctx.protocol(format!("unexpected segment (phase {}, item {})", h.phase, h.item)));
        }
    }
    Ok(())
}

/// `sum[i] = sum[i] + own[i]`: the partial of the lower ranks stays the left operand.
fn add_into(sum: &mut [f32], own: &[f32]) {
    for (d, o) in sum.iter_mut().zip(own) {
        *d += *o;
    }
}
