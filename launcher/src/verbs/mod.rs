//! One file per verb: `train` (the default), `plan`, `presets`, `preview`.

pub mod plan;
pub mod presets;
pub mod preview;
pub mod train;
