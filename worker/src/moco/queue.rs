//! The rank's shard of the global negative queue (DESIGN.md contract 5).
//!
//! The global queue holds K unit keys; rank r owns rows [r*K/W, (r+1)*K/W) of it at init and
//! afterwards enqueues its own keys into its own shard, so no rank ever holds the whole queue.
//! Every row remembers the dataset index of the image its key came from, so a query's own image
//! can be masked out of its negatives.
//!
//! All of it lives on the device: the keys, the index of each row and the write pointer. The
//! enqueue is one backend op (`Backend::queue_enqueue`, the fused pointer-advance kernel on
//! CUDA) that writes at the device pointer and advances it, so the host never tracks the
//! pointer during training and cannot desynchronise it. The write never wraps inside one
//! enqueue: config validation checks that the shard holds a whole number of enqueues before
//! training starts, and the op re-checks on the device; a corrupted pointer makes it write
//! nothing and raise the error flag in the step's metrics, which stops the run at the step's
//! one host read ([`QueueShard::error`]). The pointer crosses to the host only for checkpoints,
//! the collapse monitor and a skipped step's rollback.
//!
//! The indices and the pointer are integer-valued fp32 (every buffer of the backend is):
//! exact below 2^24, which [`MAX_INDEX`] enforces for dataset indices and shard sizes.
//!
//! The keys are stored in the config's `queue_precision`. fp16 halves the shard: CUDA holds
//! them in 2 bytes (`Backend::half_from_host`) and its enqueue kernel rounds the incoming keys
//! (round to nearest even, in the staging conversion); the CPU, whose buffers are f32, holds
//! the same rounded values because its enqueue rounds them as it writes them (`half`).
//! The logits against the queue read the stored (rounded) values on both. Checkpoints hold the
//! keys as f32 values (exact for both precisions); loading them into an fp16 shard rounds them
//! (an fp32 checkpoint resumed with fp16), into an fp32 shard is exact.

use crate::error::{Result, WorkerError};
use moco_kernels::Backend;
use moco_proto::config::QueuePrecision;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Dataset index of a row that holds no image's key yet (initial random keys).
pub const NO_IMAGE: i64 = -1;

/// Dataset indices and queue rows must stay below this: fp32 holds every integer up to 2^24
/// exactly, and the device index buffers are fp32.
pub const MAX_INDEX: i64 = 1 << 24;

/// Bytes per queue row on the device: `dim` keys in the queue's precision, the fp32 dataset
/// index.
pub fn bytes_per_row(dim: usize, precision: QueuePrecision) -> u64 {
    dim as u64 * precision.bytes() + 4
}

pub struct QueueShard<B: Backend> {
    /// `[rows, dim]` unit keys, in `precision`.
    pub keys: B::Buf,
    /// `[rows]` dataset index per row (fp32-valued integers, [`NO_IMAGE`] for none).
    pub idx: B::Buf,
    /// `[1]` next row to write, on the device.
    pub ptr: B::Buf,
    pub rows: usize,
    pub dim: usize,
    /// The keys' storage precision (the config's `queue_precision`).
    pub precision: QueuePrecision,
}

/// The host values of a device index buffer.
pub fn indices_to_host<B: Backend>(be: &B, idx: &B::Buf) -> Result<Vec<i64>> {
    Ok(be.to_host(idx)?.into_iter().map(|v| v as i64).collect())
}

/// Dataset indices as the fp32 values the device buffers hold (an error beyond [`MAX_INDEX`]).
pub fn indices_to_f32(idx: &[i64]) -> Result<Vec<f32>> {
    idx.iter()
        .map(|&i| {
            if (NO_IMAGE..MAX_INDEX).contains(&i) {
                Ok(i as f32)
            } else {
                Err(WorkerError::Data(format!(
                    "dataset index {i} is outside [-1, 2^24): the queue keeps image indices on the device as fp32, \
                     exact up to 16,777,216 images; split the dataset into smaller ones"
                )))
            }
        })
        .collect()
}

