//! NCCL collectives over the CUDA backend's device buffers: the production path between GPUs
//! (DESIGN.md contract 8). Compiled, NOT YET RUN: no NCCL communicator has been created yet.
//!
//! Bootstrap: rank 0 calls [`NcclId::new`] and ships [`NcclId::to_bytes`] (128 bytes) to the
//! other ranks over the rendezvous; they rebuild it with [`NcclId::from_bytes`]; then every
//! rank calls [`NcclComm::new`] with its backend, which blocks until all ranks have joined.
//! Collectives run on the backend's stream, so they are ordered with the ops around them;
//! results are ready for the next op without a host synchronisation.
//!
//! Errors carry NCCL's own text (`ncclGetErrorString`, plus `ncclGetLastError` for the
//! communicator), because cudarc's `NcclError` prints only "NcclError". cudarc panics when
//! libnccl cannot be loaded, so every entry point checks for it first; note that cudarc looks
//! for `libnccl.so` (not `libnccl.so.2`): the launcher and worker make that link themselves
//! (`cuda::libs`).
//!
//! Reported, unverified: NCCL >= 2.5 refuses two ranks of one communicator on the same GPU
//! ("Duplicate GPU detected"); world size 1 always works.

use super::nccl_comm::Comm;
use crate::cuda::buffer::{DevView, DevViewMut};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use cudarc::driver::{CudaView, CudaViewMut};
use cudarc::nccl::{result::NcclError, sys, Id, NcclType, ReduceOp};
use std::ffi::CStr;

/// Length of an NCCL unique id on the wire.
pub const ID_BYTES: usize = 128;

/// `true` when a `libnccl.so` cudarc can open is on the library path.
pub fn nccl_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the candidate names and drops the handles.
    unsafe { sys::is_culib_present() }
}

pub(crate) fn require_nccl() -> Result<()> {
    if nccl_present() {
        Ok(())
    } else {
        Err(KernelError::Cuda {
            op: "nccl",
            detail: "libnccl could not be loaded: the launcher and workers find it themselves in \
                     .cuda-libs, the active Python's nvidia-nccl wheel, CUDA_HOME, /usr/local/cuda \
                     and ld.so's paths (`launcher doctor` says where they looked); install it with \
                     scripts/setup_gpu.sh, or use the ring collective (--nccl off)"
                .to_string(),
        })
    }
}

/// NCCL's description of a result code.
fn describe(code: sys::ncclResult_t) -> String {
    // SAFETY: ncclGetErrorString takes any result code and returns a pointer to a static,
    // NUL-terminated string (or null, handled below). NCCL is loaded (checked by callers).
    let text = unsafe { sys::ncclGetErrorString(code) };
    if text.is_null() {
        format!("{code:?}")
    } else {
        // SAFETY: non-null, NUL-terminated, static (see above).
        let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        format!("{code:?}: {s}")
    }
}

pub(crate) fn nccl_err(op: &'static str, e: NcclError) -> KernelError {
    let detail = describe(e.0);
    tracing::error!(op, %detail, "NCCL call failed");
    KernelError::Cuda { op, detail }
}

/// The unique id of one NCCL communicator.
#[derive(Debug, Clone, Copy)]
pub struct NcclId(Id);

impl NcclId {
    /// A fresh id (rank 0 only).
    pub fn new() -> Result<Self> {
        require_nccl()?;
        Id::new().map(NcclId).map_err(|e| nccl_err("ncclGetUniqueId", e))
    }

    /// The id as received from rank 0 (exactly [`ID_BYTES`] bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != ID_BYTES {
            return Err(KernelError::Shape {
                op: "nccl id",
                detail: format!("an NCCL id has {ID_BYTES} bytes, got {}", bytes.len()),
            });
        }
        let mut internal = [0 as std::ffi::c_char; ID_BYTES];
        for (d, &b) in internal.iter_mut().zip(bytes) {
            *d = b as std::ffi::c_char;
        }
        Ok(NcclId(Id::uninit(internal)))
    }

    /// The cudarc id, for a communicator made outside [`NcclComm`] (the doctor's check).
    pub fn into_inner(self) -> Id {
        self.0
    }

    /// The id's bytes, to send to the other ranks.
    pub fn to_bytes(&self) -> [u8; ID_BYTES] {
        let mut out = [0u8; ID_BYTES];
        for (d, &b) in out.iter_mut().zip(self.0.internal()) {
            *d = b as u8;
        }
        out
    }
}

