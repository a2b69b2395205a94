//! Helpers shared by the cuBLAS and cuDNN stand-in tests: device buffers, a stream, and
//! deterministic pseudo-random data.
#![allow(dead_code)]

use half::f16;
use moco_emu::{memory, stream};

/// A device allocation holding elements of one type, freed on drop.
pub struct DevBuf {
    pub ptr: usize,
    pub bytes: usize,
}

impl DevBuf {
    pub fn new(bytes: usize) -> DevBuf {
        DevBuf { ptr: memory::alloc_device(bytes).expect("device allocation"), bytes }
    }

    pub fn from_f32(v: &[f32]) -> DevBuf {
        let b = DevBuf::new(v.len() * 4);
        b.write_f32(v);
        b
    }

    pub fn from_f16(v: &[f32]) -> DevBuf {
        let b = DevBuf::new(v.len() * 2);
        b.write_f16(v);
        b
    }

    /// Writes straight into device memory (it is host memory; the test is the only user).
    pub fn write_f32(&self, v: &[f32]) {
        assert!(v.len() * 4 <= self.bytes);
        // SAFETY: the allocation holds at least v.len() f32 and nothing runs on it now.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr as *mut f32, v.len()) };
    }

    pub fn write_f16(&self, v: &[f32]) {
        assert!(v.len() * 2 <= self.bytes);
        let h: Vec<u16> = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        // SAFETY: as in write_f32.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), self.ptr as *mut u16, h.len()) };
    }

    pub fn read_f32(&self) -> Vec<f32> {
        let mut v = vec![0.0f32; self.bytes / 4];
        // SAFETY: the allocation holds bytes/4 f32; the stream has been run by the caller.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr as *const f32, v.as_mut_ptr(), v.len()) };
        v
    }

    pub fn read_f16(&self) -> Vec<f32> {
        let mut v = vec![0u16; self.bytes / 2];
        // SAFETY: as in read_f32.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr as *const u16, v.as_mut_ptr(), v.len()) };
        v.into_iter().map(|b| f16::from_bits(b).to_f32()).collect()
    }

    pub fn void(&self) -> *mut std::ffi::c_void {
        self.ptr as *mut std::ffi::c_void
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        memory::free(self.ptr, memory::Kind::Device).expect("free");
    }
}

/// Values in [-1, 1) from a fixed seed (xorshift), so failures reproduce.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The value an f32 takes once stored as fp16.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// A new stream, as the CUstream value cuBLAS/cuDNN take.
pub fn new_stream() -> (u64, usize) {
    let id = stream::create_stream();
    (id, id as usize)
}

pub fn run(stream_id: u64) {
    stream::run_all(stream_id).expect("stream ran");
}

/// Unit roundoff of f32 and f16 (half an ulp of 1).
pub const U32: f64 = f32::EPSILON as f64 / 2.0;
pub const U16: f64 = 1.0 / 2048.0;
