//! ResNet-50 and the MoCo heads, written once against the `Backend` op set.

pub mod topology;
