//! The one GEMM under every convolution and linear layer: a bounds-checked safe wrapper over
//! the `gemm` crate's single-threaded kernels (packed, runtime-dispatched SIMD micro-kernels,
//! with small-matrix paths that matter for the thin layers of narrow ResNets), and a
//! tile-parallel version over the rayon pool.
//!
//! Operands carry explicit row and column strides, so a transposed operand is just the other
//! stride order and no transpose is ever materialised. The output is always row-major.
//!
//! Determinism: each `gemm` call runs on one thread, and the parallel version cuts C into a
//! tile grid that depends only on (m, k, n), never on the thread count, so every output
//! element is computed by the same call, in the same order, on every run. (The crate picks
//! its kernels and blocking from the CPU's instruction set and cache sizes, so another
//! machine may round differently.)

use gemm::Parallelism;
use rayon::prelude::*;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn rows_t(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: 1, cs: cols }
    }
}

/// Panics unless every element of an r x c matrix with strides (rs, cs) lies inside `len`.
fn check_bounds(what: &str, r: usize, c: usize, rs: usize, cs: usize, len: usize) {
    if r == 0 || c == 0 {
        return;
    }
    let last = (r - 1) * rs + (c - 1) * cs;
    assert!(
        last < len,
        "sgemm: {what} ({r} x {c}, strides {rs}, {cs}) needs {} elements, has {len}",
        last + 1
    );
    assert!(last <= isize::MAX as usize, "sgemm: {what} exceeds isize");
}

/// C = A . B (`accumulate` false: C is overwritten and never read, so NaN already there does
/// not leak in) or C += A . B (`accumulate` true: parameter gradients). A `[m, k]`,
/// B `[k, n]` strided; C `[m, n]` row-major with row stride `ldc` starting at `c`.
///
/// # Safety
/// `c` must be valid for reads and writes of the m x n block with row stride `ldc`, and no
/// other live reference may touch that block.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY (for the callers' contract): bounds of A and B are checked by the public entry
    // points; gemm reads A and B within the m x k and k x n strided blocks and writes only
    // the m x n block of C. With read_dst = false it zeroes its alpha (C is not read); beta
    // = 1 scales A . B. k = 0 writes zeros (or leaves C) as an empty sum should.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

fn check_all(m: usize, k: usize, n: usize, a: &MatRef<'_>, b: &MatRef<'_>, c_len: usize) {
    check_bounds("A", m, k, a.rs, a.cs, a.data.len());
    check_bounds("B", k, n, b.rs, b.cs, b.data.len());
    assert_eq!(c_len, m * n, "sgemm: C must be exactly [{m}, {n}]");
}

/// C = A . B or C += A . B on the calling thread. C `[m, n]` row-major.
pub fn sgemm(m: usize, k: usize, n: usize, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool) {
    check_all(m, k, n, &a, &b, c.len());
    // SAFETY: c is an exclusive borrow of exactly m * n elements, the row-major m x n block.
    unsafe { gemm_block(m, k, n, a, b, c.as_mut_ptr(), n, accumulate) }
}

/// Work below which a tile is not split further (~40 us of one core).
const MIN_TILE_FLOPS: usize = 4 << 20;
/// Most tiles of one parallel GEMM.
const MAX_TILES: usize = 64;

/// The tile grid (rows per tile, cols per tile) for an m x k x n product: a function of the
/// shape only. Rows are split first (contiguous, and A's rows are read once); columns only
/// when too few rows remain.
pub fn tile_grid(m: usize, k: usize, n: usize) -> (usize, usize) {
    let flops = 2 * m * n * k.max(1);
    let tiles = (flops / MIN_TILE_FLOPS).clamp(1, MAX_TILES);
    let row_tiles = tiles.min(m.div_ceil(32)).max(1);
    let col_tiles = (tiles / row_tiles).clamp(1, n.div_ceil(64).max(1));
    let tm = m.div_ceil(row_tiles).next_multiple_of(8).max(1);
    let tn = n.div_ceil(col_tiles).next_multiple_of(16).max(1);
    (tm, tn)
}

/// A raw output pointer shared by the tile tasks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks that share an OutPtr write disjoint tiles of the block it points to (see
// par_sgemm), and the exclusive borrow it came from outlives them all.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole Send + Sync wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// As [`sgemm`], with the tiles of [`tile_grid`] run in parallel on the rayon pool.
pub fn par_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    accumulate: bool,
) {
    check_all(m, k, n, &a, &b, c.len());
    let (tm, tn) = tile_grid(m, k, n);
    let (rt, ct) = (m.div_ceil(tm), n.div_ceil(tn));
    if rt * ct <= 1 || k == 0 {
        sgemm(m, k, n, a, b, c, accumulate);
        return;
    }
    let out = OutPtr(c.as_mut_ptr());
    (0..rt * ct).into_par_iter().for_each(|t| {
        let (i0, j0) = ((t / ct) * tm, (t % ct) * tn);
        let (mb, nb) = (tm.min(m - i0), tn.min(n - j0));
        // Sub-matrices: A's rows i0.., B's columns j0.. (offsets within their checked bounds).
        let a_t = MatRef { data: &a.data[i0 * a.rs..], ..a };
        let b_t = MatRef { data: &b.data[j0 * b.cs..], ..b };
        // SAFETY: tile (i0, j0) of size mb x nb lies inside the m x n row-major block of `c`
        // (i0 + mb <= m, j0 + nb <= n), tiles of the grid are pairwise disjoint, and `c` stays
        // exclusively borrowed until for_each returns.
        unsafe { gemm_block(mb, k, nb, a_t, b_t, out.get().add(i0 * n + j0), n, accumulate) }
    });
}
