//! The queue op family on the CUDA backend (`Backend::queue_enqueue`, the fused
//! pointer-advance kernels of `cu/queue.cu`, and `Backend::mask_own_image`) against the CPU
//! backend, bit for bit: for an fp32 and an fp16 shard, five enqueues into 8 rows (the fifth
//! wraps to row 0) with the pointer kept in a device buffer, then a corrupted device pointer,
//! which must leave the shard untouched and set the error flag; then the own-image mask from the
//! shard's device-side indices. Run on the emulated CUDA device only; NOT YET RUN ON A GPU.

use super::report::Row;
use crate::backend::Backend;
use crate::cpu::Cpu;
use crate::cuda::launch::Dtype;
use crate::cuda::CudaBackend;
use crate::error::Result;

const ROWS: usize = 8;
const DIM: usize = 4;
const B: usize = 2;

fn row(precision: &'static str, op: &str, pass: bool, note: String) -> Row {
    Row {
        precision,
        op: op.to_string(),
        max_abs: if pass { 0.0 } else { f64::INFINITY },
        max_rel: if pass { 0.0 } else { f64::INFINITY },
        tol: 0.0,
        pass,
        note,
    }
}

/// Keys of enqueue `step`: exact fp16 values, distinct per step, row and column.
fn keys_of(step: usize) -> Vec<f32> {
    (0..B * DIM).map(|j| (step * 16 + j) as f32 / 8.0).collect()
}

/// A shard on one backend: keys, row indices, pointer, error flag.
struct Shard<X: Backend> {
    queue: X::Buf,
    idx: X::Buf,
    ptr: X::Buf,
    error: X::Buf,
    /// What the latest enqueue overwrote: keys, indices, pointer.
    saved: [X::Buf; 3],
    /// The queue stores fp16 (`Backend::queue_enqueue`'s `half`).
    half: bool,
}

impl<X: Backend> Shard<X> {
    fn new(be: &X, queue: X::Buf, half: bool) -> Result<Self> {
        Ok(Shard {
            half,
            queue,
            idx: be.from_host(&[-1.0; ROWS])?,
            ptr: be.from_host(&[0.0])?,
            error: be.from_host(&[0.0])?,
            saved: [be.from_host(&[0.0; B * DIM])?, be.from_host(&[0.0; B])?, be.from_host(&[0.0])?],
        })
    }

    fn enqueue(&mut self, be: &X, keys: &[f32], idx: &[f32]) -> Result<()> {
        let (k, i) = (be.act_from_host(keys)?, be.from_host(idx)?);
        be.queue_enqueue(
            ROWS,
            DIM,
            self.half,
            X::view(&k, 0..keys.len()),
            X::view(&i, 0..idx.len()),
            X::view_mut(&mut self.queue, 0..ROWS * DIM),
            X::view_mut(&mut self.idx, 0..ROWS),
            X::view_mut(&mut self.ptr, 0..1),
            X::view_mut(&mut self.error, 0..1),
            self.saved.each_mut().map(|s| {
                let n = X::buf_len(s);
                X::view_mut(s, 0..n)
            }),
        );
        be.sync()
    }

    /// (keys, indices, pointer, error flag) as bits, so NaN compares too.
    fn read(&self, be: &X) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        let [sk, si, sp] = &self.saved;
        for b in [&self.queue, &self.idx, &self.ptr, &self.error, sk, si, sp] {
            v.extend(be.to_host(b)?.iter().map(|x| x.to_bits()));
        }
        Ok(v)
    }
}

/// The same enqueues on both backends; `queue` is the CUDA shard in the precision under test.
fn compare(
    cpu: &Cpu,
    cuda: &CudaBackend,
    queue: crate::cuda::CudaBuf,
    precision: &'static str,
) -> Result<Vec<Row>> {
    let half = precision == "fp16";
    let mut c = Shard::new(cpu, vec![0.0; ROWS * DIM].into(), half)?;
    let mut g = Shard::new(cuda, queue, half)?;
    for step in 0..5 {
        let idx: Vec<f32> = (0..B).map(|j| (100 * step + j) as f32).collect();
        c.enqueue(cpu, &keys_of(step), &idx)?;
        g.enqueue(cuda, &keys_of(step), &idx)?;
    }
    let (want, got) = (c.read(cpu)?, g.read(cuda)?);
    // The layout of `read`: queue, indices, pointer, error, then the saved rows, indices, pointer.
    let at = ROWS * DIM + ROWS;
    let ptr = f32::from_bits(got[at]);
    let mut rows = vec![row(
        precision,
        "queue_enqueue x5 into 8 rows (wraps): keys, indices, device pointer, saved rows = CPU",
        want == got && ptr == 2.0,
        format!("pointer {ptr} (want 2)"),
    )];

    // A pointer that is not a multiple of the batch: nothing written, error 2, on both.
    cpu.write(&mut c.ptr, 0, &[1.0])?;
    cuda.write(&mut g.ptr, 0, &[1.0])?;
    c.enqueue(cpu, &[-1.0; B * DIM], &[7.0, 7.0])?;
    g.enqueue(cuda, &[-1.0; B * DIM], &[7.0, 7.0])?;
    let (want2, got2) = (c.read(cpu)?, g.read(cuda)?);
    let err = f32::from_bits(got2[at + 1]);
    let untouched = got2[..at] == got[..at];
    rows.push(row(
        precision,
        "queue_enqueue with a corrupted device pointer writes nothing and flags it (= CPU)",
        want2 == got2 && untouched && err == crate::backend::queue_error::POINTER,
        format!("error flag {err} ({})", crate::backend::describe_queue_error(err)),
    ));

    // Own-image mask of 3 queries against the shard's device-side indices (rows 0-1 hold
    // images 400-401 after the wrap, rows 2-3 images 100-101, ...). Positives at columns 1 + r:
    // both first queries are of image 100 (column 2); the first loses it, the second keeps it
    // as its positive, the third (index -1) matches nothing.
    let q_idx = [100.0f32, 100.0, -1.0];
    let mut lc = vec![0.5f32; 3 * ROWS];
    let (qc, qg) = (cpu.from_host(&q_idx)?, cuda.from_host(&q_idx)?);
    cpu.mask_own_image(3, ROWS, &qc, &c.idx, Some(1), &mut lc);
    let mut lg = cuda.from_host(&[0.5f32; 3 * ROWS])?;
    cuda.mask_own_image(
        3,
        ROWS,
        qg.full(),
        g.idx.full(),
        Some(1),
        <CudaBackend as Backend>::view_mut(&mut lg, 0..3 * ROWS),
    );
    let lg = cuda.to_host(&lg)?;
    let masked = lc.iter().filter(|x| x.is_infinite()).count();
    rows.push(row(
        precision,
        "mask_own_image from the shard's device indices (= CPU)",
        lg.iter().map(|x| x.to_bits()).eq(lc.iter().map(|x| x.to_bits())) && masked == 1,
        format!("{masked} cell(s) masked (want 1: the label column is kept)"),
    ));
    Ok(rows)
}

pub(crate) fn check(cpu: &Cpu, cuda: &CudaBackend) -> Result<Vec<Row>> {
    let mut rows = compare(cpu, cuda, cuda.zeros_master(ROWS * DIM)?, "fp32")?;
    let f16 = cuda.zeros_of(Dtype::F16, "fp16 queue", ROWS * DIM)?;
    rows.extend(compare(cpu, cuda, f16, "fp16")?);
    Ok(rows)
}
