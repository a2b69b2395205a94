//! Launch helpers shared by the host-twin tests: arguments as (value, kind) so each launch
//! also checks the twin's parameter layout, and a small deterministic generator.
#![allow(dead_code)]

use moco_emu::kernels;
use std::ffi::c_void;

#[derive(Clone, Copy)]
pub enum Arg {
    I(i32),
    F(f32),
    P(*mut c_void),
}

pub fn p<T>(v: &mut [T]) -> Arg {
    Arg::P(v.as_mut_ptr().cast())
}

/// Runs `name` over the grid; panics if the arguments do not match the twin's parameters.
pub fn launch(name: &str, grid: [u32; 3], block: [u32; 3], args: &[Arg]) -> Result<(), String> {
    let twin = kernels::find(name).unwrap_or_else(|| panic!("no twin named {name}"));
    let params = kernels::params(twin);
    assert_eq!(params.len(), args.len(), "{name}: argument count");
    for (i, (prm, a)) in params.iter().zip(args).enumerate() {
        let (size, is_pointer) = match a {
            Arg::I(_) | Arg::F(_) => (4, false),
            Arg::P(_) => (8, true),
        };
        assert_eq!((prm.size, prm.is_pointer), (size, is_pointer), "{name}: parameter {i}");
    }
    // 8-byte slots: a 4-byte value sits in the low bytes (little-endian), where the kernel's
    // read of its own size finds it.
    let mut store: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::I(v) => u64::from(v as u32),
            Arg::F(v) => u64::from(v.to_bits()),
            Arg::P(ptr) => ptr as u64,
        })
        .collect();
    let ptrs: Vec<*mut c_void> = store.iter_mut().map(|v| (v as *mut u64).cast()).collect();
    // SAFETY: one pointer per parameter to a value of its size (checked above); the pointer
    // arguments point at host buffers the tests size for each kernel.
    unsafe { kernels::run(twin, grid, block, 0, &ptrs) }
}

/// The 1-D elementwise grid policy of kernels/src/cuda/launch.rs (`Grid::elems`), with a
/// small cap so grid-stride loops take several turns.
pub fn elems(n: usize, max_blocks: usize) -> [u32; 3] {
    [n.div_ceil(256).clamp(1, max_blocks) as u32, 1, 1]
}

pub const BLOCK: [u32; 3] = [256, 1, 1];

/// xorshift64*: reproducible inputs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}
