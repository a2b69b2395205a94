//! Reused scratch memory for column matrices and gradient partials, and the fixed work
//! splits of reductions.
//!
//! Convolutions need column buffers of up to a few MB per task. Allocating them per call
//! would page-fault fresh memory on every layer of every step, so buffers are recycled
//! through a small pool (a pool rather than thread-locals because a rayon worker can start a
//! second task while waiting inside the first).

use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Buffers kept for reuse beyond which returned ones are freed.
fn max_pooled() -> usize {
    rayon::current_num_threads() + 2
}

/// Largest buffer kept for reuse (16 MB); larger ones (single huge images) are freed.
const MAX_POOLED_LEN: usize = 4 << 20;

/// Runs `f` with a scratch slice of exactly `len` elements. The contents are unspecified:
/// callers overwrite every element they read.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let pooled = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
    let mut buf = pooled.unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if pool.len() < max_pooled() && buf.len() <= MAX_POOLED_LEN {
        pool.push(buf);
    }
    result
}

/// Rows per task for a row-parallel reduction over `m` rows of `c` columns: a split that
/// depends only on the shape, never on the thread count, so sums come out bit-identical on
/// every machine. About 64 K elements per chunk keeps rayon's overhead negligible.
pub fn reduce_rows_per_chunk(m: usize, c: usize) -> usize {
    (65_536 / c.max(1)).clamp(1, m.max(1))
}

/// Elements per task of a flat elementwise or reduction op (fixed, as above).
pub const FLAT_CHUNK: usize = 1 << 15;