/// One rank's NCCL communicator, on its backend's stream.
#[derive(Debug)]
pub struct NcclComm {
    comm: Comm,
    rank: usize,
    world: usize,
}

// SAFETY: an NCCL communicator is not bound to the thread that created it; NCCL only
// requires that calls on one communicator are not made concurrently. `Send` moves it to
// another thread (one owner at a time); it is deliberately not `Sync`, so sharing it between
// threads needs a `Mutex`, which serialises the calls as NCCL requires.
unsafe impl Send for NcclComm {}

fn same_dtype(op: &'static str) -> KernelError {
    KernelError::Shape { op, detail: "send and receive buffers must have the same element type".into() }
}

impl NcclComm {
    /// Joins the communicator `id` as `rank` of `world`, on `backend`'s device and stream.
    /// Blocks until every rank has joined.
    pub fn new(backend: &CudaBackend, rank: usize, world: usize, id: &NcclId) -> Result<Self> {
        require_nccl()?;
        if world == 0 || rank >= world || world > i32::MAX as usize {
            return Err(KernelError::Shape {
                op: "ncclCommInitRank",
                detail: format!("rank {rank} of world {world}"),
            });
        }
        // ncclCommInitRank works on the calling thread's current device.
        backend
            .context()
            .bind_to_thread()
            .map_err(|e| KernelError::Cuda { op: "cuCtxSetCurrent", detail: format!("{e:?}") })?;
        let comm = Comm::from_rank(backend.stream().clone(), rank, world, id.0)
            .map_err(|e| nccl_err("ncclCommInitRank", e))?;
        tracing::info!(rank, world, device = backend.ordinal(), "NCCL communicator ready");
        Ok(NcclComm { comm, rank, world })
    }

