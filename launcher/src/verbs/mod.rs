//! One file per verb: `train` (the default), `plan`, `presets`, `preview`, `bench` (a folder).

pub mod bench;
pub mod plan;
pub mod presets;
pub mod preview;
pub mod train;
