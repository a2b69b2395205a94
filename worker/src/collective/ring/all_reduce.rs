//! All-reduce (sum) with a fixed, rank-order summation.
//!
//! Why not the textbook ring (reduce-scatter + all-gather with rotating chunk owners): there
//! chunk c is summed in the order c+1, c+2, ..., c, a different association for every chunk,
//! so the result depends on the world size and differs from a single-process sum.
//!
//! Here every segment's partial sum starts at rank 0 and travels the ring in rank order, each
//! rank adding its own values (`partial + x_r`), so rank W-1 holds `((x0 + x1) + ...) + x_{W-1}`
//! exactly as the reference computes it. Rank W-1 then sends the final segment on to rank 0,
//! which forwards it around to rank W-2. Segments are pipelined (a rank forwards segment s while
//! segment s+1 is still arriving) and the two phases overlap: the link W-1 -> 0, idle while
//! summing, carries the finals.
//!
//! Cost: 2(W-1) segment transfers per segment, the same total as the textbook ring, but not
//! evenly spread: the links 0->1 ... W-3->W-2 carry every byte twice (partials and finals), so
//! the busiest link moves 2N bytes against 2N(W-1)/W for the textbook ring: equal at W = 2,
//! 75% of its bandwidth at W = 4, 87.5% at W = 8. That is the price of determinism.

use super::exchange::{Ctx, Exchange, Payload};
use super::header::{FINAL, PARTIAL};
use crate::collective::CollectiveResult;

pub fn all_reduce<'b>(ex: &mut Exchange<'_, 'b, f32>, ctx: &Ctx, buf: &'b mut [f32]) -> CollectiveResult<()> {
    let seg_elems = ctx.seg_elems::<f32>();
    let lens = segment_lens(buf.len(), seg_elems);
    let nseg = lens.len();
    let mut slots: Vec<Option<&'b mut [f32]>> = buf.chunks_mut(seg_elems).map(Some).collect();
    let mut tmp = ex.buffer(seg_elems.min(lens.first().copied().unwrap_or(0)));
    let (rank, last) = (ctx.rank, ctx.last());

    if rank == last {
        // Add our values to each arriving partial and send the final on to rank 0.
        for (s, &len) in lens.iter().enumerate() {
            let h = ex.recv_header()?;
            ex.expect(&h, PARTIAL, s, len)?;
            ex.recv_payload(&mut tmp[..len])?;
            let seg = take(&mut slots, s, ctx)?;
            add_into(seg, &tmp[..len]);
            ex.send(FINAL, s, Payload::Mut(seg), s)?;
        }
        return Ok(());
    }

    // Ranks 0..W-2: pass partials on (rank 0 starts them), receive finals, and forward those
    // unless the next rank is W-1, where they were made.
    let forward_finals = rank + 2 < ctx.world;
    let mut partials_in = 0;
    if rank == 0 {
        for s in 0..nseg {
            let seg = take(&mut slots, s, ctx)?;
            ex.send(PARTIAL, s, Payload::Mut(seg), s)?;
        }
        partials_in = nseg;
    }
    let mut finals_in = 0;
    while finals_in < nseg {
        let h = ex.recv_header()?;
        if h.phase == PARTIAL && partials_in < nseg {
            let (s, len) = (partials_in, lens[partials_in]);
            ex.expect(&h, PARTIAL, s, len)?;
            ex.recv_payload(&mut tmp[..len])?;
            let seg = take(&mut slots, s, ctx)?;
            add_into(seg, &tmp[..len]);
            ex.send(PARTIAL, s, Payload::Mut(seg), s)?;
            partials_in += 1;
        } else {
            let (s, len) = (finals_in, lens[finals_in]);
            ex.expect(&h, FINAL, s, len)?;
            if s >= partials_in {
                return Err(ctx.protocol(format!("final of segment {s} arrived before its partial")));
            }
            let seg = ex.take_back(s)?;
            ex.recv_payload(seg)?;
            if forward_finals {
                ex.send(FINAL, s, Payload::Mut(seg), s)?;
            }
            finals_in += 1;
        }
    }
    ex.recycle(tmp);
    Ok(())
}

/// `seg[i] = partial[i] + seg[i]`: the partial (lower ranks) is the left operand, as in the
/// reference's `acc += x`.
fn add_into(seg: &mut [f32], partial: &[f32]) {
    for (d, p) in seg.iter_mut().zip(partial) {
        *d += *p;
    }
}

/// Lengths of the segments `n` elements are cut into.
pub fn segment_lens(n: usize, seg_elems: usize) -> Vec<usize> {
    (0..n.div_ceil(seg_elems)).map(|s| seg_elems.min(n - s * seg_elems)).collect()
}

fn take<'b>(slots: &mut [Option<&'b mut [f32]>], s: usize, ctx: &Ctx) -> CollectiveResult<&'b mut [f32]> {
    slots[s].take().ok_or_else(|| ctx.protocol(format!("segment {s} used twice")))
}