    /// As [`NcclComm::new`], but the collectives run on `stream` (a second stream of the
    /// backend's context, e.g. for gradient buckets that overlap the backward); ordering it
    /// with the backend's stream is the caller's (events).
    pub fn new_on_stream(
        backend: &CudaBackend,
        stream: std::sync::Arc<cudarc::driver::CudaStream>,
        rank: usize,
        world: usize,
        id: &NcclId,
    ) -> Result<Self> {
        require_nccl()?;
        if world == 0 || rank >= world || world > i32::MAX as usize {
            return Err(KernelError::Shape {
                op: "ncclCommInitRank",
                detail: format!("rank {rank} of world {world}"),
            });
        }
        backend
            .context()
            .bind_to_thread()
            .map_err(|e| KernelError::Cuda { op: "cuCtxSetCurrent", detail: format!("{e:?}") })?;
        let comm = Comm::from_rank(stream, rank, world, id.0).map_err(|e| nccl_err("ncclCommInitRank", e))?;
        Ok(NcclComm { comm, rank, world })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Arms the watchdog (see `nccl_comm`): NCCL work that makes no progress for `timeout`,
    /// or an asynchronous NCCL error, aborts the communicator and fails the call.
    pub fn arm_watchdog(&mut self, timeout: std::time::Duration) -> Result<()> {
        self.comm
            .arm_watchdog(timeout)
            .map_err(|e| KernelError::Cuda { op: "NCCL watchdog", detail: e.to_string() })
    }

    /// Why the watchdog aborted the communicator, if it did.
    pub fn watchdog_cause(&self) -> Option<String> {
        self.comm.watchdog_cause()
    }

    /// An error with NCCL's description of the code and its last error message, or the
    /// watchdog's reason when it aborted the communicator.
    fn err(&self, op: &'static str, e: NcclError) -> KernelError {
        if let Some(detail) = self.comm.watchdog_cause() {
            return KernelError::Cuda { op, detail };
        }
        let mut err = nccl_err(op, e);
        if let KernelError::Cuda { detail, .. } = &mut err {
            // SAFETY: ncclGetLastError accepts null (cudarc keeps the communicator handle
            // private), meaning the last error of any communicator of this process, and
            // returns a NUL-terminated string owned by NCCL, valid until the next NCCL call.
            let last = unsafe { sys::ncclGetLastError(std::ptr::null_mut()) };
            if !last.is_null() {
                // SAFETY: non-null NUL-terminated string (see above), copied at once.
                let s = unsafe { CStr::from_ptr(last) }.to_string_lossy();
                if !s.is_empty() {
                    detail.push_str(&format!(" (last NCCL message: {s})"));
                }
            }
        }
        err
    }

    /// In-place sum over ranks (fp32, or fp16 summed by NCCL in fp16).
    pub fn all_reduce_sum(&self, buf: &mut DevViewMut<'_>) -> Result<()> {
        match buf {
            DevViewMut::F32(v) => self.all_reduce_typed(v, &ReduceOp::Sum),
            DevViewMut::F16(v) => self.all_reduce_typed(v, &ReduceOp::Sum),
        }
    }

    /// In-place reduction of a typed view (e.g. an i32 flag with `ReduceOp::Max`).
    pub fn all_reduce_typed<T: NcclType>(&self, buf: &mut CudaViewMut<'_, T>, op: &ReduceOp) -> Result<()> {
        self.comm.all_reduce_in_place(buf, op).map(|_| ()).map_err(|e| self.err("ncclAllReduce", e))
    }

    /// `recv` (world x send.len()) = every rank's `send`, in rank order.
    pub fn all_gather(&self, send: &DevView<'_>, recv: &mut DevViewMut<'_>) -> Result<()> {
        const OP: &str = "ncclAllGather";
        if send.len().checked_mul(self.world) != Some(recv.len()) {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!(
                    "recv has {} elements, world {} x send {}",
                    recv.len(),
                    self.world,
                    send.len()
                ),
            });
        }
        let r = match (send, recv) {
            (DevView::F32(s), DevViewMut::F32(r)) => self.comm.all_gather(s, r),
            (DevView::F16(s), DevViewMut::F16(r)) => self.comm.all_gather(s, r),
            _ => return Err(same_dtype(OP)),
        };
        r.map(|_| ()).map_err(|e| self.err(OP, e))
    }

    /// `recv` = the sum over ranks of their `send[rank * len .. (rank + 1) * len]`, where
    /// `len = recv.len()`.
    pub fn reduce_scatter_sum(&self, send: &DevView<'_>, recv: &mut DevViewMut<'_>) -> Result<()> {
        const OP: &str = "ncclReduceScatter";
        if recv.len().checked_mul(self.world) != Some(send.len()) {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!(
                    "send has {} elements, world {} x recv {}",
                    send.len(),
                    self.world,
                    recv.len()
                ),
            });
        }
        let r = match (send, recv) {
            (DevView::F32(s), DevViewMut::F32(r)) => self.comm.reduce_scatter(s, r, &ReduceOp::Sum),
            (DevView::F16(s), DevViewMut::F16(r)) => self.comm.reduce_scatter(s, r, &ReduceOp::Sum),
            _ => return Err(same_dtype(OP)),
        };
        r.map(|_| ()).map_err(|e| self.err(OP, e))
    }

    /// Every rank's `buf` becomes rank `root`'s.
    pub fn broadcast(&self, buf: &mut DevViewMut<'_>, root: usize) -> Result<()> {
        const OP: &str = "ncclBroadcast";
        if root >= self.world {
            return Err(KernelError::Shape {
                op: OP,
                detail: format!("root {root} of world {}", self.world),
            });
        }
        let root = root as i32;
        let r = match buf {
            DevViewMut::F32(v) => self.comm.broadcast_in_place(v, root),
            DevViewMut::F16(v) => self.comm.broadcast_in_place(v, root),
        };
        r.map(|_| ()).map_err(|e| self.err(OP, e))
    }

    /// A typed broadcast (index or flag buffers).
    pub fn broadcast_typed<T: NcclType>(&self, buf: &mut CudaViewMut<'_, T>, root: usize) -> Result<()> {
        if root >= self.world {
            return Err(KernelError::Shape {
                op: "ncclBroadcast",
                detail: format!("root {root} of world {}", self.world),
            });
        }
        self.comm.broadcast_in_place(buf, root as i32).map(|_| ()).map_err(|e| self.err("ncclBroadcast", e))
    }

    /// A typed all-gather (dataset indices as i64, for example).
    pub fn all_gather_typed<T: NcclType>(
        &self,
        send: &CudaView<'_, T>,
        recv: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        if send.len().checked_mul(self.world) != Some(recv.len()) {
            return Err(KernelError::Shape {
                op: "ncclAllGather",
                detail: format!(
                    "recv has {} elements, world {} x send {}",
                    recv.len(),
                    self.world,
                    send.len()
                ),
            });
        }
        self.comm.all_gather(send, recv).map(|_| ()).map_err(|e| self.err("ncclAllGather", e))
    }
}

