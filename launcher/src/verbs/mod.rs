//! One file per verb: `train` (the default), `plan`, `presets`, `preview`, `bench` (a folder),
//! `export`, `eval`, `embed` and `doctor` (these two share `evaluation`).

pub mod bench;
pub mod doctor;
pub mod embed;
pub mod eval;
pub mod evaluation;
pub mod export;
pub mod plan;
pub mod presets;
pub mod preview;
pub mod train;
