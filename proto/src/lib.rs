//! moco-proto: the contracts between the parts of moco-rs.
//!
//! - `config`: `TrainConfig`, every knob of a run.
//! - `presets`: the named presets, each value with its reason.
//! - `aug_policies`: the named augmentation policies (`--aug`), sets of the `[aug]` keys.
//! - `validate` / `resolved`: checks that tell the user what to do, and the derived values.
//! - `wire`: versioned, length-prefixed messages between launcher and workers.
//! - `env`: the environment-variable contract (RANK, WORLD_SIZE, SLURM_*, ...).

pub mod aug_policies;
pub mod config;
pub mod env;
pub mod error;
pub mod presets;
pub mod resolved;
pub mod validate;
pub mod wire;

pub use config::TrainConfig;
pub use error::ProtoError;
