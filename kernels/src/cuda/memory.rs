//! Device memory of the CUDA backend: the arena ([`arena::ArenaBook`]) over cudarc
//! allocations, and [`Block`], a typed allocation that returns itself to the arena when
//! dropped. Compiled, not yet run on a GPU.
//!
//! Blocks are kept in the free lists as untyped bytes (`CudaSlice<u8>`) and retyped when
//! handed out (`leak` + `upgrade_device_ptr`), so one free list serves fp16, fp32, f64 and i32
//! buffers alike. This relies on the backend's context having event tracking disabled (see
//! `CudaBackend::new`): a retyped slice then carries no per-slice events to keep consistent.

use crate::cuda::arena::{AllocFailure, ArenaBook, MemoryStats};
use crate::error::{KernelError, Result};
use cudarc::driver::{sys::cudaError_enum, CudaSlice, CudaStream, DeviceRepr, DriverError};
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard};

/// The arena of one backend: its stream (every allocation and free is ordered on it) and the
/// book of free lists and counters.
#[derive(Debug)]
pub struct Pool {
    stream: Arc<CudaStream>,
    book: Mutex<ArenaBook<CudaSlice<u8>>>,
}

fn alloc_failure(e: DriverError) -> AllocFailure {
    if e.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        AllocFailure::OutOfMemory(format!("{e:?}"))
    } else {
        AllocFailure::Other(KernelError::Cuda { op: "cuMemAlloc", detail: format!("{e:?}") })
    }
}

impl Pool {
    pub fn new(stream: Arc<CudaStream>, limit: Option<u64>) -> Arc<Self> {
        Arc::new(Pool { stream, book: Mutex::new(ArenaBook::new(limit)) })
    }

    fn book(&self) -> MutexGuard<'_, ArenaBook<CudaSlice<u8>>> {
        // A panic while the lock was held cannot leave the book half-updated in a way that
        // matters more than losing the process, so a poisoned lock is simply taken over.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn stats(&self) -> MemoryStats {
        self.book().stats()
    }

    pub fn reset_peaks(&self) {
        self.book().reset_peaks();
    }

    /// Frees every cached block back to the driver; returns the bytes freed.
    pub fn release_cache(&self) -> u64 {
        self.book().release_cache()
    }

    /// An UNINITIALISED block of `len` elements of `T` for `what` (named in errors).
    pub fn alloc<T: DeviceRepr>(self: &Arc<Self>, what: &str, len: usize) -> Result<Block<T>> {
        let requested = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            KernelError::OutOfMemory(format!("{what} asked for {len} elements, more than the address space"))
        })?;
        let stream = &self.stream;
        let (bytes, class) = self.book().take(what, requested, |class| {
            // SAFETY: the memory is uninitialised; every caller either zeroes it or overwrites
            // the first `len` elements before reading them (see `Block` users).
            unsafe { stream.alloc::<u8>(class) }.map_err(alloc_failure)
        })?;
        let ptr = bytes.leak();
        // SAFETY: `ptr` is a live allocation of `class >= requested` bytes made on this
        // stream, and its previous owner was leaked above, so the new slice is its only owner.
        // Any bit pattern is a valid f16/f32/f64/i32/u8, the only types blocks are used for.
        let slice = unsafe { self.stream.upgrade_device_ptr::<T>(ptr, len) };
        Ok(Block { slice: ManuallyDrop::new(slice), class, requested, pool: self.clone() })
    }

    /// A zeroed block.
    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        self: &Arc<Self>,
        what: &str,
        len: usize,
    ) -> Result<Block<T>> {
        let mut b = self.alloc::<T>(what, len)?;
        self.stream
            .memset_zeros(b.slice_mut())
            .map_err(|e| KernelError::Cuda { op: "memset", detail: format!("{e:?}") })?;
        Ok(b)
    }

    fn give_back<T>(&self, slice: CudaSlice<T>, class: usize, requested: usize) {
        let ptr = slice.leak();
        // SAFETY: `ptr` is the arena allocation of `class` bytes this block came from; its
        // typed owner was leaked above, so the byte slice is the only owner again. Work queued
        // on the stream that still uses the memory runs before any later use of the block,
        // because every use is ordered on this same stream.
        let bytes = unsafe { self.stream.upgrade_device_ptr::<u8>(ptr, class) };
        self.book().give_back(bytes, class, requested);
    }
}

/// A typed device allocation from the arena; returned to it when dropped.
#[derive(Debug)]
pub struct Block<T> {
    /// Taken out exactly once, in `drop`, to go back to the arena.
    slice: ManuallyDrop<CudaSlice<T>>,
    class: usize,
    requested: usize,
    pool: Arc<Pool>,
}

impl<T> Block<T> {
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice.is_empty()
    }

    pub fn slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    pub fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

impl<T> Drop for Block<T> {
    fn drop(&mut self) {
        // SAFETY: `slice` is taken here once and never used again (the block is being dropped).
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        self.pool.give_back(slice, self.class, self.requested);
    }
}
