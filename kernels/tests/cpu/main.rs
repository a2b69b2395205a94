//! Tests of the CPU reference ops (`moco_kernels::cpu`): finite-difference gradient checks of
//! every op with a backward, direct checks against textbook loops and hand-computed values,
//! and the accumulate/overwrite contract of the `Backend` trait.

mod backend;
mod batchnorm;
mod conv;
mod determinism;
mod elementwise;
mod l2norm;
mod linear;
mod optim;
mod pool;
mod softmax;
mod util;