impl<B: Backend> QueueShard<B> {
    /// The rank's shard of a global queue of `k` random-normal, L2-normalised keys generated
    /// from `seed` (identical global contents whatever the world size).
    pub fn init(
        be: &B,
        k: usize,
        dim: usize,
        rank: usize,
        world: usize,
        seed: u64,
        precision: QueuePrecision,
    ) -> Result<Self> {
        if world == 0 || !k.is_multiple_of(world) {
            return Err(WorkerError::Numeric(format!("queue of {k} rows does not split over {world} ranks")));
        }
        let rows = k / world;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5155_4555_4555_4555);
        let mut host = vec![0.0f32; rows * dim];
        // Draw the global queue row by row and keep this rank's rows: the values of a row do not
        // depend on the world size.
        for row in 0..k {
            let mut v: Vec<f32> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            if row / rows == rank {
                let r = row - rank * rows;
                host[r * dim..(r + 1) * dim].copy_from_slice(&v);
            }
        }
        Self::from_host(be, &host, &vec![NO_IMAGE; rows], 0, dim, precision)
    }

    /// A shard from host state (a checkpoint, a test): `keys` `[rows, dim]`, `idx` `[rows]`,
    /// stored in `precision` (fp16 rounds them to nearest even).
    pub fn from_host(
        be: &B,
        keys: &[f32],
        idx: &[i64],
        ptr: usize,
        dim: usize,
        precision: QueuePrecision,
    ) -> Result<Self> {
        let rows = idx.len();
        if keys.len() != rows * dim || ptr >= rows.max(1) || rows as i64 >= MAX_INDEX {
            return Err(WorkerError::Numeric(format!(
                "queue shard of {} keys, {rows} indices (dim {dim}), pointer {ptr}: inconsistent, or more than \
                 2^24 rows",
                keys.len()
            )));
        }
        Ok(QueueShard {
            keys: match precision {
                QueuePrecision::Fp32 => be.from_host(keys)?,
                QueuePrecision::Fp16 => be.half_from_host(keys)?,
            },
            idx: be.from_host(&indices_to_f32(idx)?)?,
            ptr: be.from_host(&[ptr as f32])?,
            rows,
            dim,
            precision,
        })
    }

    /// A zeroed buffer of `len` keys in the queue's precision (the skip guard's saved rows).
    pub fn keys_like(&self, be: &B, len: usize) -> Result<B::Buf> {
        keys_buffer(be, len, self.precision)
    }

    /// The keys are stored in fp16 (`Backend::queue_enqueue`'s `half`).
    pub fn half(&self) -> bool {
        self.precision == QueuePrecision::Fp16
    }

    /// The device pointer, read back (a host wait: checkpoints, the collapse monitor, errors).
    /// Its raw value: a corrupted pointer is shown as it is.
    pub fn ptr_value(&self, be: &B) -> Result<f32> {
        Ok(be.to_host(&self.ptr)?[0])
    }

    /// The device pointer as a row, or an error naming the value when it is not a row of the
    /// shard.
    pub fn ptr_host(&self, be: &B) -> Result<usize> {
        let p = self.ptr_value(be)?;
        if p >= 0.0 && p < self.rows as f32 && p == p.floor() {
            Ok(p as usize)
        } else {
            Err(WorkerError::Numeric(format!(
                "the queue shard's write pointer is {p}, not a row of its {} rows: the device state is corrupted",
                self.rows
            )))
        }
    }

    /// The dataset index of every row, read back (checkpoints, tests).
    pub fn idx_host(&self, be: &B) -> Result<Vec<i64>> {
        indices_to_host(be, &self.idx)
    }

    /// Write `keys` (`[b, dim]`) with their dataset indices `idx` (`[b]`, device) at the device
    /// pointer and advance it (mod rows), on the device. A refusal (corrupted pointer) sets
    /// `error` (one fp32 slot of the step's metrics) and writes nothing. The overwritten rows
    /// and the pointer found go to `saved` (the skip guard's buffers). An fp16 queue stores the
    /// keys rounded to fp16 on every backend.
    pub fn enqueue(
        &mut self,
        be: &B,
        keys: &B::Buf,
        idx: &B::Buf,
        error: B::ViewMut<'_>,
        saved: [B::ViewMut<'_>; 3],
    ) -> Result<()> {
        let b = B::buf_len(idx);
        if b == 0 || !self.rows.is_multiple_of(b) || B::buf_len(keys) != b * self.dim {
            return Err(WorkerError::Numeric(format!(
                "enqueue of {b} keys into a shard of {} rows: the shard size must be a multiple of the keys per enqueue",
                self.rows
            )));
        }
        let (rows, dim) = (self.rows, self.dim);
        be.queue_enqueue(
            rows,
            dim,
            self.half(),
            B::view(keys, 0..b * dim),
            B::view(idx, 0..b),
            B::view_mut(&mut self.keys, 0..rows * dim),
            B::view_mut(&mut self.idx, 0..rows),
            B::view_mut(&mut self.ptr, 0..1),
            error,
            saved,
        );
        Ok(())
    }

    /// The error for a non-zero queue flag read from the step's metrics: names the queue, the
    /// pointer's value and what to do.
    pub fn error(&self, be: &B, code: f32, rank: usize, step: u64) -> WorkerError {
        let ptr = match self.ptr_value(be) {
            Ok(p) => format!("{p}"),
            Err(e) => format!("unreadable ({e})"),
        };
        WorkerError::Numeric(format!(
            "the negative queue's enqueue was refused at step {step} on rank {rank}: {} (code {code}); the \
             write pointer of its {}-row shard is {ptr}. Nothing was written, so the queue holds no garbage, \
             but its state is corrupted and training stops. Resume from the newest checkpoint (its pointer is \
             checked when it loads); if this repeats, the device memory or a checkpoint's queue.ptr is \
             damaged: run `launcher doctor` and resume from an older checkpoint",
            moco_kernels::backend::describe_queue_error(code),
            self.rows,
        ))
    }
}

/// A zeroed buffer of `len` keys stored in `precision`.
pub fn keys_buffer<B: Backend>(be: &B, len: usize, precision: QueuePrecision) -> Result<B::Buf> {
    let zeros = vec![0.0f32; len];
    Ok(match precision {
        QueuePrecision::Fp32 => be.from_host(&zeros)?,
        QueuePrecision::Fp16 => be.half_from_host(&zeros)?,
    })
}

/// Environment variable of a fault-injection hook for tests: when set to a number, every rank
/// writes it into its queue shard's device pointer before training starts (after a resume), as
/// a corrupted device memory or checkpoint would leave it, so the run's refusal and its error
/// can be checked end to end (tests/tests/device_step.rs).
pub const FAULT_PTR_ENV: &str = "MOCO_FAULT_QUEUE_PTR";

impl<B: Backend> QueueShard<B> {
    /// The [`FAULT_PTR_ENV`] hook: overwrites the device pointer when the variable is set.
    pub fn inject_fault_from_env(&mut self, be: &B) -> Result<()> {
        let Ok(v) = std::env::var(FAULT_PTR_ENV) else { return Ok(()) };
        let p: f32 = v.trim().parse().map_err(|_| {
            WorkerError::Data(format!("{FAULT_PTR_ENV}={v:?} is not a number (a test hook; unset it)"))
        })?;
        tracing::warn!("{FAULT_PTR_ENV}: the queue pointer is set to {p} (fault injection)");
        Ok(be.write(&mut self.ptr, 0, &[p])?)
    }
}