/// Host-slice collectives staged through device buffers of the backend's arena: what a
/// host-buffer `Collective` implementation needs (one upload, the NCCL call, one download,
/// ordered on the backend's stream). NCCL reduces in its own (ring or tree) order: every rank
/// gets the same bits, but not necessarily the rank-order sum `((x0 + x1) + x2) + ...`.
impl NcclComm {
    pub fn all_reduce_sum_f32_host(&self, be: &CudaBackend, buf: &mut [f32]) -> Result<()> {
        let mut dev = be.block_from_host("NCCL staging", buf)?;
        self.all_reduce_typed(&mut dev.slice_mut().as_view_mut(), &ReduceOp::Sum)?;
        buf.copy_from_slice(&be.block_to_host(&dev, buf.len())?);
        Ok(())
    }

    pub fn all_gather_bytes_host(&self, be: &CudaBackend, send: &[u8], recv: &mut [u8]) -> Result<()> {
        let dev_send = be.block_from_host("NCCL staging", send)?;
        let mut dev_recv = be.pool_alloc::<u8>("NCCL staging", recv.len())?;
        self.all_gather_typed(&dev_send.slice().as_view(), &mut dev_recv.slice_mut().as_view_mut())?;
        recv.copy_from_slice(&be.block_to_host(&dev_recv, recv.len())?);
        Ok(())
    }

    pub fn reduce_scatter_sum_f32_host(
        &self,
        be: &CudaBackend,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<()> {
        let dev_send = be.block_from_host("NCCL staging", send)?;
        let mut dev_recv = be.pool_alloc::<f32>("NCCL staging", recv.len())?;
        let mut out = DevViewMut::F32(dev_recv.slice_mut().as_view_mut());
        self.reduce_scatter_sum(&DevView::F32(dev_send.slice().as_view()), &mut out)?;
        recv.copy_from_slice(&be.block_to_host(&dev_recv, recv.len())?);
        Ok(())
    }

    pub fn broadcast_bytes_host(&self, be: &CudaBackend, buf: &mut [u8], root: usize) -> Result<()> {
        let mut dev = be.block_from_host("NCCL staging", buf)?;
        self.broadcast_typed(&mut dev.slice_mut().as_view_mut(), root)?;
        buf.copy_from_slice(&be.block_to_host(&dev, buf.len())?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_bytes_and_refuse_wrong_lengths() {
        let bytes: Vec<u8> = (0..ID_BYTES as u32).map(|i| (i * 37 % 256) as u8).collect();
        let id = NcclId::from_bytes(&bytes).unwrap();
        assert_eq!(id.to_bytes().to_vec(), bytes);
        let err = NcclId::from_bytes(&bytes[..127]).unwrap_err().to_string();
        assert!(err.contains("128") && err.contains("127"), "{err}");
    }

    #[test]
    fn a_missing_libnccl_is_an_error_that_says_what_to_do() {
        match NcclId::new() {
            Err(KernelError::Cuda { detail, .. }) if !nccl_present() => {
                assert!(detail.contains("libnccl") && detail.contains("setup_gpu.sh"), "{detail}")
            }
            // With NCCL installed, an id needs no GPU (ncclGetUniqueId only picks a socket).
            other => assert!(nccl_present(), "NCCL absent but got {other:?}"),
        }
    }
}
