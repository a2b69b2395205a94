//! The hybrid MoCo step: loss with the sharded queue, EMA, optimisers, loss scaling, schedules.

pub mod bucket_cursor;
pub mod comm;
pub mod device_buckets;
pub mod device_comm;
pub mod grad_sync;
pub mod guard;
pub mod loss;
pub mod optim;
pub mod queue;
pub mod scaler;
pub mod schedule;
pub mod state;
pub mod step_end;
pub mod step_keys;

pub use state::{MicroOut, Moco, StepOut, Views};
