//! The self-test's cases, one file per op family. Each file has small generic functions that
//! run ops on ONE backend from host inputs and return host outputs, and a `run` that calls them
//! on both backends with the same seeded inputs and compares the outputs, with the tolerance
//! of each comparison written beside it.

pub(super) mod conv;
pub(super) mod linear;
pub(super) mod memory;
pub(super) mod norm;
pub(super) mod optim;
pub(super) mod pointwise;
pub(super) mod pool;
pub(super) mod softmax;
