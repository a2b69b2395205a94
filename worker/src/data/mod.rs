//! Data: where tiles come from, how two augmented views are made, and in which order.
//!
//! - `tile`: a decoded tile (`Tile`, u8 or u16, any number of bands, HWC).
//! - `dataset`: the `Dataset` trait every source implements, and `BandStats`.
//! - `spec`: parsing `--data` (`synthetic[:N[:SIZE]]` or a path).
//! - `synthetic`: procedural aerial tiles with scene-class labels.
//! - `memory`: tiles already decoded in memory.
//! - `folder`: image folders (PNG/JPEG/TIFF) and their memory-mapped tile cache.
//! - `augment`: the two-view augmentation pipeline (MOCO.md, "Augmentations").
//! - `batch`: `TwoViewBatch`, assembled in parallel on a rayon pool.
//! - `sampler`: epoch-seeded permutation, rank shards, resumable positions.
//! - `preview`: PNG grids of tiles and their views.
//! - `rng`: the keyed random streams every part above draws from.
//!
//! Adding a source (image folders, the memory-mapped cache): implement `Dataset`. `tile(i)`
//! returns a `Tile` that borrows the source's memory where it can (`Tile::from_u8/from_u16`
//! over a slice of the map; u16 tiles need 2-byte-aligned offsets) or owns a freshly decoded
//! buffer; every tile has `bands()` bands, any height and width (the crop resamples). Errors
//! name the index and the file. `stats()` returns per-band mean/std in 0..1 of the pixel type:
//! compute them once with `BandStats::compute` and store them beside the cache. `DataSpec`
//! parses `--data`; a `Path` is the folder/cache side's to open.
//!
//! The loader's step is: `Sampler::iter_from(pos)` gives this rank's indices of the next batch
//! (and the position to checkpoint), `TwoViewBatch::fill` makes both views on a rayon pool.

pub mod augment;
pub mod batch;
pub mod dataset;
pub mod folder;
pub mod memory;
pub mod preview;
pub mod rng;
pub mod sampler;
pub mod spec;
pub mod synthetic;
pub mod tile;

pub use augment::Augmenter;
pub use batch::TwoViewBatch;
pub use dataset::{BandStats, Dataset};
pub use memory::MemoryDataset;
pub use sampler::{Sampler, SamplerPos};
pub use spec::{DataSpec, SyntheticSpec};
pub use synthetic::SyntheticDataset;
pub use tile::{PixelDepth, Pixels, Tile};
