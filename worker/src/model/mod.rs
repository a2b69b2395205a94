//! ResNet-50 and the MoCo heads, written once against the `Backend` op set.
//!
//! - `topology`: shapes and the flat parameter layout, as data.
//! - `params`: torchvision initialisation, layout conversions.
//! - `bn`: batch norm modes (local, sync, groups) and running statistics.
//! - `backbone`, `heads`, `encoder`: forward and backward, with per-block recompute.

pub mod backbone;
pub mod bn;
pub mod encoder;
pub mod heads;
pub mod params;
pub mod topology;
pub mod views;

pub use backbone::{Ctx, GradsReady, Keep};
pub use encoder::{encoder_backward, encoder_backward_hooked, encoder_forward, EncoderTape};
pub use topology::{ModelDims, Topology};
