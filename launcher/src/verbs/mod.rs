//! One file per verb: `train` (the default), `plan`, `presets`.

pub mod plan;
pub mod presets;
pub mod train;
