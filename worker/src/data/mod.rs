//! Data: where tiles come from, how two augmented views are made, and in which order.
//!
//! - `tile`: a decoded tile (`Tile`, u8 or u16, any number of bands, HWC).
//! - `dataset`: the `Dataset` trait every source implements, and `BandStats`.
//! - `spec`: parsing `--data` (`synthetic[:N[:SIZE]]` or a path).
//! - `synthetic`: procedural aerial tiles with scene-class labels.
//! - `memory`: tiles already decoded in memory.
//! - `augment`: the two-view augmentation pipeline (MOCO.md, "Augmentations").
//! - `batch`: `TwoViewBatch`, assembled in parallel on a rayon pool.
//! - `sampler`: epoch-seeded permutation, rank shards, resumable positions.
//! - `preview`: PNG grids of tiles and their views.
//! - `rng`: the keyed random streams every part above draws from.

//TMP pub mod augment;
//TMP pub mod batch;
pub mod dataset;
pub mod memory;
//TMP pub mod preview;
pub mod rng;
//TMP pub mod sampler;
pub mod spec;
pub mod synthetic;
pub mod tile;

//TMP pub use augment::Augmenter;
//TMP pub use batch::TwoViewBatch;
pub use dataset::{BandStats, Dataset};
pub use memory::MemoryDataset;
//TMP pub use sampler::{Sampler, SamplerPos};
pub use spec::{DataSpec, SyntheticSpec};
pub use synthetic::SyntheticDataset;
pub use tile::{PixelDepth, Pixels, Tile};
