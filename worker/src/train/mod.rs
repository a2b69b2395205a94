//! One rank's training: the loop, schedules, metrics.

pub mod loader;
pub mod metrics;
pub mod run;

pub use loader::Loader;
pub use metrics::{MetricsLog, StepMetrics};
pub use run::{train, MicroBatches, OwnedViews, Schedule, Summary};
